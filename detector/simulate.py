"""Synthetic exchange withdrawal traffic with labelled, injected attacks.

The simulator builds a population of accounts with personal habits, plays their normal
withdrawals over a period, then injects attacks after a warm-up so the detector has history
to compare against. Every event follows the ``withdrawals`` topic contract and carries its
ground truth in ``metadata.label`` (``"normal"`` or a scenario name) and, for attacks,
``metadata.attack_id``.

Normal traffic is deliberately messy so that naive rules have false positives:

* typical amounts are heavy-tailed across accounts (retail ~$50 … whales ~$200k) and noisy
  within an account; ~1% of withdrawals are legit 5-20x the habit (amount thresholds fire);
* ~5% of withdrawals go to a brand-new address (a "new destination" rule fires);
* market-maker accounts withdraw dozens of times a day and users sometimes split a
  withdrawal into a few within minutes (velocity rules fire);
* ~20 shared deposit addresses (merchants, other exchanges) are paid by many accounts at a
  natural pace (a plain fan-in count fires);
* some dormant accounts come back legitimately with their usual amounts and addresses, and
  some accounts sign up mid-period (no history at all).

Attack scenarios, one function each: :func:`account_takeover`, :func:`scripted_burst`,
:func:`dormant_wakeup`, :func:`fan_in` and :func:`structuring`.

Dormant accounts need >= 30 days of silence before they wake, longer than the default
period, so their early history is placed *before* ``SimConfig.start``: the first events of
the output can precede ``start`` by up to ~105 days (only dormant accounts' history).

Everything is drawn from :class:`numpy.random.Generator` streams spawned from
``SimConfig.seed``: the output is identical for identical configurations. Addresses look
like real ones (prefix, alphabet, length) but carry no valid checksum.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from detector.errors import ConfigError, KafkaSetupError

__all__ = [
    "ASSETS",
    "DEFAULT_START",
    "NORMAL_LABEL",
    "PROGRESS_EVERY",
    "SCENARIOS",
    "STRUCTURING_LIMIT_USD",
    "Asset",
    "SimConfig",
    "account_takeover",
    "dormant_wakeup",
    "encode_event",
    "fan_in",
    "generate",
    "scripted_burst",
    "stream_to_kafka",
    "structuring",
    "write_jsonl",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# ---------------------------------------------------------------------------------------
# Public constants
# ---------------------------------------------------------------------------------------

# Default first instant of the simulated period (UTC); fixed so outputs are reproducible.
DEFAULT_START = datetime(2026, 10, 1, tzinfo=UTC)
# Label of every withdrawal that is not part of an injected attack.
NORMAL_LABEL = "normal"
# Labels of the attack scenarios, in injection order; also the values of metadata.label.
SCENARIOS: tuple[str, ...] = (
    "account_takeover",
    "scripted_burst",
    "dormant_wakeup",
    "fan_in",
    "structuring",
)
# Per-withdrawal reporting/approval limit the structuring insider stays under (USD).
STRUCTURING_LIMIT_USD = 10_000.0


class Asset(NamedTuple):
    """A withdrawable asset: its reference price, display precision and chain."""

    symbol: str
    price_usd: float  # reference price at SimConfig.start (USD per unit)
    decimals: int  # digits after the point in `amount` (asset units)
    chain: str  # address format family of its destinations
    popularity: float  # relative share of accounts holding it as their main asset
    daily_vol: float  # std-dev of daily log price returns (0 for stablecoins: price 1.0)


# Assets with plausible late-2026 prices; popularity sums to 1.
ASSETS: tuple[Asset, ...] = (
    Asset("BTC", 95_000.0, 8, "btc", 0.18, 0.025),
    Asset("ETH", 3_500.0, 6, "eth", 0.15, 0.035),
    Asset("USDT", 1.0, 2, "tron", 0.28, 0.0),
    Asset("USDC", 1.0, 2, "eth", 0.10, 0.0),
    Asset("SOL", 180.0, 4, "sol", 0.08, 0.05),
    Asset("XRP", 2.2, 2, "xrp", 0.07, 0.045),
    Asset("TRX", 0.25, 2, "tron", 0.05, 0.03),
    Asset("LTC", 95.0, 6, "ltc", 0.03, 0.04),
    Asset("DOGE", 0.32, 2, "doge", 0.04, 0.06),
    Asset("ADA", 0.9, 2, "ada", 0.02, 0.05),
)

# ---------------------------------------------------------------------------------------
# Model constants (reason and unit in the comment)
# ---------------------------------------------------------------------------------------

_SECONDS_PER_DAY = 86_400.0  # seconds in a day (s)
_SECONDS_PER_HOUR = 3_600.0  # seconds in an hour (s)

_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"  # bech32 data alphabet (BTC, LTC, ADA)
_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"  # bitcoin base58
_RIPPLE58 = "rpshnaf39wBUDNEGHJKLM4PQRST7VWXYZ2bcdeCg65jkm8oFqi1tuvAxyz"  # XRP's base58
_HEX = "0123456789abcdef"  # EVM addresses (lower case is valid, no EIP-55 checksum)
# Address look per chain: (prefix, alphabet, body length in characters).
_ADDRESS_FORMATS: dict[str, tuple[str, str, int]] = {
    "btc": ("bc1q", _BECH32, 38),  # P2WPKH, 42 chars
    "ltc": ("ltc1q", _BECH32, 38),  # P2WPKH, 43 chars
    "eth": ("0x", _HEX, 40),  # EVM, 42 chars (ETH and ERC-20 USDC)
    "tron": ("T", _BASE58, 33),  # TRON, 34 chars (TRX and TRC-20 USDT)
    "sol": ("", _BASE58, 44),  # Solana public key, 44 chars
    "xrp": ("r", _RIPPLE58, 33),  # classic XRP address, 34 chars
    "doge": ("D", _BASE58, 33),  # P2PKH, 34 chars
    "ada": ("addr1q", _BECH32, 97),  # Shelley base address, 103 chars
}
# Shared legit deposit addresses (merchants, other exchanges) per chain; ~20 in total,
# more on the busy chains. Count of addresses.
_SHARED_PER_CHAIN: dict[str, int] = {
    "tron": 5,
    "eth": 5,
    "btc": 3,
    "sol": 2,
    "xrp": 2,
    "doge": 1,
    "ltc": 1,
    "ada": 1,
}
# Zipf exponent of how popular the shared addresses of a chain are (dimensionless).
_SHARED_ZIPF = 0.8
# Chance that one of an account's habitual addresses for an asset is a shared one.
_SHARED_HABIT_PROB = 0.35


class _Profile(NamedTuple):
    """An account archetype: its share, withdrawal rate, typical amount and daily rhythm."""

    name: str
    share: float  # fraction of accounts
    rate_median: float  # median withdrawals per day across such accounts (1/day)
    rate_sigma: float  # lognormal sigma of the rate across accounts (log units)
    typical_median: float  # median personal typical amount across accounts (USD)
    typical_sigma: float  # lognormal sigma of the typical amount across accounts (log units)
    flat: float  # share of activity independent of the hour of day (bots ~ 24/7)


# Retail: a few withdrawals a week; active traders: daily; market makers: dozens a day.
_PROFILES: tuple[_Profile, ...] = (
    _Profile("retail", 0.75, 0.6, 0.6, 150.0, 1.1, 0.15),
    _Profile("active", 0.20, 2.0, 0.5, 1_500.0, 1.2, 0.25),
    _Profile("market_maker", 0.05, 30.0, 0.5, 10_000.0, 1.0, 0.7),
)
_MARKET_MAKER = 2  # index of the market-maker profile in _PROFILES
_TYPICAL_BOUNDS_USD = (20.0, 500_000.0)  # clip of personal typical amounts (USD)
_NOISE_SIGMA_RANGE = (0.5, 0.8)  # per-account lognormal sigma of amounts around habit
_MIN_WITHDRAWAL_USD = 10.0  # exchange minimum withdrawal (USD); smaller draws are raised
_SECOND_ASSET_PROB = 0.4  # chance an account also uses a second asset
_SECOND_ASSET_USE = 0.25  # share of its withdrawals in the second asset
_EXTRA_DEST_MEAN = 0.6  # Poisson mean of habitual addresses beyond the first, per asset
_MAX_HABITUAL = 5  # habitual destinations per account, all assets together
_NEW_DEST_PROB = 0.05  # share of normal withdrawals to a brand-new address
_LARGE_LEGIT_PROB = 0.01  # share of normal withdrawals that are legit large ones
_LARGE_LEGIT_MULT = (5.0, 20.0)  # log-uniform multiple of the habit for those (x)
_ROUND_AMOUNT_PROB = 0.25  # share of normal amounts rounded to 2 significant digits
_SPLIT_PROB = 0.03  # share of normal withdrawals followed by 1-2 quick legit repeats
_SPLIT_GAP_S = (30.0, 900.0)  # gap before each repeat (s)
_SPLIT_AMOUNT = (0.7, 1.3)  # repeat amount relative to the first (x)
_MM_BATCHES_PER_DAY = 1.0  # market makers' batched rebalancing episodes (1/day)
_MM_BATCH_SIZE = (4, 16)  # withdrawals in such a batch, first included (inclusive count)
_MM_BATCH_GAP_S = (5.0, 40.0)  # gap between chunks of a batch (s)
# Time scale over which prices revert to their reference (h): ~20 days.
_PRICE_REVERSION_HOURS = 480.0
_BALANCE_MULT = (8.0, 100.0)  # log-uniform balance as a multiple of the typical amount

# Hours of local time where activity peaks, and how peaked the day is (von Mises kappa).
_PEAK_LOCAL_HOUR = 15.0
_DAY_KAPPA = 1.2
# Relative activity Monday..Sunday (local time); normalised to mean 1 where used.
_WEEKLY = (1.05, 1.0, 1.0, 1.0, 1.1, 0.9, 0.95)
# Time-zone offsets of account owners (hours from UTC) and how common each is.
_TZ_OFFSETS = (-8.0, -5.0, -3.0, 0.0, 1.0, 2.0, 3.0, 5.5, 7.0, 8.0, 9.0)
_TZ_WEIGHTS = (0.08, 0.12, 0.06, 0.08, 0.16, 0.08, 0.06, 0.08, 0.08, 0.12, 0.08)

_DORMANT_SHARE = 0.06  # share of (non market-maker) accounts that went dormant
_DORMANT_SPARE = 2  # dormant accounts kept beyond those woken by attacks (count)
_DORMANT_SILENCE_DAYS = (31.0, 60.0)  # silence before the end of the warm-up (days)
_DORMANT_HISTORY_DAYS = (14.0, 45.0)  # length of the active life before silence (days)
_DORMANT_MIN_RATE = 0.3  # lowest withdrawal rate while a dormant account was active (1/day)
_LEGIT_RESUME_PROB = 0.4  # chance a spare dormant account comes back legitimately
_LEGIT_RESUME_AT = (0.2, 0.9)  # when it comes back, as a fraction of the period
_NEW_ACCOUNT_SHARE = 0.05  # share of accounts that sign up during the period
_NEW_ACCOUNT_AT = (0.0, 0.9)  # sign-up time as a fraction of the period
_MIN_HISTORY = 3  # normal withdrawals a victim should have before an attack (count)

_TAKEOVER_PIECES = ((1, 2, 3), (0.5, 0.3, 0.2))  # withdrawals per takeover, probabilities
_TAKEOVER_GAP_S = (20.0, 240.0)  # gap between takeover withdrawals (s)
_TAKEOVER_DRAIN = (0.95, 1.0)  # share of the balance taken (fees and dust stay)
_BURST_COUNT = (10, 60)  # withdrawals fired by a script (inclusive count)
_BURST_SPAN_S = (60.0, 480.0)  # duration of a burst (s)
_BURST_AMOUNT_MULT = (0.2, 1.0)  # log-uniform base amount relative to the habit (x)
_BURST_AMOUNT_CAP_USD = 5_000.0  # bursts stay small-to-medium (USD per withdrawal)
_BURST_JITTER = (0.85, 1.15)  # per-withdrawal variation around the base amount (x)
_BURST_DESTS = (1, 3)  # fresh addresses used by one burst (inclusive count)
_WAKEUP_PIECES = ((1, 2), (0.7, 0.3))  # withdrawals per wake-up, probabilities
_WAKEUP_GAP_S = (30.0, 300.0)  # gap between wake-up withdrawals (s)
_FAN_IN_ACCOUNTS = (10, 40)  # compromised accounts per fan-in (inclusive count)
_FAN_IN_SPAN_S = (3_600.0, 7_200.0)  # duration of a fan-in (s)
_FAN_IN_SIGMA = 0.25  # lognormal sigma of fan-in amounts around each account's habit
_FAN_IN_ASSETS = (("USDT", "ETH", "BTC", "USDC", "SOL"), (0.4, 0.2, 0.15, 0.15, 0.1))
_STRUCT_COUNT = (8, 25)  # withdrawals per structuring episode (inclusive count)
_STRUCT_SPAN_S = (3 * 3_600.0, 12 * 3_600.0)  # duration of an episode (s)
# Amounts as a fraction of the limit; the top stays clear of the limit after price rounding.
_STRUCT_BAND = (0.905, 0.9995)
_STRUCT_DESTS = (1, 3)  # addresses used by one insider (inclusive count)
_STRUCT_ASSETS = ("USDT", "USDC")
# Insiders have an account whose habit is mid-sized and under the limit (typical, USD).
_STRUCT_INSIDER_USD = (300.0, 5_000.0)  # stablecoins: the USD amount is what the limit sees
# Longest span of each scenario (s), so an attack ends inside the period.
_SCENARIO_SPAN_S: dict[str, float] = {
    "account_takeover": 2 * _TAKEOVER_GAP_S[1],
    "scripted_burst": _BURST_SPAN_S[1],
    "dormant_wakeup": _WAKEUP_GAP_S[1],
    "fan_in": _FAN_IN_SPAN_S[1],
    "structuring": _STRUCT_SPAN_S[1],
}

# Namespace of the deterministic (uuid5) withdrawal ids.
_ID_NAMESPACE = uuid.UUID("5f0c7e7a-3b0e-4d55-9a57-6a1f0d3c2b91")
# stream_to_kafka reports progress every this many events (count).
PROGRESS_EVERY = 1_000
# Seconds the final flush may take before the stream is declared failed (s).
_FLUSH_TIMEOUT_S = 60.0


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimConfig:
    """What to simulate. Invalid values raise :class:`~detector.errors.ConfigError`."""

    accounts: int = 500
    days: float = 14.0
    seed: int = 7
    start: datetime = DEFAULT_START
    attacks_per_scenario: int = 8
    warmup_fraction: float = 0.4
    scenarios: tuple[str, ...] = SCENARIOS

    def __post_init__(self) -> None:
        if self.accounts < 1:
            raise ConfigError(f"accounts must be >= 1, got {self.accounts}")
        if not (math.isfinite(self.days) and self.days > 0):
            raise ConfigError(f"days must be > 0, got {self.days}")
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            raise ConfigError("start must be timezone-aware (e.g. 2026-10-01T00:00:00Z)")
        if self.attacks_per_scenario < 0:
            raise ConfigError(f"attacks_per_scenario must be >= 0, got {self.attacks_per_scenario}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        unknown = sorted(set(self.scenarios) - set(SCENARIOS))
        if unknown:
            raise ConfigError(f"unknown scenarios {unknown}; known: {list(SCENARIOS)}")
        if len(set(self.scenarios)) != len(self.scenarios):
            raise ConfigError(f"duplicate scenarios in {list(self.scenarios)}")

    def attacks_of(self, scenario: str) -> int:
        """How many attacks of ``scenario`` this configuration injects."""
        return self.attacks_per_scenario if scenario in self.scenarios else 0


# ---------------------------------------------------------------------------------------
# Internal data
# ---------------------------------------------------------------------------------------


@dataclass
class _Batch:
    """Columnar withdrawals before pricing and formatting; time in s from the start."""

    t_s: FloatArray
    account: IntArray
    asset: IntArray
    usd: FloatArray  # intended value (USD); the amount is derived at the price of the hour
    round_amount: BoolArray  # round the asset amount to 2 significant digits
    destination: list[str]
    label: list[str]
    attack_id: list[str | None]

    def __len__(self) -> int:
        return len(self.destination)

    def take(self, idx: IntArray) -> _Batch:
        rows = idx.tolist()
        return _Batch(
            self.t_s[idx],
            self.account[idx],
            self.asset[idx],
            self.usd[idx],
            self.round_amount[idx],
            [self.destination[i] for i in rows],
            [self.label[i] for i in rows],
            [self.attack_id[i] for i in rows],
        )


@dataclass
class _World:
    """The population, shared by normal traffic and the attack scenarios."""

    horizon_s: float  # length of the period (s)
    warm_s: float  # end of the warm-up, attacks start after it (s)
    profile: IntArray
    rate: FloatArray  # withdrawals per day
    typical: FloatArray  # personal typical amount (USD)
    sigma: FloatArray  # lognormal sigma of the account's amounts
    balance: FloatArray  # estimated balance (USD)
    tz_hours: FloatArray
    assets: IntArray  # shape (n, 2): main asset, second asset or -1
    habitual: list[list[list[str]]]  # [account][slot] -> addresses on the slot's chain
    dormant_for_attack: list[int]  # dormant accounts reserved for dormant_wakeup
    dormant: set[int]
    segments: list[tuple[int, float, float]]  # (account, from_s, to_s) of normal activity
    forced: list[tuple[int, float]]  # (account, t_s) withdrawals that must happen
    history: list[FloatArray] = field(default_factory=list)  # sorted normal times

    @property
    def n(self) -> int:
        return len(self.typical)

    def events_before(self, account: int, t_s: float) -> int:
        return int(np.searchsorted(self.history[account], t_s, side="left"))


class _Producer(Protocol):
    """The part of ``kafka.KafkaProducer`` the streamer uses (a fake in tests)."""

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any: ...

    def flush(self, timeout: float | None = None) -> Any: ...


# ---------------------------------------------------------------------------------------
# Small pure helpers
# ---------------------------------------------------------------------------------------


def _asset_index(symbol: str) -> int:
    return next(i for i, a in enumerate(ASSETS) if a.symbol == symbol)


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float], size: int) -> FloatArray:
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    return np.exp(rng.uniform(lo, hi, size))


def _address(rng: np.random.Generator, chain: str) -> str:
    """A fresh address that looks like one of ``chain`` (no valid checksum)."""
    prefix, alphabet, length = _ADDRESS_FORMATS[chain]
    picks = rng.integers(0, len(alphabet), size=length).tolist()
    return prefix + "".join(alphabet[i] for i in picks)


def _zipf_weights(n: int, exponent: float) -> FloatArray:
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return np.asarray(w / w.sum(), dtype=np.float64)


def _daily_shape(local_hour: FloatArray) -> FloatArray:
    """Activity by local hour, mean 1 over a day (von Mises bump at the peak hour)."""
    angle = 2.0 * np.pi * (local_hour - _PEAK_LOCAL_HOUR) / 24.0
    return np.asarray(np.exp(_DAY_KAPPA * np.cos(angle)) / np.i0(_DAY_KAPPA), dtype=np.float64)


def _intensity(
    t_s: FloatArray, flat: FloatArray, tz_hours: FloatArray, epoch_s: float
) -> FloatArray:
    """Relative activity (mean ~1) at ``t_s`` for accounts with these rhythms."""
    local = epoch_s + t_s + tz_hours * _SECONDS_PER_HOUR
    local_hour = np.mod(local / _SECONDS_PER_HOUR, 24.0)
    weekday = (np.floor(local / _SECONDS_PER_DAY).astype(np.int64) + 3) % 7  # 1970-01-01: Thu
    weekly = np.asarray(_WEEKLY) / np.mean(_WEEKLY)
    return np.asarray((flat + (1.0 - flat) * _daily_shape(local_hour)) * weekly[weekday])


def _peak_intensity(flat: FloatArray) -> FloatArray:
    day_peak = math.exp(_DAY_KAPPA) / float(np.i0(_DAY_KAPPA))
    return np.asarray((flat + (1.0 - flat) * day_peak) * (max(_WEEKLY) / np.mean(_WEEKLY)))


def _format_units(units: int, decimals: int) -> str:
    """``units`` of 10**-decimals as a plain decimal string without trailing zeros."""
    if decimals == 0:
        return str(units)
    whole, frac = divmod(units, 10**decimals)
    text = f"{whole}.{frac:0{decimals}d}".rstrip("0")
    return text.rstrip(".")


def _format_ms(epoch_ms: IntArray) -> list[str]:
    """RFC 3339 UTC timestamps with milliseconds."""
    stamps = np.datetime_as_string(epoch_ms.astype("datetime64[ms]"), unit="ms")
    return [f"{s}Z" for s in stamps.tolist()]


def _empty_batch() -> _Batch:
    return _Batch(
        np.zeros(0, np.float64),
        np.zeros(0, np.int64),
        np.zeros(0, np.int64),
        np.zeros(0, np.float64),
        np.zeros(0, np.bool_),
        [],
        [],
        [],
    )


def _attack_batch(
    t_s: Sequence[float],
    account: Sequence[int],
    asset: Sequence[int],
    usd: Sequence[float],
    destination: Sequence[str],
    *,
    label: str,
    attack_id: str,
) -> _Batch:
    n = len(t_s)
    return _Batch(
        np.asarray(t_s, np.float64),
        np.asarray(account, np.int64),
        np.asarray(asset, np.int64),
        np.asarray(usd, np.float64),
        np.zeros(n, np.bool_),
        list(destination),
        [label] * n,
        [attack_id] * n,
    )


def _concat(batches: Sequence[_Batch]) -> _Batch:
    if not batches:
        return _empty_batch()
    return _Batch(
        np.concatenate([b.t_s for b in batches]),
        np.concatenate([b.account for b in batches]),
        np.concatenate([b.asset for b in batches]),
        np.concatenate([b.usd for b in batches]),
        np.concatenate([b.round_amount for b in batches]),
        [d for b in batches for d in b.destination],
        [x for b in batches for x in b.label],
        [x for b in batches for x in b.attack_id],
    )


# ---------------------------------------------------------------------------------------
# Population
# ---------------------------------------------------------------------------------------


def _shared_destinations(rng: np.random.Generator) -> dict[str, list[str]]:
    return {c: [_address(rng, c) for _ in range(k)] for c, k in _SHARED_PER_CHAIN.items()}


def _pick_assets(rng: np.random.Generator, n: int) -> IntArray:
    popularity = np.asarray([a.popularity for a in ASSETS])
    popularity = popularity / popularity.sum()
    assets = np.full((n, 2), -1, dtype=np.int64)
    assets[:, 0] = rng.choice(len(ASSETS), size=n, p=popularity)
    has_second = rng.random(n) < _SECOND_ASSET_PROB
    for i in np.flatnonzero(has_second).tolist():
        p = popularity.copy()
        p[assets[i, 0]] = 0.0
        assets[i, 1] = rng.choice(len(ASSETS), p=p / p.sum())
    return assets


def _habitual_destinations(
    rng: np.random.Generator, assets: IntArray, shared: dict[str, list[str]]
) -> list[list[list[str]]]:
    """1-5 habitual addresses per account, on the chains of its assets."""
    out: list[list[list[str]]] = []
    for a0, a1 in assets.tolist():
        slots: list[list[str]] = []
        room = _MAX_HABITUAL - (1 if a1 >= 0 else 0)
        for asset in (a0, a1):
            if asset < 0:
                break
            chain = ASSETS[asset].chain
            k = min(1 + int(rng.poisson(_EXTRA_DEST_MEAN)), room)
            room = _MAX_HABITUAL - k
            dests = [_address(rng, chain) for _ in range(k)]
            pool = shared.get(chain, [])
            if pool and rng.random() < _SHARED_HABIT_PROB:
                pick = int(rng.choice(len(pool), p=_zipf_weights(len(pool), _SHARED_ZIPF)))
                dests[int(rng.integers(0, k))] = pool[pick]
            slots.append(dests)
        out.append(slots)
    return out


def _build_world(rng: np.random.Generator, config: SimConfig) -> _World:
    n = config.accounts
    horizon = config.days * _SECONDS_PER_DAY
    warm = config.warmup_fraction * horizon
    shares = np.asarray([p.share for p in _PROFILES])
    profile = rng.choice(len(_PROFILES), size=n, p=shares / shares.sum()).astype(np.int64)
    prof = np.asarray(
        [
            (p.rate_median, p.rate_sigma, p.typical_median, p.typical_sigma, p.flat)
            for p in _PROFILES
        ]
    )[profile]
    rate = prof[:, 0] * np.exp(rng.normal(size=n) * prof[:, 1])
    typical = np.clip(prof[:, 2] * np.exp(rng.normal(size=n) * prof[:, 3]), *_TYPICAL_BOUNDS_USD)
    sigma = rng.uniform(*_NOISE_SIGMA_RANGE, size=n)
    balance = typical * _log_uniform(rng, _BALANCE_MULT, n)
    tz = np.asarray(_TZ_OFFSETS)[rng.choice(len(_TZ_OFFSETS), size=n, p=_TZ_WEIGHTS)]
    assets = _pick_assets(rng, n)
    habitual = _habitual_destinations(rng, assets, _shared_destinations(rng))

    # Dormant accounts: active long before the period, silent >= 31 days before any attack.
    not_mm = np.flatnonzero(profile != _MARKET_MAKER)
    n_attack = config.attacks_of("dormant_wakeup")
    n_dormant = max(round(_DORMANT_SHARE * n), n_attack + _DORMANT_SPARE if n_attack else 0)
    n_dormant = min(n_dormant, len(not_mm))
    if n_dormant < n_attack:
        raise ConfigError(f"{n} accounts are too few for {n_attack} dormant_wakeup attacks")
    dormant = rng.choice(not_mm, size=n_dormant, replace=False).astype(np.int64).tolist()
    segments: list[tuple[int, float, float]] = []
    forced: list[tuple[int, float]] = []
    for i, acc in enumerate(dormant):
        last = warm - rng.uniform(*_DORMANT_SILENCE_DAYS) * _SECONDS_PER_DAY
        first = last - rng.uniform(*_DORMANT_HISTORY_DAYS) * _SECONDS_PER_DAY
        rate[acc] = max(rate[acc], _DORMANT_MIN_RATE)
        segments.append((acc, first, last))
        forced.append((acc, last))  # their final withdrawal before going quiet
        if i >= n_attack and rng.random() < _LEGIT_RESUME_PROB:
            segments.append((acc, rng.uniform(*_LEGIT_RESUME_AT) * horizon, horizon))
    dormant_set = set(dormant)
    others = [a for a in range(n) if a not in dormant_set]
    late = set(
        rng.choice(others, size=round(_NEW_ACCOUNT_SHARE * len(others)), replace=False).tolist()
        if others
        else []
    )
    for acc in others:
        begin = rng.uniform(*_NEW_ACCOUNT_AT) * horizon if acc in late else 0.0
        segments.append((acc, begin, horizon))
    return _World(
        horizon_s=horizon,
        warm_s=warm,
        profile=profile,
        rate=rate,
        typical=typical,
        sigma=sigma,
        balance=balance,
        tz_hours=tz,
        assets=assets,
        habitual=habitual,
        dormant_for_attack=dormant[:n_attack],
        dormant=dormant_set,
        segments=segments,
        forced=forced,
    )


# ---------------------------------------------------------------------------------------
# Normal traffic
# ---------------------------------------------------------------------------------------


def _normal_times(
    rng: np.random.Generator, world: _World, epoch_s: float
) -> tuple[FloatArray, IntArray]:
    """Withdrawal times per account: inhomogeneous Poisson process by thinning."""
    seg_acc = np.asarray([s[0] for s in world.segments], np.int64)
    lo = np.asarray([s[1] for s in world.segments], np.float64)
    hi = np.asarray([s[2] for s in world.segments], np.float64)
    flat = np.asarray([p.flat for p in _PROFILES])[world.profile]
    peak = _peak_intensity(flat)
    lam = world.rate[seg_acc] * (hi - lo) / _SECONDS_PER_DAY * peak[seg_acc]
    counts = rng.poisson(np.maximum(lam, 0.0))
    acc = np.repeat(seg_acc, counts)
    t = np.repeat(lo, counts) + rng.random(acc.size) * np.repeat(hi - lo, counts)
    keep = rng.random(acc.size) * peak[acc] < _intensity(t, flat[acc], world.tz_hours[acc], epoch_s)
    forced_acc = np.asarray([f[0] for f in world.forced], np.int64)
    forced_t = np.asarray([f[1] for f in world.forced], np.float64)
    return np.concatenate([t[keep], forced_t]), np.concatenate([acc[keep], forced_acc])


def _normal_attributes(
    rng: np.random.Generator, world: _World, t: FloatArray, acc: IntArray
) -> _Batch:
    n = acc.size
    has_second = world.assets[acc, 1] >= 0
    slot = (has_second & (rng.random(n) < _SECOND_ASSET_USE)).astype(np.int64)
    asset = world.assets[acc, slot]
    is_new = rng.random(n) < _NEW_DEST_PROB
    large = ~is_new & (rng.random(n) < _LARGE_LEGIT_PROB)
    usd = world.typical[acc] * np.exp(rng.normal(size=n) * world.sigma[acc])
    usd = np.where(large, usd * _log_uniform(rng, _LARGE_LEGIT_MULT, n), usd)
    usd = np.maximum(usd, _MIN_WITHDRAWAL_USD)
    round_amount = rng.random(n) < _ROUND_AMOUNT_PROB
    u_dest = rng.random(n).tolist()
    # Habitual addresses are used with Zipf(1) frequencies: the first one most often.
    cdfs = {k: np.cumsum(_zipf_weights(k, 1.0)) for k in range(1, _MAX_HABITUAL + 1)}
    destinations: list[str] = []
    rows = zip(acc.tolist(), slot.tolist(), asset.tolist(), is_new.tolist(), u_dest, strict=True)
    for a, s, x, new, u in rows:
        if new:
            destinations.append(_address(rng, ASSETS[x].chain))
            continue
        habit = world.habitual[a][s]
        pick = int(np.searchsorted(cdfs[len(habit)], u))
        destinations.append(habit[min(pick, len(habit) - 1)])
    return _Batch(t, acc, asset, usd, round_amount, destinations, [NORMAL_LABEL] * n, [None] * n)


def _repeat_rows(
    rng: np.random.Generator,
    batch: _Batch,
    parents: IntArray,
    counts: IntArray,
    gap_s: tuple[float, float],
) -> _Batch:
    """``counts[i]`` copies of row ``parents[i]``, each ``gap_s`` after the previous one,
    same asset and destination, amount varied by ``_SPLIT_AMOUNT``."""
    idx = np.repeat(parents, counts)
    gaps = rng.uniform(*gap_s, size=idx.size)
    starts = np.cumsum(counts) - counts  # first copy of each parent in idx
    cum = np.cumsum(gaps)
    offsets = cum - np.repeat(cum[starts] - gaps[starts], counts) if idx.size else cum
    extra = batch.take(idx.astype(np.int64))
    extra.t_s = extra.t_s + offsets
    extra.usd = np.maximum(
        extra.usd * rng.uniform(*_SPLIT_AMOUNT, size=idx.size), _MIN_WITHDRAWAL_USD
    )
    return extra


def _quick_repeats(rng: np.random.Generator, world: _World, batch: _Batch) -> _Batch:
    """Legit velocity: users split a withdrawal into 2-3 within minutes, market makers
    send batches of 4-16 chunks within minutes (both fire naive velocity rules)."""
    is_mm = world.profile[batch.account] == _MARKET_MAKER
    u = rng.random(len(batch))
    split = np.flatnonzero(~is_mm & (u < _SPLIT_PROB)).astype(np.int64)
    mm_prob = _MM_BATCHES_PER_DAY / world.rate[batch.account]
    chunked = np.flatnonzero(is_mm & (u < mm_prob)).astype(np.int64)
    extra = _concat(
        [
            _repeat_rows(rng, batch, split, rng.integers(1, 3, split.size), _SPLIT_GAP_S),
            _repeat_rows(
                rng,
                batch,
                chunked,
                rng.integers(_MM_BATCH_SIZE[0] - 1, _MM_BATCH_SIZE[1], chunked.size),
                _MM_BATCH_GAP_S,
            ),
        ]
    )
    extra = extra.take(np.flatnonzero(extra.t_s < world.horizon_s).astype(np.int64))
    return _concat([batch, extra])


def _normal_traffic(rng: np.random.Generator, world: _World, epoch_s: float) -> _Batch:
    t, acc = _normal_times(rng, world, epoch_s)
    return _quick_repeats(rng, world, _normal_attributes(rng, world, t, acc))


def _history(batch: _Batch, n_accounts: int) -> list[FloatArray]:
    order = np.lexsort((batch.t_s, batch.account))
    acc, t = batch.account[order], batch.t_s[order]
    bounds = np.searchsorted(acc, np.arange(n_accounts + 1))
    return [t[bounds[a] : bounds[a + 1]] for a in range(n_accounts)]


# ---------------------------------------------------------------------------------------
# Attack scenarios
# ---------------------------------------------------------------------------------------


def _pick_account(
    rng: np.random.Generator,
    world: _World,
    t_s: float,
    exclude: set[int],
    *,
    allow_market_makers: bool = True,
    typical_usd: tuple[float, float] = (0.0, math.inf),
) -> int:
    """An active account not in ``exclude``, preferably with history before ``t_s`` and a
    typical amount within ``typical_usd``."""
    pool = [
        a
        for a in range(world.n)
        if a not in exclude
        and a not in world.dormant
        and (allow_market_makers or world.profile[a] != _MARKET_MAKER)
    ]
    if not pool:
        raise ConfigError("too few accounts for the requested attacks; raise accounts")
    seasoned = [a for a in pool if world.events_before(a, t_s) >= _MIN_HISTORY]
    fitting = [a for a in seasoned if typical_usd[0] <= world.typical[a] <= typical_usd[1]]
    return int(rng.choice(fitting or seasoned or pool))


def _drain(
    rng: np.random.Generator,
    world: _World,
    victim: int,
    pieces: int,
    concentration: float,
    gap_s: tuple[float, float],
    t_s: float,
    *,
    label: str,
    attack_id: str,
) -> _Batch:
    """Most of ``victim``'s balance to one fresh address, in ``pieces`` withdrawals.

    ``concentration`` is the Dirichlet parameter of the split (higher = more even pieces).
    """
    total = world.balance[victim] * rng.uniform(*_TAKEOVER_DRAIN)
    shares = np.sort(rng.dirichlet(np.full(pieces, concentration)))[::-1]
    times = t_s + np.concatenate([[0.0], np.cumsum(rng.uniform(*gap_s, pieces - 1))])
    asset = int(world.assets[victim, 0])
    dest = _address(rng, ASSETS[asset].chain)
    return _attack_batch(
        times.tolist(),
        [victim] * pieces,
        [asset] * pieces,
        (total * shares).tolist(),
        [dest] * pieces,
        label=label,
        attack_id=attack_id,
    )


def account_takeover(
    rng: np.random.Generator, world: _World, t_s: float, attack_id: str, exclude: set[int]
) -> _Batch:
    """A compromised account empties itself to a new address in 1-3 withdrawals."""
    victim = _pick_account(rng, world, t_s, exclude)
    pieces = int(rng.choice(_TAKEOVER_PIECES[0], p=_TAKEOVER_PIECES[1]))
    return _drain(
        rng,
        world,
        victim,
        pieces,
        2.0,
        _TAKEOVER_GAP_S,
        t_s,
        label="account_takeover",
        attack_id=attack_id,
    )


def scripted_burst(
    rng: np.random.Generator, world: _World, t_s: float, attack_id: str, exclude: set[int]
) -> _Batch:
    """A script fires 10-60 small-to-medium withdrawals within minutes to new addresses."""
    victim = _pick_account(rng, world, t_s, exclude)
    count = int(rng.integers(_BURST_COUNT[0], _BURST_COUNT[1] + 1))
    times = t_s + np.sort(rng.uniform(0.0, rng.uniform(*_BURST_SPAN_S), count))
    base = float(world.typical[victim] * _log_uniform(rng, _BURST_AMOUNT_MULT, 1)[0])
    base = min(max(base, _MIN_WITHDRAWAL_USD * 2), _BURST_AMOUNT_CAP_USD)
    usd = base * rng.uniform(*_BURST_JITTER, count)
    asset = int(world.assets[victim, 0])
    pool = [_address(rng, ASSETS[asset].chain) for _ in range(int(rng.integers(1, 4)))]
    dests = [pool[i] for i in rng.integers(0, len(pool), count).tolist()]
    return _attack_batch(
        times.tolist(),
        [victim] * count,
        [asset] * count,
        usd.tolist(),
        dests,
        label="scripted_burst",
        attack_id=attack_id,
    )


def dormant_wakeup(
    rng: np.random.Generator, world: _World, t_s: float, attack_id: str, exclude: set[int]
) -> _Batch:
    """An account silent for >= 30 days wakes and withdraws everything to a new address."""
    free = [a for a in world.dormant_for_attack if a not in exclude]
    if not free:
        raise ConfigError("no dormant account left for dormant_wakeup")
    victim = free[0]
    pieces = int(rng.choice(_WAKEUP_PIECES[0], p=_WAKEUP_PIECES[1]))
    return _drain(
        rng,
        world,
        victim,
        pieces,
        3.0,
        _WAKEUP_GAP_S,
        t_s,
        label="dormant_wakeup",
        attack_id=attack_id,
    )


def fan_in(
    rng: np.random.Generator, world: _World, t_s: float, attack_id: str, exclude: set[int]
) -> _Batch:
    """10-40 compromised accounts each send a habit-sized amount to one attacker address."""
    symbol = str(rng.choice(_FAN_IN_ASSETS[0], p=_FAN_IN_ASSETS[1]))
    attack_asset = _asset_index(symbol)
    chain = ASSETS[attack_asset].chain
    pool = [a for a in range(world.n) if a not in exclude and a not in world.dormant]
    seasoned = [a for a in pool if world.events_before(a, t_s) >= 1]
    pool = seasoned if len(seasoned) >= _FAN_IN_ACCOUNTS[0] else pool
    if len(pool) < _FAN_IN_ACCOUNTS[0]:
        raise ConfigError(f"fan_in needs >= {_FAN_IN_ACCOUNTS[0]} free active accounts")
    wanted = min(int(rng.integers(_FAN_IN_ACCOUNTS[0], _FAN_IN_ACCOUNTS[1] + 1)), len(pool))
    # Prefer holders of an asset on the attacked chain; others send the attack asset.
    holds = [any(ASSETS[x].chain == chain for x in world.assets[a] if x >= 0) for a in pool]
    on_chain = [a for a, h in zip(pool, holds, strict=True) if h]
    off_chain = [a for a, h in zip(pool, holds, strict=True) if not h]
    victims = rng.permutation(on_chain).tolist()[:wanted]
    victims += rng.permutation(off_chain).tolist()[: wanted - len(victims)] if off_chain else []
    assets = []
    for a in victims:
        held = [int(x) for x in world.assets[a] if x >= 0 and ASSETS[x].chain == chain]
        assets.append(held[0] if held else attack_asset)
    count = len(victims)
    times = t_s + np.sort(rng.uniform(0.0, rng.uniform(*_FAN_IN_SPAN_S), count))
    usd = world.typical[victims] * np.exp(rng.normal(size=count) * _FAN_IN_SIGMA)
    usd = np.maximum(usd, _MIN_WITHDRAWAL_USD)
    dest = _address(rng, chain)
    return _attack_batch(
        times.tolist(),
        victims,
        assets,
        usd.tolist(),
        [dest] * count,
        label="fan_in",
        attack_id=attack_id,
    )


def structuring(
    rng: np.random.Generator, world: _World, t_s: float, attack_id: str, exclude: set[int]
) -> _Batch:
    """An insider makes many withdrawals just under the limit over hours, to a few addresses."""
    insider = _pick_account(
        rng, world, t_s, exclude, allow_market_makers=False, typical_usd=_STRUCT_INSIDER_USD
    )
    count = int(rng.integers(_STRUCT_COUNT[0], _STRUCT_COUNT[1] + 1))
    times = t_s + np.sort(rng.uniform(0.0, rng.uniform(*_STRUCT_SPAN_S), count))
    usd = STRUCTURING_LIMIT_USD * rng.uniform(*_STRUCT_BAND, count)
    asset = _asset_index(str(rng.choice(_STRUCT_ASSETS)))
    pool = [_address(rng, ASSETS[asset].chain) for _ in range(int(rng.integers(1, 4)))]
    dests = [pool[i] for i in rng.integers(0, len(pool), count).tolist()]
    return _attack_batch(
        times.tolist(),
        [insider] * count,
        [asset] * count,
        usd.tolist(),
        dests,
        label="structuring",
        attack_id=attack_id,
    )


_Scenario = Callable[[np.random.Generator, _World, float, str, set[int]], _Batch]
_SCENARIO_FUNCS: dict[str, _Scenario] = {
    "account_takeover": account_takeover,
    "scripted_burst": scripted_burst,
    "dormant_wakeup": dormant_wakeup,
    "fan_in": fan_in,
    "structuring": structuring,
}


def _inject_attacks(
    seeds: Sequence[np.random.SeedSequence], world: _World, config: SimConfig
) -> tuple[list[_Batch], dict[int, float]]:
    """All attacks, and when each taken-over account was emptied (its later traffic stops).

    Single-account victims are exclusive (one attack each, never a fan-in participant);
    fan-in participants may take part in several fan-ins.
    """
    exclusive: set[int] = set()
    fan_in_used: set[int] = set()
    batches: list[_Batch] = []
    frozen: dict[int, float] = {}
    for name, seq in zip(SCENARIOS, seeds, strict=True):
        rng = np.random.default_rng(seq)
        latest = max(world.warm_s, world.horizon_s - _SCENARIO_SPAN_S[name])
        for k in range(config.attacks_of(name)):
            t0 = float(rng.uniform(world.warm_s, latest))
            attack_id = f"{name}-{k:03d}"
            if name == "fan_in":
                batch = fan_in(rng, world, t0, attack_id, exclusive)
                fan_in_used.update(batch.account.tolist())
            else:
                batch = _SCENARIO_FUNCS[name](rng, world, t0, attack_id, exclusive | fan_in_used)
                exclusive.update(batch.account.tolist())
            if name == "account_takeover":
                frozen[int(batch.account[0])] = float(batch.t_s.min())
            batches.append(batch)
    return batches, frozen


def _drop_after_freeze(batch: _Batch, frozen: dict[int, float]) -> _Batch:
    if not frozen:
        return batch
    limit = np.full(int(batch.account.max(initial=0)) + 1, np.inf)
    for acc, t in frozen.items():
        if acc < limit.size:
            limit[acc] = t
    return batch.take(np.flatnonzero(batch.t_s < limit[batch.account]).astype(np.int64))


# ---------------------------------------------------------------------------------------
# Pricing and formatting
# ---------------------------------------------------------------------------------------


def _price_table(rng: np.random.Generator, first_hour: int, last_hour: int) -> FloatArray:
    """Hourly prices per asset over ``[first_hour, last_hour]`` (hours from the start): a
    mean-reverting (Ornstein-Uhlenbeck) log-price walk around the reference price, so
    months of history stay within tens of percent of it."""
    vol = np.asarray([a.daily_vol for a in ASSETS]) / math.sqrt(24.0)
    steps = rng.normal(size=(last_hour - first_hour + 1, len(ASSETS))) * vol
    keep = 1.0 - 1.0 / _PRICE_REVERSION_HOURS
    walk = np.empty_like(steps)
    level = np.zeros(len(ASSETS))
    for h, step in enumerate(steps):
        level = keep * level + step
        walk[h] = level
    base = np.log(np.asarray([a.price_usd for a in ASSETS]))
    return np.asarray(np.exp(base[:, None] + walk.T), dtype=np.float64)


def _to_events(
    batch: _Batch, rng: np.random.Generator, config: SimConfig, epoch_s: float
) -> list[dict[str, Any]]:
    order = np.argsort(batch.t_s, kind="stable")
    batch = batch.take(order.astype(np.int64))
    t_ms = np.floor(batch.t_s * 1000.0).astype(np.int64)
    hour = np.floor_divide(t_ms, 3_600_000)
    first_hour = int(hour.min(initial=0))
    prices = _price_table(rng, first_hour, int(hour.max(initial=0)))
    price = prices[batch.asset, hour - first_hour]
    decimals = np.asarray([a.decimals for a in ASSETS], np.int64)[batch.asset]
    scale = 10.0 ** decimals.astype(np.float64)
    qty = batch.usd / price
    magnitude = 10.0 ** (np.floor(np.log10(qty)) - 1.0)
    units = np.where(
        batch.round_amount,
        np.rint(np.round(qty / magnitude) * magnitude * scale),
        np.floor(qty * scale),  # floor: the value never exceeds the intended USD amount
    )
    units_int = np.maximum(units, 1.0).astype(np.int64)
    amount_usd = np.round(units_int / scale * price, 2)
    stamps = _format_ms(np.int64(round(epoch_s * 1000.0)) + t_ms)
    events: list[dict[str, Any]] = []
    prefix = f"{config!r}/"
    rows = zip(
        units_int.tolist(),
        decimals.tolist(),
        batch.asset.tolist(),
        batch.account.tolist(),
        amount_usd.tolist(),
        stamps,
        batch.destination,
        batch.label,
        batch.attack_id,
        strict=True,
    )
    for i, (u, dec, asset, acc, usd, stamp, dest, label, attack_id) in enumerate(rows):
        metadata: dict[str, Any] = {"label": label}
        if attack_id is not None:
            metadata["attack_id"] = attack_id
        events.append(
            {
                "withdrawal_id": str(uuid.uuid5(_ID_NAMESPACE, prefix + str(i))),
                "account_id": f"acct-{acc:06d}",
                "asset": ASSETS[asset].symbol,
                "amount": _format_units(u, dec),
                "amount_usd": usd,
                "destination": dest,
                "requested_at": stamp,
                "metadata": metadata,
            }
        )
    return events


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------


def generate(config: SimConfig | None = None) -> list[dict[str, Any]]:
    """All withdrawals of ``config``, sorted by ``requested_at`` (stable), contract-valid."""
    config = config or SimConfig()
    seeds = np.random.SeedSequence(config.seed).spawn(3 + len(SCENARIOS))
    epoch_s = config.start.timestamp()
    world = _build_world(np.random.default_rng(seeds[0]), config)
    normal = _normal_traffic(np.random.default_rng(seeds[1]), world, epoch_s)
    world.history = _history(normal, world.n)
    attacks, frozen = _inject_attacks(seeds[3:], world, config)
    batch = _concat([_drop_after_freeze(normal, frozen), *attacks])
    return _to_events(batch, np.random.default_rng(seeds[2]), config, epoch_s)


def encode_event(event: Mapping[str, Any]) -> bytes:
    """One event as compact UTF-8 JSON (the Kafka value and a JSONL line)."""
    text = json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def write_jsonl(events: Iterable[Mapping[str, Any]], path: str | os.PathLike[str]) -> int:
    """Write one compact JSON object per line (UTF-8); return the number of lines."""
    count = 0
    with open(path, "wb") as out:
        for event in events:
            out.write(encode_event(event) + b"\n")
            count += 1
    return count


def _parse_rfc3339(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without zone: {text!r}")
    return parsed


def _format_rfc3339(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def _shift_offset(events: Sequence[Mapping[str, Any]], now: datetime) -> timedelta:
    """Constant shift (whole milliseconds) that moves the earliest event to ``now``."""
    if not events:
        return timedelta(0)
    earliest = min(_parse_rfc3339(str(e["requested_at"])) for e in events)
    return timedelta(milliseconds=round((now - earliest).total_seconds() * 1000.0))


def _kafka() -> Any:
    """kafka-python, imported on first use. Its import emits a DeprecationWarning
    (``importlib.resources.read_text``) that the test suite's ``filterwarnings = error``
    would turn into a failure, so it is silenced for the import only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import kafka
        import kafka.errors
    return kafka


def _producer_config(bootstrap_servers: str) -> dict[str, Any]:
    """KafkaProducer settings: all replicas acknowledge; idempotent when supported.

    The default partitioner is kept: murmur2 of the key, like the Java client (Faust).
    """
    config: dict[str, Any] = {
        "bootstrap_servers": [h.strip() for h in bootstrap_servers.split(",") if h.strip()],
        "acks": "all",
        "linger_ms": 5,
    }
    if "enable_idempotence" in getattr(_kafka().KafkaProducer, "DEFAULT_CONFIG", {}):
        config["enable_idempotence"] = True
    return config


def _make_producer(bootstrap_servers: str) -> Any:
    kafka = _kafka()
    try:
        return kafka.KafkaProducer(**_producer_config(bootstrap_servers))
    except kafka.errors.KafkaError as exc:
        raise KafkaSetupError(
            f"cannot connect a producer to {bootstrap_servers}: {exc}", retriable=True
        ) from exc


def stream_to_kafka(
    events: Sequence[Mapping[str, Any]],
    *,
    bootstrap_servers: str,
    topic: str,
    rate: float | None,
    duration: float | None = None,
    on_progress: Callable[[int], None] | None = None,
    shift_to_now: bool = True,
    producer: _Producer | None = None,
) -> int:
    """Send ``events`` to ``topic`` keyed by account_id; return how many were delivered.

    ``rate`` paces to that many events per second (``None``: as fast as possible);
    ``duration`` stops after that many seconds. With ``shift_to_now`` every
    ``requested_at`` moves by one constant so the earliest event is at now (gaps kept).
    ``on_progress`` gets the running count every :data:`PROGRESS_EVERY` events and once at
    the end. ``producer`` replaces the ``KafkaProducer`` (tests); it is flushed, not closed.
    Delivery failures raise :class:`~detector.errors.KafkaSetupError`.
    """
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise ConfigError(f"rate must be > 0 events/s or None, got {rate}")
    if duration is not None and not duration >= 0:
        raise ConfigError(f"duration must be >= 0 s or None, got {duration}")
    kafka_error: type[Exception] = _kafka().errors.KafkaError
    offset = _shift_offset(events, datetime.now(UTC)) if shift_to_now else None
    own = producer is None
    sink: Any = _make_producer(bootstrap_servers) if producer is None else producer
    failures: list[BaseException] = []
    sent = 0
    began = time.monotonic()
    try:
        for event in events:
            if rate is not None:
                due = began + sent / rate
                if duration is not None and due - began >= duration:
                    break
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            if duration is not None and time.monotonic() - began >= duration:
                break
            out = event
            if offset is not None:
                moved = _parse_rfc3339(str(event["requested_at"])) + offset
                out = {**event, "requested_at": _format_rfc3339(moved)}
            future = sink.send(
                topic, value=encode_event(out), key=str(event["account_id"]).encode("utf-8")
            )
            add_errback = getattr(future, "add_errback", None)
            if add_errback is not None:
                add_errback(failures.append)
            sent += 1
            if on_progress is not None and sent % PROGRESS_EVERY == 0:
                on_progress(sent)
        sink.flush(timeout=_FLUSH_TIMEOUT_S)
    except kafka_error as exc:
        raise KafkaSetupError(
            f"streaming to {topic} failed after {sent} events: {exc}", retriable=True
        ) from exc
    finally:
        if own:
            sink.close(timeout=_FLUSH_TIMEOUT_S)
    if failures:
        raise KafkaSetupError(
            f"{len(failures)} of {sent} events were not delivered to {topic}: {failures[0]}",
            retriable=True,
        )
    if on_progress is not None:
        on_progress(sent)
    return sent
