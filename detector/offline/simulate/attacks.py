"""Attack scenarios, one function each, injected after the warm-up."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from detector.errors import ConfigError
from detector.offline.simulate.world import (
    _MARKET_MAKER,
    _MIN_WITHDRAWAL_USD,
    _SECONDS_PER_DAY,
    _SECONDS_PER_HOUR,
    ASSETS,
    SCENARIOS,
    STRUCTURING_LIMIT_USD,
    SimConfig,
    _address,
    _asset_index,
    _attack_batch,
    _Batch,
    _log_uniform,
    _paced,
    _World,
)

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
_NIGHT_PIECES = (2, 5)  # withdrawals per night takeover (inclusive count)
_NIGHT_MULT = (3.0, 10.0)  # log-uniform amount of each as a multiple of the habit (x)
_NIGHT_SPAN_S = (3_600.0, 7_200.0)  # duration of a night takeover (s), "an hour or two"
# The account's night (local hours): its activity peaks at 15:00 local, and 00:00-06:00
# holds ~9-11% of a retail or active account's withdrawals (25% of the day) (h).
_NIGHT_HOURS = (0.0, 6.0)
_NIGHT_DESTS = (1, 2)  # fresh addresses used by one night takeover (inclusive count)
# Not a drain: the victim's estimated balance is at least this multiple of its habit, and
# pieces are dropped (never below 2) until the total is at most this share of it.
_NIGHT_MIN_BALANCE = 25.0  # (x the habit)
_NIGHT_MAX_SHARE = 0.8  # (share of the balance)
_SCAM_ACCOUNTS = (8, 30)  # victims per scam address (inclusive count)
# Length of a scam campaign (s): 1-3 weeks (clipped to the part of the period it is in).
_SCAM_CAMPAIGN_S = (7 * 86_400.0, 21 * 86_400.0)
_SCAM_PAYMENTS = ((1, 2, 3), (0.6, 0.3, 0.1))  # payments per victim, probabilities
_SCAM_REPEAT_S = (86_400.0, 7 * 86_400.0)  # gap between one victim's payments (s)
_SCAM_SIGMA = 0.25  # lognormal sigma of each payment around the payer's habit
_SCAM_ASSETS = (("USDT", "ETH", "BTC", "USDC", "SOL"), (0.4, 0.2, 0.15, 0.15, 0.1))
# Longest span of each scenario at pace 1 (s), so an attack ends inside its part of the
# period (divided by the pace: see _span_s). A night takeover first waits up to a day for
# the account's night; a scam campaign lasts at least its shortest length when it fits.
_SCENARIO_SPAN_S: dict[str, float] = {
    "account_takeover": 2 * _TAKEOVER_GAP_S[1],
    "scripted_burst": _BURST_SPAN_S[1],
    "dormant_wakeup": _WAKEUP_GAP_S[1],
    "fan_in": _FAN_IN_SPAN_S[1],
    "structuring": _STRUCT_SPAN_S[1],
    "night_takeover": _NIGHT_SPAN_S[1],
    "scam_address": _SCAM_CAMPAIGN_S[0],
}


def _span_s(name: str, pace: float) -> float:
    """How long before the end of its part of the period an attack of ``name`` must start."""
    if name == "night_takeover":
        night = (_NIGHT_HOURS[1] - _NIGHT_HOURS[0]) * _SECONDS_PER_HOUR
        return _SECONDS_PER_DAY + min(_SCENARIO_SPAN_S[name] / pace, night)
    return _SCENARIO_SPAN_S[name] / pace


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
    min_balance: float = 0.0,
) -> int:
    """An active account not in ``exclude``, preferably with history before ``t_s``, a
    typical amount within ``typical_usd`` and an estimated balance of at least
    ``min_balance`` times that typical amount."""
    pool = [
        a
        for a in range(world.n)
        if a not in exclude
        and a not in world.dormant
        and (allow_market_makers or world.profile[a] != _MARKET_MAKER)
    ]
    if not pool:
        raise ConfigError("too few accounts for the requested attacks; raise accounts")
    enough = world.seasoned(t_s, _MIN_HISTORY)
    seasoned = [a for a in pool if enough[a]]
    fitting = [
        a
        for a in seasoned
        if typical_usd[0] <= world.typical[a] <= typical_usd[1]
        and world.balance[a] >= min_balance * world.typical[a]
    ]
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
        _paced(_TAKEOVER_GAP_S, world),
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
    times = t_s + np.sort(rng.uniform(0.0, rng.uniform(*_paced(_BURST_SPAN_S, world)), count))
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
        _paced(_WAKEUP_GAP_S, world),
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
    enough = world.seasoned(t_s, 1)
    seasoned = [a for a in pool if enough[a]]
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
    times = t_s + np.sort(rng.uniform(0.0, rng.uniform(*_paced(_FAN_IN_SPAN_S, world)), count))
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
    times = t_s + np.sort(rng.uniform(0.0, rng.uniform(*_paced(_STRUCT_SPAN_S, world)), count))
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


def night_takeover(
    rng: np.random.Generator, world: _World, t_s: float, attack_id: str, exclude: set[int]
) -> _Batch:
    """A takeover at night: 2-5 withdrawals of 3-10x the habit, within an hour or two of the
    account's night (00:00-06:00 local, after ``t_s``), to 1-2 new addresses; not a drain
    (the account goes on afterwards)."""
    victim = _pick_account(
        rng, world, t_s, exclude, allow_market_makers=False, min_balance=_NIGHT_MIN_BALANCE
    )
    night_s = (_NIGHT_HOURS[1] - _NIGHT_HOURS[0]) * _SECONDS_PER_HOUR
    span = min(float(rng.uniform(*_paced(_NIGHT_SPAN_S, world))), night_s)
    start_hour = float(rng.uniform(_NIGHT_HOURS[0], _NIGHT_HOURS[1] - span / _SECONDS_PER_HOUR))
    shift = float(world.tz_hours[victim]) * _SECONDS_PER_HOUR + world.epoch_s
    local = t_s + shift
    begin = math.floor(local / _SECONDS_PER_DAY) * _SECONDS_PER_DAY
    begin += start_hour * _SECONDS_PER_HOUR
    if begin < local:
        begin += _SECONDS_PER_DAY
    t0 = begin - shift
    earliest = world.warm_s if t_s < world.test_s else world.test_s
    if t0 + span > world.window_end(t_s) and t0 - _SECONDS_PER_DAY >= earliest:
        t0 -= _SECONDS_PER_DAY  # a short period: the night before, if that is allowed
    pieces = int(rng.integers(_NIGHT_PIECES[0], _NIGHT_PIECES[1] + 1))
    habit = float(world.typical[victim])
    usd = habit * _log_uniform(rng, _NIGHT_MULT, pieces)
    cap = _NIGHT_MAX_SHARE * float(world.balance[victim])
    while usd.size > _NIGHT_PIECES[0] and usd.sum() > cap:
        usd = usd[:-1]
    pieces = usd.size
    inner = np.sort(rng.uniform(0.0, span, pieces - 2))
    offsets = np.concatenate([[0.0], inner, [span]])  # first at t0, last at t0 + span
    asset = int(world.assets[victim, 0])
    pool = [
        _address(rng, ASSETS[asset].chain)
        for _ in range(int(rng.integers(_NIGHT_DESTS[0], _NIGHT_DESTS[1] + 1)))
    ]
    dests = [pool[i] for i in rng.integers(0, len(pool), pieces).tolist()]
    return _attack_batch(
        (t0 + offsets).tolist(),
        [victim] * pieces,
        [asset] * pieces,
        np.maximum(usd, _MIN_WITHDRAWAL_USD).tolist(),
        dests,
        label="night_takeover",
        attack_id=attack_id,
    )


def scam_address(
    rng: np.random.Generator, world: _World, t_s: float, attack_id: str, exclude: set[int]
) -> _Batch:
    """A scam: 8-30 accounts (its victims) each pay one new address 1-3 times, near their
    usual amount, over a campaign of 1-3 weeks from ``t_s``; nothing else is unusual."""
    symbol = str(rng.choice(_SCAM_ASSETS[0], p=_SCAM_ASSETS[1]))
    scam_asset = _asset_index(symbol)
    chain = ASSETS[scam_asset].chain
    end = world.window_end(t_s)
    campaign = min(float(rng.uniform(*_paced(_SCAM_CAMPAIGN_S, world))), end - t_s)
    pool = [
        a
        for a in range(world.n)
        if a not in exclude and a not in world.dormant and world.profile[a] != _MARKET_MAKER
    ]
    enough = world.seasoned(t_s, 1)
    seasoned = [a for a in pool if enough[a]]
    pool = seasoned if len(seasoned) >= _SCAM_ACCOUNTS[0] else pool
    if len(pool) < _SCAM_ACCOUNTS[0]:
        raise ConfigError(f"scam_address needs >= {_SCAM_ACCOUNTS[0]} free active accounts")
    wanted = min(int(rng.integers(_SCAM_ACCOUNTS[0], _SCAM_ACCOUNTS[1] + 1)), len(pool))
    holds = [any(ASSETS[x].chain == chain for x in world.assets[a] if x >= 0) for a in pool]
    on_chain = [a for a, h in zip(pool, holds, strict=True) if h]
    off_chain = [a for a, h in zip(pool, holds, strict=True) if not h]
    victims = rng.permutation(on_chain).tolist()[:wanted]
    victims += rng.permutation(off_chain).tolist()[: wanted - len(victims)] if off_chain else []
    dest = _address(rng, chain)
    first = t_s + np.sort(rng.uniform(0.0, campaign, len(victims)))
    first[0] = t_s  # the campaign starts with its first payment
    times: list[float] = []
    payers: list[int] = []
    assets: list[int] = []
    for victim, t in zip(victims, first.tolist(), strict=True):
        held = [int(x) for x in world.assets[victim] if x >= 0 and ASSETS[x].chain == chain]
        paid = int(rng.choice(_SCAM_PAYMENTS[0], p=_SCAM_PAYMENTS[1]))
        gaps = rng.uniform(*_paced(_SCAM_REPEAT_S, world), paid - 1)
        for when in (t + np.concatenate([[0.0], np.cumsum(gaps)])).tolist():
            if when < end:
                times.append(when)
                payers.append(victim)
                assets.append(held[0] if held else scam_asset)
    usd = world.typical[payers] * np.exp(rng.normal(size=len(payers)) * _SCAM_SIGMA)
    return _attack_batch(
        times,
        payers,
        assets,
        np.maximum(usd, _MIN_WITHDRAWAL_USD).tolist(),
        [dest] * len(times),
        label="scam_address",
        attack_id=attack_id,
    )


_Scenario = Callable[[np.random.Generator, _World, float, str, set[int]], _Batch]
_SCENARIO_FUNCS: dict[str, _Scenario] = {
    "account_takeover": account_takeover,
    "scripted_burst": scripted_burst,
    "dormant_wakeup": dormant_wakeup,
    "fan_in": fan_in,
    "structuring": structuring,
    "night_takeover": night_takeover,
    "scam_address": scam_address,
}
# Scenarios whose victims are many accounts at once: an account may take part in several
# such attacks, never in a single-account one.
_SHARED_VICTIMS = ("fan_in", "scam_address")


def _inject_attacks(
    seeds: Sequence[np.random.SeedSequence], world: _World, config: SimConfig
) -> tuple[list[_Batch], dict[int, float]]:
    """All attacks, and when each drained account was emptied (its later traffic stops).

    Per scenario, the history's attacks first (after the warm-up, ending before the test
    period), then the test period's; attack ids count on across both. Single-account
    victims are exclusive (one attack each, never a fan-in or scam participant); fan-in and
    scam participants may take part in several such attacks.
    """
    exclusive: set[int] = set()
    shared: set[int] = set()
    batches: list[_Batch] = []
    frozen: dict[int, float] = {}
    for name, seq in zip(SCENARIOS, seeds, strict=True):
        rng = np.random.default_rng(seq)
        windows = (
            (world.warm_s, world.test_s, config.attacks_of(name)),
            (world.test_s, world.horizon_s, config.test_attacks_of(name)),
        )
        k = 0
        for lo, end, count in windows:
            latest = max(lo, end - _span_s(name, world.pace))
            for _ in range(count):
                t0 = float(rng.uniform(lo, latest))
                attack_id = f"{name}-{k:03d}"
                k += 1
                if name in _SHARED_VICTIMS:
                    batch = _SCENARIO_FUNCS[name](rng, world, t0, attack_id, exclusive)
                    shared.update(batch.account.tolist())
                else:
                    batch = _SCENARIO_FUNCS[name](rng, world, t0, attack_id, exclusive | shared)
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
