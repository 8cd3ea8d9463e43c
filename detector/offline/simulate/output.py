"""Pricing, formatting and the public entry points: :func:`generate`, JSONL output."""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from detector.offline.simulate.attacks import _drop_after_freeze, _inject_attacks
from detector.offline.simulate.normal import _history, _normal_traffic
from detector.offline.simulate.world import (
    _PRICE_REVERSION_HOURS,
    ASSETS,
    SCENARIOS,
    FloatArray,
    SimConfig,
    _Batch,
    _build_world,
    _concat,
    _format_ms,
    _format_units,
)

# Namespace of the deterministic (uuid5) withdrawal ids.
_ID_NAMESPACE = uuid.UUID("5f0c7e7a-3b0e-4d55-9a57-6a1f0d3c2b91")
_ID_NAMESPACE_BYTES = _ID_NAMESPACE.bytes
# Slack when rounding a log10 up: a scale of exactly 0.01 needs 2 digits, not 3 (log10 units).
_LOG_EPS = 1e-9

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


def _uuid5(name: str) -> str:
    """``str(uuid.uuid5(_ID_NAMESPACE, name))``, without building a UUID object (3x faster)."""
    raw = bytearray(hashlib.sha1(_ID_NAMESPACE_BYTES + name.encode("utf-8")).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _extra_decimals(amount_scale: float) -> int:
    """Digits added to asset amounts and ``amount_usd`` so that amounts scaled down keep
    their relative precision (0 for scales >= 1)."""
    return max(0, math.ceil(-math.log10(amount_scale) - _LOG_EPS))


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
    extra = _extra_decimals(config.amount_scale)
    decimals = np.asarray([a.decimals for a in ASSETS], np.int64)[batch.asset] + extra
    scale = 10.0 ** decimals.astype(np.float64)
    qty = batch.usd * config.amount_scale / price
    magnitude = 10.0 ** (np.floor(np.log10(qty)) - 1.0)
    units = np.where(
        batch.round_amount,
        np.rint(np.round(qty / magnitude) * magnitude * scale),
        np.floor(qty * scale),  # floor: the value never exceeds the intended USD amount
    )
    units_int = np.maximum(units, 1.0).astype(np.int64)
    amount_usd = np.round(units_int / scale * price, 2 + extra)
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
                "withdrawal_id": _uuid5(prefix + str(i)),
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
