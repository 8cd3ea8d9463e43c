"""Normal traffic: each account's withdrawals at its own pace, habits and hours."""

from __future__ import annotations

import numpy as np

from detector.offline.quality import NORMAL_LABEL
from detector.offline.simulate.world import (
    _LARGE_LEGIT_MULT,
    _LARGE_LEGIT_PROB,
    _MARKET_MAKER,
    _MAX_HABITUAL,
    _MIN_WITHDRAWAL_USD,
    _MM_BATCH_GAP_S,
    _MM_BATCH_SIZE,
    _MM_BATCHES_PER_DAY,
    _NEW_DEST_PROB,
    _PROFILES,
    _ROUND_AMOUNT_PROB,
    _SECOND_ASSET_USE,
    _SECONDS_PER_DAY,
    _SPLIT_AMOUNT,
    _SPLIT_GAP_S,
    _SPLIT_PROB,
    ASSETS,
    FloatArray,
    IntArray,
    _address,
    _Batch,
    _concat,
    _intensity,
    _log_uniform,
    _paced,
    _peak_intensity,
    _World,
    _zipf_weights,
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
    mm_prob = _MM_BATCHES_PER_DAY * world.pace / world.rate[batch.account]
    chunked = np.flatnonzero(is_mm & (u < mm_prob)).astype(np.int64)
    extra = _concat(
        [
            _repeat_rows(
                rng, batch, split, rng.integers(1, 3, split.size), _paced(_SPLIT_GAP_S, world)
            ),
            _repeat_rows(
                rng,
                batch,
                chunked,
                rng.integers(_MM_BATCH_SIZE[0] - 1, _MM_BATCH_SIZE[1], chunked.size),
                _paced(_MM_BATCH_GAP_S, world),
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
