"""Per-account and per-destination features on event time: one code path for worker and replay.

The worker runs :func:`account_step` in the agent that owns the account's partition, then
repartitions by destination (through Kafka) and runs :func:`destination_step` there; the
offline tools (``train``, ``replay``) call the same two functions in event-time order.

State is a plain JSON-able ``dict`` (it lives in a changelog-backed Faust table), bounded
per key: at most :data:`MAX_RECENT` recent events, :data:`MAX_AMOUNTS` past amounts,
:data:`MAX_KNOWN_DESTINATIONS` destinations per account and :data:`MAX_FAN_IN_ACCOUNTS`
accounts per destination.

Every feature is *one-sided*: an isolation forest isolates both tails, but a withdrawal is
risky only when it is *more* than usual (bigger, faster, newer), so each feature is floored
at the "ordinary" end and a tiny, slow withdrawal sits in the dense mass.

Late and out-of-order events (``requested_at`` older than the newest event already seen for
the key): windows are evaluated as of the late event's own time, over (t - W, t], using the
history the state still holds; history older than the account's newest event minus
:data:`RETENTION_S` has been dropped, so a very late event sees less of its window. The late
event is inserted in time order and counts for later events' windows. Fan-in counts accounts
whose latest payment to the destination lies in (t - W, +inf).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from detector.events import Withdrawal

__all__ = [
    "ACCOUNT_STATE_VERSION",
    "DESTINATION_STATE_VERSION",
    "FEATURE_NAMES",
    "FEATURE_SCHEMA",
    "REASONS",
    "STRUCTURING_LIMIT_USD",
    "AccountFeatures",
    "DestinationFeatures",
    "Reason",
    "account_step",
    "apply_account_label",
    "apply_destination_label",
    "destination_step",
    "feature_vector",
    "reason_detail",
    "upgrade_account_state",
]

FEATURE_SCHEMA = "features-v4"  # bump when names, order or meaning change (models pin it)

# Windows (seconds) and retention: the longest window, so state stays bounded in time.
W_10M = 600.0
W_1H = 3600.0
W_2H = 7200.0
W_24H = 86400.0
RETENTION_S = W_24H
DAY_S = 86400.0
# Size bounds per key (entries): a market-maker account at one withdrawal every 3 minutes
# still fits 24 h in MAX_RECENT; past it, the oldest entries go first.
MAX_RECENT = 512
MAX_AMOUNTS = 32  # median/MAD over the account's last 32 withdrawals
MAX_KNOWN_DESTINATIONS = 64
MAX_FAN_IN_ACCOUNTS = 256

# Cold-start prior: a typical retail withdrawal (~$300) with a wide spread (natural-log
# units), worth PRIOR_WEIGHT withdrawals of the account's own history. An account's own
# numbers take over as its history grows.
PRIOR_LOG_MEDIAN = math.log(300.0)
PRIOR_LOG_SPREAD = 1.5
PRIOR_WEIGHT = 5.0
PRIOR_GAP_S = 2 * DAY_S  # a typical account withdraws every couple of days
MIN_LOG_SPREAD = 0.35  # spread floor, ln units: amounts within ~1.4x are "the same"
MAD_TO_SIGMA = 1.4826
# Amounts below this are all "ordinary size" (USD): the large_amount feature is one-sided.
LARGE_AMOUNT_FLOOR_USD = 1_000.0
# Structuring: withdrawals in [STRUCTURING_BAND * limit, limit) count as "just under".
STRUCTURING_LIMIT_USD = 10_000.0
STRUCTURING_BAND = 0.9
MIN_GAP_S = 1.0  # gaps below a second are the same as one second
AMOUNT_Z_CAP = 12.0

# The model's inputs. Each is one-sided (floored at the ordinary end) yet keeps a real spread
# over normal traffic: sklearn's random splitter never splits on a feature that is constant
# in a tree's subsample, and a value beyond the training range scores like the most extreme
# training value, so attacks must sit in the thin upper tail of a populated feature.
# `distinct destinations in 24 h` is computed (reasons, the table) but measured worse as a
# model input (docs/evaluation.md), so it is not one.
FEATURE_NAMES: tuple[str, ...] = (
    "large_amount",  # log10(max(usd, floor)): absolute size, big only
    "amount_vs_history",  # robust z of ln(amount) vs the account's median/MAD, >= 0
    "velocity_10m",  # log2(withdrawals in 10 min, incl. this one)
    "velocity_1h",  # log2(withdrawals in 1 h)
    "velocity_24h",  # log2(24 h count / usual daily count), >= 0
    "daily_volume",  # log10(24 h USD / usual daily USD), >= 0
    "rapid_succession",  # log10(usual gap / gap since previous), >= 0
    "dormant_account",  # log10(gap since previous / usual gap), >= 0
    "new_destination",  # 1 if the account never paid this destination before
    "structuring",  # log2(1 + withdrawals just under the limit in 24 h)
    "fan_in",  # log2(distinct accounts paying this destination in 24 h)
    "fan_in_new",  # log2(1 + accounts paying it for the first time in 2 h)
)


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    detail: str


# Stable reason code of each feature (the verdict contract's `reasons[].code`).
REASONS: dict[str, str] = {
    "large_amount": "large_amount",
    "amount_vs_history": "amount_vs_history",
    "velocity_10m": "velocity_10m",
    "velocity_1h": "velocity_1h",
    "velocity_24h": "velocity_24h",
    "daily_volume": "daily_volume",
    "rapid_succession": "rapid_succession",
    "dormant_account": "dormant_account",
    "new_destination": "new_destination",
    "structuring": "structuring",
    "fan_in": "fan_in",
    "fan_in_new": "fan_in_new",
}


class AccountFeatures(NamedTuple):
    """What the account's own history says about one withdrawal (raw numbers for reasons).

    A NamedTuple: built once per withdrawal on the hot path, and C-fast to construct.
    """

    usd: float
    history_n: int
    median_usd: float
    amount_z: float
    count_10m: int
    count_1h: int
    count_24h: int
    usual_daily_count: float
    sum_24h: float
    usual_daily_usd: float
    gap_s: float | None
    usual_gap_s: float
    new_destination: bool
    near_limit_24h: int
    # Feedback (labels): the account is in a cooldown after a fraud report; an analyst
    # released a withdrawal of this size (USD) to this destination recently (0: none).
    cooldown: bool = False
    released_usd: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """By field name, so a reader of another version matches fields by name."""
        return self._asdict()

    @classmethod
    def from_json(cls, values: Any) -> AccountFeatures:
        """From :meth:`to_json` of any version: unknown fields are ignored, fields this
        version added take their defaults; the positional list of version 0 (which had a
        distinct-destinations count at index 13) is read too."""
        if isinstance(values, list):
            return cls(*values[:13], *values[14:])
        known = {k: values[k] for k in cls._fields if k in values}
        return cls(**known)


class DestinationFeatures(NamedTuple):
    fan_in_24h: int
    fan_in_new_2h: int
    # Feedback (labels): the destination was reported as fraud before this withdrawal.
    reported: bool = False
    reported_by: str = ""  # "<source> <label_id>" of the report


@functools.lru_cache(maxsize=1 << 16)  # hot accounts and addresses repeat; 64k entries
def short_digest(text: str) -> str:
    """Short stable digest of an address or id: bounds state size whatever its length."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


ACCOUNT_STATE_VERSION = 1  # bump when the layout changes; upgrade_account_state reads older
DESTINATION_STATE_VERSION = 1


def new_account_state() -> dict[str, Any]:
    return {
        "v": ACCOUNT_STATE_VERSION,
        "ts": [],
        "usd": [],
        "near": [],
        "la": [],
        "known": {},
        "n": 0,
        "first": None,
        "last": None,
    }


def upgrade_account_state(state: dict[str, Any]) -> dict[str, Any]:
    """An account state written by any earlier version, in this version's layout (in place).

    Version 0 had no ``v`` and kept a ``dst`` list (read by nothing now) and sometimes no
    ``near``. A state of a *newer* version is used as it is: versions only ever add keys, so
    an older worker during a rolling deploy (or a rollback) reads what it knows and keeps
    the rest.
    """
    if state.get("v", 0) >= ACCOUNT_STATE_VERSION:
        return state
    state.pop("dst", None)
    for key, empty in new_account_state().items():
        state.setdefault(key, empty)
    state["v"] = ACCOUNT_STATE_VERSION
    return state


def account_step(
    state: dict[str, Any] | None, event: Withdrawal
) -> tuple[dict[str, Any], AccountFeatures]:
    """Features of ``event`` against the account's history, and the updated state.

    ``state`` is updated in place and returned (the caller writes it back to its table).
    """
    st = new_account_state() if state is None else upgrade_account_state(state)
    t = event.requested_at
    usd = event.value
    ts: list[float] = st["ts"]
    amounts: list[float] = st["usd"]
    dkey = short_digest(event.destination)
    n: int = st["n"]

    # Window queries over (t - W, t] from history (events strictly after t are excluded).
    hi = bisect.bisect_right(ts, t)
    lo_10m = bisect.bisect_right(ts, t - W_10M, 0, hi)
    lo_1h = bisect.bisect_right(ts, t - W_1H, 0, lo_10m)
    lo_24h = bisect.bisect_right(ts, t - W_24H, 0, lo_1h)
    count_10m = hi - lo_10m + 1
    count_1h = hi - lo_1h + 1
    count_24h = hi - lo_24h + 1
    sum_24h = sum(amounts[lo_24h:hi]) + usd
    low = STRUCTURING_BAND * STRUCTURING_LIMIT_USD
    near: list[float] = st["near"]  # past withdrawals just under the limit
    is_near = low <= usd < STRUCTURING_LIMIT_USD
    near_limit_24h = (
        bisect.bisect_right(near, t) - bisect.bisect_right(near, t - W_24H) + is_near
        if near
        else int(is_near)
    )
    known: dict[str, float] = st["known"]
    new_destination = dkey not in known

    # Amount against the account's own history: median/MAD on ln scale, shrunk to a prior.
    logs: list[float] = st["la"]
    weight = len(logs) / (len(logs) + PRIOR_WEIGHT)
    if logs:
        ordered = sorted(logs)
        med_own = _median_sorted(ordered)
        mad = _mad_sorted(ordered, med_own)
        spread_own = max(MAD_TO_SIGMA * mad, MIN_LOG_SPREAD)
    else:
        med_own, spread_own = PRIOR_LOG_MEDIAN, PRIOR_LOG_SPREAD
    med = weight * med_own + (1 - weight) * PRIOR_LOG_MEDIAN
    spread = weight * spread_own + (1 - weight) * PRIOR_LOG_SPREAD
    log_usd = math.log(max(usd, 1e-9))
    amount_z = min(max(0.0, (log_usd - med) / spread), AMOUNT_Z_CAP)

    # Rates: the account's active period (first .. previous newest event) sets its habits.
    first: float | None = st["first"]
    last: float | None = st["last"]
    if n >= 2 and first is not None and last is not None and last > first:
        usual_gap = (last - first) / (n - 1)
        gap_weight = (n - 1) / (n - 1 + PRIOR_WEIGHT)
        usual_gap = math.exp(
            gap_weight * math.log(max(usual_gap, MIN_GAP_S))
            + (1 - gap_weight) * math.log(PRIOR_GAP_S)
        )
    else:
        usual_gap = PRIOR_GAP_S
    usual_daily_count = DAY_S / usual_gap
    typical_usd = math.exp(med)
    prev = ts[hi - 1] if hi > 0 else (last if last is not None and last <= t else None)
    gap = None if prev is None else t - prev

    cooldown = st.get("cool", 0.0) > t
    released = st.get("rel", {}).get(dkey)
    released_usd = released[1] if released is not None and released[0] > t else 0.0

    # Positional: this runs once per withdrawal on the hot path (field order as declared).
    feats = AccountFeatures(
        usd,
        n,
        typical_usd,
        amount_z,
        count_10m,
        count_1h,
        count_24h,
        usual_daily_count,
        sum_24h,
        usual_daily_count * typical_usd,
        gap,
        usual_gap,
        new_destination,
        near_limit_24h,
        cooldown,
        released_usd,
    )

    # Update in place: insert in time order, drop what left retention, keep lists bounded.
    ts.insert(hi, t)
    amounts.insert(hi, usd)
    cut = bisect.bisect_right(ts, ts[-1] - RETENTION_S)
    cut = max(cut, len(ts) - MAX_RECENT)
    if cut > 0:
        del ts[:cut], amounts[:cut]
    if is_near:
        bisect.insort(near, t)
    if near and near[0] <= ts[0]:
        del near[: bisect.bisect_left(near, ts[0])]  # same retention as the window lists
    logs.append(log_usd)
    if len(logs) > MAX_AMOUNTS:
        del logs[0]
    known[dkey] = max(t, known.get(dkey, t))
    if len(known) > MAX_KNOWN_DESTINATIONS:
        del known[min(known, key=known.__getitem__)]
    st["n"] = n + 1
    st["first"] = t if first is None else min(first, t)
    st["last"] = t if last is None else max(last, t)
    return st, feats


def destination_step(
    state: dict[str, Any] | None, event: Withdrawal, *, new_for_account: bool
) -> tuple[dict[str, Any], DestinationFeatures]:
    """Cross-account fan-in of ``event.destination``; the state is keyed by destination.

    State: ``a`` maps an account digest to [latest payment, latest first-time payment]
    (0 if none); ``L`` and ``N`` hold the same times sorted, so window counts are bisects.
    ``state`` is updated in place and returned.
    """
    st: dict[str, Any] = (
        {"v": DESTINATION_STATE_VERSION, "a": {}, "L": [], "N": []} if state is None else state
    )
    accounts: dict[str, list[float]] = st["a"]
    lasts: list[float] = st["L"]
    news: list[float] = st["N"]
    t = event.requested_at
    akey = short_digest(event.account_id)
    seen = accounts.get(akey)
    if seen is None:
        seen = accounts[akey] = [t, 0.0]
        bisect.insort(lasts, t)
    elif t > seen[0]:
        del lasts[bisect.bisect_left(lasts, seen[0])]
        bisect.insort(lasts, t)
        seen[0] = t
    if new_for_account and t > seen[1]:
        if seen[1]:
            del news[bisect.bisect_left(news, seen[1])]
        bisect.insort(news, t)
        seen[1] = t
    fan_in = len(lasts) - bisect.bisect_right(lasts, t - W_24H)
    fan_in_new = len(news) - bisect.bisect_right(news, t - W_2H)
    # Bound: forget the least recently seen accounts. Counts saturate at
    # MAX_FAN_IN_ACCOUNTS + 1.
    while len(accounts) > MAX_FAN_IN_ACCOUNTS:
        oldest = lasts[0]
        victim = next(k for k, v in accounts.items() if v[0] == oldest)
        _, new = accounts.pop(victim)
        del lasts[0]
        if new:
            del news[bisect.bisect_left(news, new)]
    report = st.get("rep")
    if report is not None and report[3] <= t < report[0]:
        return st, DestinationFeatures(fan_in, fan_in_new, True, f"{report[2]} {report[1]}")
    return st, DestinationFeatures(fan_in, fan_in_new)


def apply_account_label(
    state: dict[str, Any] | None,
    label: Any,
    *,
    cooldown_s: float,
    release_s: float,
) -> dict[str, Any]:
    """An account's state after a label about it (``detector.labels.Label``), in place.

    ``fraud``: the account is compromised: its withdrawals are held for ``cooldown_s`` from
    the report. ``legit`` (an analyst released a held withdrawal): its destination becomes
    known, and withdrawals to it up to that amount are not held again for ``release_s``.
    """
    st = new_account_state() if state is None else upgrade_account_state(state)
    t = float(label.reported_at)
    if label.label == "fraud":
        st["cool"] = max(float(st.get("cool", 0.0)), t + cooldown_s)
        return st
    st.pop("cool", None)  # an analyst vouched for the account
    if label.destination is not None:
        dkey = short_digest(label.destination)
        st["known"][dkey] = max(t, st["known"].get(dkey, t))
        seen = st.get("seen", {}).get(label.withdrawal_id) if label.withdrawal_id else None
        usd = float(seen[1]) if seen is not None else 0.0  # seen: [t, *features], usd first
        rel = st.setdefault("rel", {})
        rel[dkey] = [t + release_s, max(usd, rel.get(dkey, [0.0, 0.0])[1])]
        for key in [k for k, v in rel.items() if v[0] <= t]:
            del rel[key]
    return st


def apply_destination_label(
    state: dict[str, Any] | None, label: Any, *, report_s: float
) -> dict[str, Any]:
    """A destination's state after a label naming it, in place: ``fraud`` reports it (later
    withdrawals to it are refused or held for ``report_s``), ``legit`` clears a report."""
    st: dict[str, Any] = (
        {"v": DESTINATION_STATE_VERSION, "a": {}, "L": [], "N": []} if state is None else state
    )
    t = float(label.reported_at)
    if label.label == "fraud":
        st["rep"] = [t + report_s, label.label_id, label.source, t]
    else:
        st.pop("rep", None)
    return st


def feature_vector(acc: AccountFeatures, dst: DestinationFeatures) -> list[float]:
    """The model's input row, in :data:`FEATURE_NAMES` order (every entry >= 0)."""
    gap = acc.gap_s
    if gap is None:
        rapid = dormant = 0.0
    else:
        ratio = math.log10(acc.usual_gap_s / (gap if gap > MIN_GAP_S else MIN_GAP_S))
        rapid = ratio if ratio > 0.0 else 0.0
        dormant = -ratio if ratio < 0.0 else 0.0
    usd = acc.usd
    day_count = math.log2(acc.count_24h / max(acc.usual_daily_count, 1.0))
    day_volume = math.log10(acc.sum_24h / max(acc.usual_daily_usd, 1e-9))
    return [
        math.log10(usd if usd > LARGE_AMOUNT_FLOOR_USD else LARGE_AMOUNT_FLOOR_USD),
        acc.amount_z,
        math.log2(acc.count_10m),
        math.log2(acc.count_1h),
        day_count if day_count > 0.0 else 0.0,
        day_volume if day_volume > 0.0 else 0.0,
        rapid,
        dormant,
        1.0 if acc.new_destination else 0.0,
        math.log2(1 + acc.near_limit_24h),
        math.log2(dst.fan_in_24h) if dst.fan_in_24h > 1 else 0.0,
        math.log2(1 + dst.fan_in_new_2h),
    ]


def reason_detail(feature: str, acc: AccountFeatures, dst: DestinationFeatures) -> Reason:
    """A human sentence for a contributing feature, from the raw numbers behind it."""
    code = REASONS[feature]
    if feature == "large_amount":
        text = f"amount ${acc.usd:,.0f} is large"
    elif feature == "amount_vs_history" and acc.history_n == 0:
        text = (
            f"first withdrawal of the account is ${acc.usd:,.0f}, "
            f"{acc.usd / max(acc.median_usd, 1e-9):,.0f}x a typical ${acc.median_usd:,.0f}"
        )
    elif feature == "amount_vs_history":
        text = (
            f"amount {acc.usd / max(acc.median_usd, 1e-9):,.0f}x the account's median "
            f"(${acc.usd:,.0f} vs ${acc.median_usd:,.0f} over {acc.history_n} withdrawals)"
        )
    elif feature == "velocity_10m":
        text = f"{acc.count_10m} withdrawals in the last 10 minutes"
    elif feature == "velocity_1h":
        text = f"{acc.count_1h} withdrawals in the last hour"
    elif feature == "velocity_24h":
        text = f"{acc.count_24h} withdrawals in 24 h, usual {acc.usual_daily_count:.1f} per day"
    elif feature == "daily_volume":
        text = (
            f"${acc.sum_24h:,.0f} withdrawn in 24 h, "
            f"{acc.sum_24h / max(acc.usual_daily_usd, 1e-9):,.1f}x the usual daily "
            f"${acc.usual_daily_usd:,.0f}"
        )
    elif feature == "rapid_succession":
        text = (
            f"{_duration(acc.gap_s or 0.0)} since the previous withdrawal, usual gap "
            f"{_duration(acc.usual_gap_s)}"
        )
    elif feature == "dormant_account":
        text = (
            f"first withdrawal in {_duration(acc.gap_s or 0.0)}, usual gap "
            f"{_duration(acc.usual_gap_s)}"
        )
    elif feature == "new_destination":
        text = f"destination never used by this account (history {acc.history_n} withdrawals)"
    elif feature == "structuring":
        text = (
            f"{acc.near_limit_24h} withdrawals in 24 h just under the "
            f"${STRUCTURING_LIMIT_USD:,.0f} limit"
        )
    elif feature == "fan_in":
        text = f"{dst.fan_in_24h} distinct accounts paid this destination in 24 h"
    else:
        text = f"{dst.fan_in_new_2h} accounts paid this destination for the first time in 2 h"
    return Reason(code, text)


def _mad_sorted(ordered: list[float], median: float) -> float:
    """Median of |x - median| over a sorted list, without building the deviations.

    The deviations, in ascending order, come from walking outward from the median: take
    the nearer of the next value on the left and on the right. Only the middle one or two
    order statistics are needed, so the walk stops halfway.
    """
    n = len(ordered)
    want_hi = n // 2  # index of the (upper) middle deviation in ascending order
    want_lo = (n - 1) // 2
    left = bisect.bisect_left(ordered, median) - 1
    right = left + 1
    lo_value = hi_value = 0.0
    for k in range(want_hi + 1):
        if left < 0:
            value = ordered[right] - median
            right += 1
        elif right >= n:
            value = median - ordered[left]
            left -= 1
        else:
            below, above = median - ordered[left], ordered[right] - median
            if below <= above:
                value, left = below, left - 1
            else:
                value, right = above, right + 1
        if k == want_lo:
            lo_value = value
        hi_value = value
    return 0.5 * (lo_value + hi_value)


def _median_sorted(values: list[float]) -> float:
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * DAY_S:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / DAY_S:.1f} days"
