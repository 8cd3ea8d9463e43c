"""The simulated population: assets, account profiles, habits, destinations.

Also the columnar :class:`_Batch` that normal traffic and attacks are built in, and the
small pure helpers they share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from detector.errors import ConfigError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# ---------------------------------------------------------------------------------------
# Public constants
# ---------------------------------------------------------------------------------------

# Default first instant of the simulated period (UTC); fixed so outputs are reproducible.
DEFAULT_START = datetime(2026, 10, 1, tzinfo=UTC)
# Labels of the attack scenarios, in injection order; also the values of metadata.label.
SCENARIOS: tuple[str, ...] = (
    "account_takeover",
    "scripted_burst",
    "dormant_wakeup",
    "fan_in",
    "structuring",
    "night_takeover",
    "scam_address",
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
# Allowed amount_scale and activity_scale (x): beyond these, amounts leave what float64
# cents and decimal strings carry comfortably, or a period holds too few/many events.
_SCALE_BOUNDS = (1e-4, 1e4)


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimConfig:
    """What to simulate. Invalid values raise :class:`~detector.errors.ConfigError`.

    * ``days``: the whole period from ``start``. With ``test_days`` > 0 its last
      ``test_days`` form a *test period* of the same world (same accounts, habits and
      addresses, the history continuing into it) with its own attack count,
      ``test_attacks_per_scenario``; the ``attacks_per_scenario`` attacks then fall in the
      history before it (after the warm-up, each ending before the test period starts).
      ``warmup_fraction`` is a fraction of that history (of ``days - test_days``).
    * ``amount_scale`` multiplies every amount, in USD and in asset units: habits, the
      exchange minimum, legit large withdrawals, balances, the structuring limit and every
      attack's amounts alike (a world whose currency is worth ``1 / amount_scale`` as
      much). Amounts keep their relative precision: below 1, asset amounts get
      ``ceil(-log10(amount_scale))`` more decimals and ``amount_usd`` as many more digits.
      Every random draw is the same, so the output is the unscaled one with scaled amounts.
    * ``activity_scale`` multiplies every withdrawal rate (each account's rate, market
      makers' batch episodes) and divides every duration inside an episode (the gaps of
      legit split withdrawals and market-maker batches; every attack's gaps and spans), so
      episodes keep their shape relative to the account's rhythm. Unchanged: the period,
      the daily and weekly cycle, the warm-up, the dormancy silence (>= 31 days), sign-up
      and comeback times, the counts and amounts of every episode, and when attacks are
      reported (:mod:`~detector.offline.simulate.reports`). A stretched span is clipped to
      the period (a night takeover stays inside the account's night).
    """

    accounts: int = 500
    days: float = 14.0
    seed: int = 7
    start: datetime = DEFAULT_START
    attacks_per_scenario: int = 8
    warmup_fraction: float = 0.4
    scenarios: tuple[str, ...] = SCENARIOS
    amount_scale: float = 1.0
    activity_scale: float = 1.0
    test_days: float = 0.0
    test_attacks_per_scenario: int = 0

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
        for name in ("amount_scale", "activity_scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and _SCALE_BOUNDS[0] <= value <= _SCALE_BOUNDS[1]):
                raise ConfigError(
                    f"{name} must be in [{_SCALE_BOUNDS[0]:g}, {_SCALE_BOUNDS[1]:g}], got {value}"
                )
        if not (math.isfinite(self.test_days) and 0.0 <= self.test_days < self.days):
            raise ConfigError(f"test_days must be in [0, days), got {self.test_days}")
        if self.test_attacks_per_scenario < 0:
            raise ConfigError(
                f"test_attacks_per_scenario must be >= 0, got {self.test_attacks_per_scenario}"
            )
        if self.test_attacks_per_scenario and not self.test_days:
            raise ConfigError("test_attacks_per_scenario needs test_days > 0")

    @property
    def history_days(self) -> float:
        """Length of the period before the test period (all of it without one)."""
        return self.days - self.test_days

    @property
    def warmup_end(self) -> datetime:
        """End of the warm-up (no attacks before it): accounts have a history by then, so
        training fits on the withdrawals after it (``train(fit_from=...)``)."""
        return self.start + timedelta(days=self.warmup_fraction * self.history_days)

    @property
    def test_start(self) -> datetime:
        """First instant of the test period (the end of the period without one)."""
        return self.start + timedelta(days=self.history_days)

    def attacks_of(self, scenario: str) -> int:
        """How many attacks of ``scenario`` this configuration injects in the history."""
        return self.attacks_per_scenario if scenario in self.scenarios else 0

    def test_attacks_of(self, scenario: str) -> int:
        """How many attacks of ``scenario`` this configuration injects in the test period."""
        return self.test_attacks_per_scenario if scenario in self.scenarios else 0


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
    test_s: float  # start of the test period (s); horizon_s without one
    pace: float  # SimConfig.activity_scale: rates x pace, episode durations / pace
    epoch_s: float  # SimConfig.start (epoch s): local hours of the accounts
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
    _kth: dict[int, FloatArray] = field(default_factory=dict)  # k -> k-th normal time

    @property
    def n(self) -> int:
        return len(self.typical)

    def events_before(self, account: int, t_s: float) -> int:
        return int(np.searchsorted(self.history[account], t_s, side="left"))

    def seasoned(self, t_s: float, k: int) -> BoolArray:
        """Per account: at least ``k`` (>= 1) normal withdrawals before ``t_s``."""
        kth = self._kth.get(k)
        if kth is None:
            kth = np.asarray(
                [h[k - 1] if len(h) >= k else np.inf for h in self.history], dtype=np.float64
            )
            self._kth[k] = kth
        return np.asarray(kth < t_s, dtype=np.bool_)

    def window_end(self, t_s: float) -> float:
        """End of the part of the period (history or test) that ``t_s`` falls in (s)."""
        return self.test_s if t_s < self.test_s else self.horizon_s


# ---------------------------------------------------------------------------------------
# Small pure helpers
# ---------------------------------------------------------------------------------------


def _asset_index(symbol: str) -> int:
    return next(i for i, a in enumerate(ASSETS) if a.symbol == symbol)


def _paced(bounds: tuple[float, float], world: _World) -> tuple[float, float]:
    """A duration range inside an episode at the world's pace (``activity_scale``)."""
    return (bounds[0] / world.pace, bounds[1] / world.pace)


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
    test_s = config.history_days * _SECONDS_PER_DAY
    warm = config.warmup_fraction * test_s
    pace = config.activity_scale
    shares = np.asarray([p.share for p in _PROFILES])
    profile = rng.choice(len(_PROFILES), size=n, p=shares / shares.sum()).astype(np.int64)
    prof = np.asarray(
        [
            (p.rate_median, p.rate_sigma, p.typical_median, p.typical_sigma, p.flat)
            for p in _PROFILES
        ]
    )[profile]
    rate = prof[:, 0] * np.exp(rng.normal(size=n) * prof[:, 1]) * pace
    typical = np.clip(prof[:, 2] * np.exp(rng.normal(size=n) * prof[:, 3]), *_TYPICAL_BOUNDS_USD)
    sigma = rng.uniform(*_NOISE_SIGMA_RANGE, size=n)
    balance = typical * _log_uniform(rng, _BALANCE_MULT, n)
    tz = np.asarray(_TZ_OFFSETS)[rng.choice(len(_TZ_OFFSETS), size=n, p=_TZ_WEIGHTS)]
    assets = _pick_assets(rng, n)
    habitual = _habitual_destinations(rng, assets, _shared_destinations(rng))

    # Dormant accounts: active long before the period, silent >= 31 days before any attack.
    not_mm = np.flatnonzero(profile != _MARKET_MAKER)
    n_attack = config.attacks_of("dormant_wakeup") + config.test_attacks_of("dormant_wakeup")
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
        rate[acc] = max(rate[acc], _DORMANT_MIN_RATE * pace)
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
        test_s=test_s,
        pace=pace,
        epoch_s=config.start.timestamp(),
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
