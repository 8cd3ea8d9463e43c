"""Per-account and per-destination features on event time: one code path for worker and replay.

The worker runs :func:`account_step` in the agent that owns the account's partition, then
repartitions by destination (through Kafka) and runs :func:`destination_step` there; the
offline tools (``train``, ``replay``, ``backfill``) call the same two functions in event-time
order.

No currency and no clock in the code
    Every scale is learned from the training withdrawals by :func:`learn_params` and saved
    with the model (:class:`FeatureParams`): amounts enter only as log-ratios (to the
    population's median withdrawal, to the account's own median, whose prior is the median
    account's median and fades as ``n / (n + PRIOR_WEIGHT)``), times only as ratios (the
    time unit ``G`` is the median over accounts of their median gap between withdrawals; an
    account's usual gap starts at the population's and becomes its own). So multiplying
    every amount by a constant, or stretching every gap by a factor, leaves every model input
    unchanged up to float rounding (``tests/core/test_invariance.py``).

Three families of inputs (:data:`FAMILIES`), each scored by its own isolation forest
    * amount: above both the median account's median and the account's own; sustained
      excess over the last withdrawals; the mean excess of the account's earlier withdrawals
      in the long window (a takeover is a session of unusual withdrawals: one that follows
      unusual ones is suspect even when it is only moderately large); value sent to freshly
      used destinations within the usual gap;
    * frequency, against the account's own rhythm: rapid succession, burst within a quarter
      of the usual gap, busy long window, dormant account waking up, withdrawals above twice
      the median within the usual gap;
    * destination: a new destination weighed by how often this account uses new ones, the
      amount sent to it, fan-in (accounts paying the destination within ``G``, and how many
      of them pay it for the first time), and accounts paying it for the first time within
      the long window (a scam address gathers victims over days, a few a day); the counts
      weigh less as the destination ages: 1 / (1 + age / (:data:`ESTABLISHED_G` x ``G``)).

    Features-v6 (the earlier-excess and first-payers inputs, ``big_withdrawals`` moved to the
    frequency family) was chosen on the external benchmark's train part split in time and on
    the simulator; features-v7 measures amounts against the median account rather than the
    median withdrawal (busy accounts' large withdrawals set the latter) and takes the mean,
    not the sum, of the earlier excess (a busy account's many ordinary withdrawals added up);
    features-v9 weighs the destination's counts by its youth (established destinations'
    fan-in rises with everyone's activity: the benchmark's December doubled it).
    The variants measured are in ``docs/feature-design.md``, the figures of the shipped model
    in ``docs/evaluation.md``.

State is a plain JSON-able ``dict`` (it lives in a changelog-backed table), bounded per key.
Dict order is state: an account's known destinations and a destination's payers are kept
in order of last use (an LRU), which JSON (orjson) preserves; never serialize state with
sorted keys.

Late and out-of-order events (``requested_at`` older than the newest event already seen for
the key): windows are evaluated as of the late event's own time, over the history the state
still holds; its gap is to the previous withdrawal in time. The late event is inserted in
time order and counts for later events' windows.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from detector.events import Withdrawal

__all__ = [
    "ACCOUNT_STATE_VERSION",
    "DESTINATION_STATE_VERSION",
    "ESTABLISHED_G",
    "FAMILIES",
    "FEATURE_NAMES",
    "FEATURE_SCHEMA",
    "AccountFeatures",
    "DestinationFeatures",
    "FeatureParams",
    "Reason",
    "Structuring",
    "account_step",
    "apply_account_label",
    "apply_destination_label",
    "destination_step",
    "feature_vector",
    "learn_params",
    "reason_detail",
    "upgrade_account_state",
]

FEATURE_SCHEMA = "features-v9"  # bump when names, order or meaning change (models pin it)

# Design constants: dimensionless (counts, multiples of learned scales, natural-log units).
PRIOR_WEIGHT = 4.0  # weight, in withdrawals, of the population's prior in an account's baselines
EW_EVENTS = 64  # EW means (mean amount, usual gap, new-destination rate) remember ~64 events
MEDIAN_OF = 32  # the account's median amount is over its last 32 withdrawals
LONG_WINDOW_G = 5.0  # long window (busy, sustained excess, structuring) = 5 G
FAN_IN_WINDOW_G = 1.0  # fan-in window = 1 G
# A destination first paid this many G ago counts its payers at half weight (features-v9):
# an address that has received payments for weeks is an established service, whose fan-in
# grows with everyone's activity (a season, a market rally), not a fresh collection address.
ESTABLISHED_G = 30.0
BURST_OF_GAP = 0.25  # burst window = a quarter of the account's usual gap
GAP_FLOOR_G = 1e-3  # gaps below G / 1000 count as G / 1000
EXCESS_LN = 1.0  # sustained excess: ln(amount / median) above 1 (amount > e x median)
BIG_LN = math.log(2.0)  # a "big" withdrawal: more than 2 x the account's median
EXCESS_LAST = 5  # sustained excess over the last 5 withdrawals (within the long window)
NEW_BUCKETS = 8  # prior rate of new destinations by history length 0,1,2,3,4-7,8-15,16-31,32+
MAD_TO_SIGMA = 1.4826
MIN_LOG_SPREAD = 0.05  # floor of the learned within-account spread (ln units)
DUST = 1e-6  # amounts <= 0 count as this fraction of the population's median
# Size bounds per key (entries).
MAX_RECENT = 128  # recent withdrawals per account
MAX_KNOWN = 64  # destinations remembered per account (LRU)
MAX_PAYERS = 256  # accounts remembered per destination (LRU)

# The model's inputs, by family (columns of the model row, in this order).
FAMILIES: dict[str, tuple[str, ...]] = {
    "amount": (
        "amount_vs_history",  # min(ln amount / median account's median, ln amount / its median)
        "sustained_excess",  # sum over the last 5 of max(0, ln(amount / median) - 1)
        "recent_excess",  # mean max(0, amount_vs_history) of the earlier ones in the long window
        "to_fresh_destinations",  # ln(1 + value to fresh destinations in a usual gap / mean)
    ),
    "frequency": (
        "rapid_succession",  # ln(usual gap / gap since the previous withdrawal)
        "burst",  # ln(withdrawals within a quarter of the usual gap)
        "busy",  # ln(withdrawals in the long window / usual count in it)
        "dormant_account",  # ln(gap since the previous withdrawal / usual gap)
        "big_withdrawals",  # ln(1 + withdrawals > 2 x median within the usual gap)
    ),
    "destination": (
        "new_destination",  # -ln P(new) when the destination is new to the account, else 0
        "amount_to_new_destination",  # ln(amount / account median), >= 0, when new
        "fan_in_new",  # ln(1 + accounts paying it for the first time within G)
        "fan_in",  # ln(distinct accounts paying it within G)
        "new_payers",  # ln(1 + accounts paying it for the first time within the long window)
    ),
}
FEATURE_NAMES: tuple[str, ...] = tuple(name for names in FAMILIES.values() for name in names)


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    family: str
    detail: str


@dataclass(frozen=True)
class FeatureParams:
    """The scales the features measure against, learned from training data (saved with the
    model): nothing else in this module knows a currency or a clock."""

    log_amount_median: float  # ln of the median withdrawal (the population's)
    acct_log_median: float  # median over accounts of their median ln amount (prior)
    acct_log_mean: float  # median over accounts of ln(their mean amount) (prior)
    sigma_within: float  # typical spread of ln amounts within an account
    sigma_between: float  # spread of the accounts' median ln amounts
    unit_s: float  # G: median over accounts of their median gap (s)
    acct_gap_s: float  # median over accounts of their mean gap (s): prior usual gap
    new_curve: tuple[float, ...]  # P(new destination | history bucket) (NEW_BUCKETS values)
    new_rate: float  # pooled over history >= 1: prior of an account's new-destination rate

    def __post_init__(self) -> None:
        values = [*asdict(self).values()]
        flat = [*values[:-2], *self.new_curve, self.new_rate]
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in flat):
            raise ValueError("feature params must be finite numbers")
        if self.unit_s <= 0 or self.acct_gap_s <= 0 or self.sigma_within <= 0:
            raise ValueError("feature params: unit_s, acct_gap_s and sigma_within must be > 0")
        if self.sigma_between < 0 or len(self.new_curve) != NEW_BUCKETS:
            raise ValueError(f"feature params: need sigma_between >= 0, {NEW_BUCKETS} buckets")
        if not all(0 < p <= 1 for p in (*self.new_curve, self.new_rate)):
            raise ValueError("feature params: rates must be in (0, 1]")

    @property
    def amount_floor(self) -> float:
        """Amounts at or below this (zero, dust) count as this."""
        return math.exp(self.log_amount_median) * DUST

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["new_curve"] = list(self.new_curve)
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> FeatureParams:
        values = dict(doc)
        values["new_curve"] = tuple(float(x) for x in values["new_curve"])
        return cls(**values)


@dataclass(frozen=True)
class Structuring:
    """The structuring rule (settings, default off): withdrawals of an asset in
    ``[band * limit, limit)`` of that asset's units are counted over the long window; at
    ``count`` of them the withdrawal is held (``detector.pipeline.apply_structuring``)."""

    limits: Mapping[str, float]  # asset -> limit (asset units)
    band: float = 0.9
    count: int = 3


class AccountFeatures(NamedTuple):
    """What the account's own history says about one withdrawal: the raw numbers reasons
    quote, and the account stage's model inputs. A NamedTuple: built once per withdrawal on
    the hot path, and C-fast to construct."""

    value: float  # the amount the features use (USD when given)
    n: int  # the account's withdrawals before this one
    median: float  # the account's median amount (prior blended)
    population_median: float  # the median account's median amount (learned)
    mean_amount: float  # the account's EW mean amount (prior blended)
    usual_gap: float  # s
    gap: float  # s since the previous withdrawal (-1: none)
    count_burst: int  # withdrawals within a quarter of the usual gap, this one included
    count_long: int  # ... within the long window
    expected_long: float  # the usual count within the long window (>= 1)
    fresh_value: float  # value within the usual gap to destinations first used within it
    big_count: int  # withdrawals above 2 x the median within the usual gap
    new_destination: bool
    p_new: float  # the account's rate of new destinations (prior blended)
    amount_vs_history: float
    sustained_excess: float
    recent_excess: float  # the earlier withdrawals' mean excess in the long window (FAMILIES)
    to_fresh_destinations: float
    big_withdrawals: float
    rapid_succession: float
    burst: float
    busy: float
    dormant_account: float
    new_destination_surprise: float
    amount_to_new_destination: float
    # Policy inputs: withdrawals just under the asset's structuring limit in the long window
    # (0 when the rule is off); the account is in a cooldown after a fraud report; an
    # analyst released a withdrawal of this value to this destination recently (0: none).
    near_limit: int = 0
    cooldown: bool = False
    released_value: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """By field name, so a reader of another version matches fields by name."""
        return self._asdict()

    @classmethod
    def from_json(cls, values: Any) -> AccountFeatures:
        """From :meth:`to_json` of this or a later version (unknown fields are ignored)."""
        return cls(**{k: values[k] for k in cls._fields if k in values})

    @classmethod
    def read(cls, values: Any) -> AccountFeatures | None:
        """From :meth:`to_json`, or None when ``values`` lacks a field this version needs
        (features another feature schema computed: its model inputs mean something else)."""
        if not isinstance(values, dict) or not values.keys() >= _REQUIRED_ACCOUNT_FIELDS:
            return None
        return cls.from_json(values)

    @classmethod
    def blank(cls, value: float) -> AccountFeatures:
        """Features of a withdrawal of ``value`` that nothing is known about (all zero)."""
        zeros: dict[str, Any] = dict.fromkeys(_REQUIRED_ACCOUNT_FIELDS, 0)
        return cls(**{**zeros, "value": value})


_REQUIRED_ACCOUNT_FIELDS = frozenset(
    name for name in AccountFeatures._fields if name not in AccountFeatures._field_defaults
)


class DestinationFeatures(NamedTuple):
    fan_in_count: int  # distinct accounts paying the destination within G
    fan_in_new_count: int  # ... of which paid it for the first time (their own memory)
    new_payers_long: int  # accounts paying it for the first time within the long window
    # Feedback (labels): the destination was reported as fraud before this withdrawal.
    reported: bool = False
    reported_by: str = ""  # "<source> <label_id>" of the report
    # Time since the first payment to the destination that its state knows (s), and the
    # weight its counts get in the model, 1 / (1 + age / (ESTABLISHED_G x G)) (features-v9).
    age: float = 0.0
    youth: float = 1.0


@functools.lru_cache(maxsize=1 << 16)  # hot accounts and addresses repeat; 64k entries
def short_digest(text: str) -> str:
    """Short stable digest of an address or id: bounds state size whatever its length."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def _bucket(n: int) -> int:
    """History-length bucket of the new-destination prior: 0, 1, 2, 3, 4-7, 8-15, 16-31, 32+."""
    return n if n < 4 else min(n.bit_length() + 1, NEW_BUCKETS - 1)


# ---------------------------------------------------------------------- learning the scales


def learn_params(events: Sequence[Withdrawal]) -> FeatureParams:
    """The scales of :class:`FeatureParams` from training withdrawals (any order)."""
    if not events:
        raise ValueError("learning feature scales needs withdrawals")
    values = np.array([e.value for e in events], dtype=np.float64)
    positive = values[values > 0]
    log_med = float(np.median(np.log(positive))) if positive.size else 0.0
    floor = math.exp(log_med) * DUST
    by_account: dict[str, list[tuple[float, float, str]]] = {}
    for e in events:
        by_account.setdefault(e.account_id, []).append(
            (e.requested_at, max(e.value, floor), e.destination)
        )
    medians, means, within, median_gaps, mean_gaps = [], [], [], [], []
    hits = np.zeros(NEW_BUCKETS)
    totals = np.zeros(NEW_BUCKETS)
    for rows in by_account.values():
        rows.sort(key=lambda r: r[0])
        logs = np.log([r[1] for r in rows])
        means.append(float(np.log(np.mean(np.exp(logs)))))
        if len(logs) >= 3:
            medians.append(float(np.median(logs)))
            gaps = np.diff([r[0] for r in rows])
            median_gaps.append(float(np.median(gaps)))
            mean_gaps.append(float(np.mean(gaps)))
        if len(logs) >= 5:
            within.append(float(MAD_TO_SIGMA * np.median(np.abs(logs - np.median(logs)))))
        known: dict[str, None] = {}  # the same LRU memory the account state keeps
        for k, (_, _, destination) in enumerate(rows):
            bucket = _bucket(k)
            totals[bucket] += 1
            if destination in known:
                del known[destination]
            else:
                hits[bucket] += 1
            known[destination] = None
            if len(known) > MAX_KNOWN:
                del known[next(iter(known))]
    gaps_arr = np.array(median_gaps)
    positive_gaps = gaps_arr[gaps_arr > 0]
    unit = float(np.median(gaps_arr)) if gaps_arr.size else 0.0
    if unit <= 0:  # many same-instant withdrawals: the positive median gaps
        unit = float(np.median(positive_gaps)) if positive_gaps.size else 1.0
    meds = np.array(medians) if medians else np.array([log_med])
    acct_gap = float(np.median(mean_gaps)) if mean_gaps else unit
    return FeatureParams(
        log_amount_median=log_med,
        acct_log_median=float(np.median(meds)),
        acct_log_mean=float(np.median(means)),
        sigma_within=max(float(np.median(within)) if within else 0.5, MIN_LOG_SPREAD),
        sigma_between=float(MAD_TO_SIGMA * np.median(np.abs(meds - np.median(meds)))),
        unit_s=unit,
        acct_gap_s=acct_gap if acct_gap > 0 else unit,
        new_curve=tuple(float(x) for x in (hits + 1.0) / (totals + 2.0)),
        new_rate=float((hits[1:].sum() + 1.0) / (totals[1:].sum() + 2.0)),
    )


# ---------------------------------------------------------------------- stage 1: per account

ACCOUNT_STATE_VERSION = 3  # bump when the layout changes; upgrade_account_state reads older
DESTINATION_STATE_VERSION = 3  # destination_step reads older


def new_account_state(params: FeatureParams) -> dict[str, Any]:
    return {
        "v": ACCOUNT_STATE_VERSION,
        "n": 0,
        "t": [],  # recent withdrawal times, sorted (max(long window, usual gap), <= MAX_RECENT)
        "e": [],  # their excess: max(0, ln(amount / median) - 1)
        "b": [],  # 1 if the withdrawal was big (> 2 x median), else 0
        "f": [],  # its value if its destination was fresh (first used < usual gap before)
        "h": [],  # its max(0, amount_vs_history)
        "la": [],  # last MEDIAN_OF ln amounts, arrival order
        "ls": [],  # the same, sorted
        "m": math.exp(params.acct_log_mean),  # EW mean amount
        "g": params.acct_gap_s,  # EW usual gap (s)
        "q": params.new_rate,  # EW rate of new destinations
        "last": None,  # newest withdrawal time seen (expiry reads it)
        "k": {},  # destination digest -> first-use time; dict order = recency (LRU)
    }


def upgrade_account_state(state: dict[str, Any], params: FeatureParams) -> dict[str, Any]:
    """An account state written by an earlier version, in this version's layout (in place).

    Version 1 (features-v4) kept recent times, ln amounts and known destinations: they carry
    over (the account is not cold after an upgrade); what it did not keep starts at the
    population's priors. Its dedupe memory (``seen``) held features of the old layout and is
    dropped. Version 2 (features-v5) lacks the recent withdrawals' excess (``h``): it starts
    at zero for the withdrawals the state holds; its dedupe memory is dropped too (features of
    the old layout). A state of a *newer* version is used as it is.
    """
    version = state.get("v", 0)
    if version >= ACCOUNT_STATE_VERSION:
        return state
    if version == 2:
        state["h"] = [0.0] * len(state["t"])
        state.pop("seen", None)
        state["v"] = ACCOUNT_STATE_VERSION
        return state
    fresh = new_account_state(params)
    times = sorted(float(t) for t in state.get("ts", []))[-MAX_RECENT:]
    logs = [float(x) for x in state.get("la", [])][-MEDIAN_OF:]
    n = int(state.get("n", len(times)))
    first, last = state.get("first"), state.get("last")
    fresh.update(
        n=n,
        t=times,
        e=[0.0] * len(times),
        b=[0] * len(times),
        f=[0.0] * len(times),
        h=[0.0] * len(times),
        la=logs,
        ls=sorted(logs),
        last=last,
        k={
            str(d): float(t)
            for d, t in sorted(state.get("known", {}).items(), key=lambda kv: kv[1])
        },
    )
    if logs:
        fresh["m"] = float(np.mean(np.exp(logs)))
    if n >= 2 and first is not None and last is not None and last > first:
        fresh["g"] = (float(last) - float(first)) / (n - 1)
    for key in ("cool", "rel"):
        if key in state:
            fresh[key] = state[key]
    state.clear()
    state.update(fresh)
    return state


def account_step(
    state: dict[str, Any] | None,
    event: Withdrawal,
    params: FeatureParams,
    structuring: Structuring | None = None,
) -> tuple[dict[str, Any], AccountFeatures]:
    """Features of ``event`` against the account's history, and the updated state.

    ``state`` is updated in place and returned (the caller writes it back to its table).
    """
    st = new_account_state(params) if state is None else upgrade_account_state(state, params)
    log = math.log
    t = event.requested_at
    x = event.value
    floor = params.amount_floor
    if not x > floor:  # also catches NaN
        x = floor
    lx = log(x)
    n: int = st["n"]
    unit = params.unit_s

    # Amount against the account's median; a cold account's deviations count less (shrink).
    ls: list[float] = st["ls"]
    k = len(ls)
    w = n / (n + PRIOR_WEIGHT)
    if k:
        mid = k >> 1
        own = ls[mid] if k & 1 else 0.5 * (ls[mid - 1] + ls[mid])
        med = w * own + (1.0 - w) * params.acct_log_median
    else:
        med = params.acct_log_median
    sw = params.sigma_within
    sb = (1.0 - w) * params.sigma_between
    shrink = sw / math.sqrt(sw * sw + sb * sb)
    r = (lx - med) * shrink  # ln(amount / median), in warm-account units
    vs_population = lx - params.acct_log_median  # against the median account, not withdrawal
    excess = r - EXCESS_LN if r > EXCESS_LN else 0.0
    vs_history = vs_population if vs_population < r else r
    big = 1 if r > BIG_LN else 0

    # Windows (bisect: a late event sees its own window).
    ts: list[float] = st["t"]
    hi = bisect.bisect_right(ts, t)
    usual_gap: float = st["g"]
    long_window = LONG_WINDOW_G * unit
    lo_long = bisect.bisect_right(ts, t - long_window, 0, hi)
    lo_gap = bisect.bisect_right(ts, t - usual_gap, 0, hi)
    lo_burst = bisect.bisect_right(ts, t - BURST_OF_GAP * usual_gap, lo_gap, hi)
    count_long = hi - lo_long + 1
    expected = long_window / usual_gap
    expected = max(expected, 1.0)
    count_burst = hi - lo_burst + 1
    last = st["last"]
    prev = ts[hi - 1] if hi else (last if last is not None and last <= t else None)
    gap_floor = GAP_FLOOR_G * unit
    if prev is None:
        gap = -1.0
        rapid = dormant = 0.0
    else:
        gap = t - prev
        rapid = log(usual_gap / (gap if gap > gap_floor else gap_floor))
        dormant = -rapid

    # Destinations, from the account's side.
    known: dict[str, float] = st["k"]
    dkey = short_digest(event.destination)
    first_use = known.get(dkey)
    is_new = first_use is None
    if first_use is None:
        first_use = t
    p_new = w * st["q"] + (1.0 - w) * params.new_curve[_bucket(n)]
    fresh_now = x if t - first_use < usual_gap else 0.0
    fresh_value = sum(st["f"][lo_gap:hi]) + fresh_now
    mean_amount: float = st["m"]
    big_count = sum(st["b"][lo_gap:hi]) + big
    lo_last = hi - (EXCESS_LAST - 1)
    sustained = sum(st["e"][lo_last if lo_last > lo_long else lo_long : hi]) + excess
    recent_excess = sum(st["h"][lo_long:hi]) / (hi - lo_long) if hi > lo_long else 0.0

    near_limit = 0
    limit = None if structuring is None else structuring.limits.get(event.asset)
    if limit is not None and structuring is not None:
        near: list[float] = st.setdefault("near", [])
        amount = float(event.amount)
        is_near = structuring.band * limit <= amount < limit
        near_limit = (
            bisect.bisect_right(near, t) - bisect.bisect_right(near, t - long_window) + is_near
        )
        if is_near:
            bisect.insort(near, t)
            if len(near) > MAX_RECENT:
                del near[0]

    cooldown = st.get("cool", 0.0) > t
    released = st.get("rel", {}).get(dkey)
    released_value = released[1] if released is not None and released[0] > t else 0.0

    # Positional: this runs once per withdrawal on the hot path (field order as declared).
    feats = AccountFeatures(
        x,
        n,
        math.exp(med),
        math.exp(params.acct_log_median),
        mean_amount,
        usual_gap,
        gap,
        count_burst,
        count_long,
        expected,
        fresh_value,
        big_count,
        is_new,
        p_new,
        vs_history,
        sustained,
        recent_excess,
        math.log1p(fresh_value / mean_amount) * shrink,
        log(1 + big_count),
        rapid,
        log(count_burst),
        log(count_long / expected),
        dormant,
        -log(p_new) if is_new else 0.0,
        (r if r > 0.0 else 0.0) if is_new else 0.0,
        near_limit,
        cooldown,
        released_value,
    )

    # Update in place: insert in time order, keep the windows' history, keep lists bounded.
    ts.insert(hi, t)
    st["e"].insert(hi, excess)
    st["b"].insert(hi, big)
    st["f"].insert(hi, fresh_now)
    st["h"].insert(hi, vs_history if vs_history > 0.0 else 0.0)
    keep = long_window if long_window > usual_gap else usual_gap
    cut = bisect.bisect_right(ts, ts[-1] - keep)
    if len(ts) - cut > MAX_RECENT:
        cut = len(ts) - MAX_RECENT
    if cut:
        del ts[:cut], st["e"][:cut], st["b"][:cut], st["f"][:cut], st["h"][:cut]
    la: list[float] = st["la"]
    la.append(lx)
    bisect.insort(ls, lx)
    if len(la) > MEDIAN_OF:
        del ls[bisect.bisect_left(ls, la.pop(0))]
    a = 1.0 / min(n + 1 + PRIOR_WEIGHT, EW_EVENTS)  # the prior's weight fades; then EW
    st["m"] = mean_amount + a * (x - mean_amount)
    if prev is not None:
        g = usual_gap + (gap - usual_gap) / min(n + PRIOR_WEIGHT, EW_EVENTS)
        st["g"] = g if g > gap_floor else gap_floor
    if n:  # the first destination is new by definition: no evidence of a habit
        st["q"] += a * ((1.0 if is_new else 0.0) - st["q"])
    if is_new:
        known[dkey] = t
        if len(known) > MAX_KNOWN:
            del known[next(iter(known))]
    else:  # most recently used last; the first-use time stays
        del known[dkey]
        known[dkey] = first_use
    st["n"] = n + 1
    if last is None or t > last:
        st["last"] = t
    return st, feats


# ---------------------------------------------------------------------- stage 2: per destination


def new_destination_state() -> dict[str, Any]:
    # "f": the first payment to the destination the state has seen (epoch s; None before any)
    return {"v": DESTINATION_STATE_VERSION, "a": {}, "L": [], "N": [], "f": None}


def destination_step(
    state: dict[str, Any] | None, event: Withdrawal, acc: AccountFeatures, params: FeatureParams
) -> tuple[dict[str, Any], DestinationFeatures]:
    """Fan-in of ``event.destination`` over (t - G, t]: distinct accounts paying it, and how
    many of them paid it for the first time (by the account's own memory) in the window.

    State: ``a`` maps an account digest to [latest payment, latest first-time payment or 0],
    in order of latest payment (re-inserted on every payment); ``L`` and ``N`` hold the same
    times sorted (window counts are bisects). At most :data:`MAX_PAYERS` accounts: the least
    recently paying one goes first. ``f``: the first payment the destination received (its
    age weighs the counts in the model: :func:`feature_vector`). ``state`` is updated in
    place and returned.
    """
    st = new_destination_state() if state is None else state
    version = st.get("v", 1)
    if version < DESTINATION_STATE_VERSION:
        if version < 2:  # v1: same lists, payers in any order
            st["a"] = dict(sorted(st["a"].items(), key=lambda kv: kv[1][0]))
        # v2 did not keep its first payment: the oldest one it still holds is the best
        # bound (an upgraded destination is at least that old).
        st["f"] = min(st["L"]) if st["L"] else None
        st["v"] = DESTINATION_STATE_VERSION
    payers: dict[str, list[float]] = st["a"]
    lasts: list[float] = st["L"]
    news: list[float] = st["N"]
    t = event.requested_at
    first_paid = st.get("f")
    if first_paid is None or t < first_paid:  # a late payment can be the first one
        first_paid = st["f"] = t
    age = t - first_paid
    youth = 1.0 / (1.0 + age / (ESTABLISHED_G * params.unit_s))
    akey = short_digest(event.account_id)
    seen = payers.pop(akey, None)
    if seen is None:
        seen = [t, 0.0]
        bisect.insort(lasts, t)
    elif t > seen[0]:
        del lasts[bisect.bisect_left(lasts, seen[0])]
        bisect.insort(lasts, t)
        seen[0] = t
    payers[akey] = seen  # most recent payer last
    if acc.new_destination and t > seen[1]:
        if seen[1]:
            del news[bisect.bisect_left(news, seen[1])]
        bisect.insort(news, t)
        seen[1] = t
    since = t - FAN_IN_WINDOW_G * params.unit_s
    fan_in = len(lasts) - bisect.bisect_right(lasts, since)
    fan_in_new = len(news) - bisect.bisect_right(news, since)
    new_long = len(news) - bisect.bisect_right(news, t - LONG_WINDOW_G * params.unit_s)
    if len(payers) > MAX_PAYERS:
        last_t, first = payers.pop(next(iter(payers)))
        del lasts[bisect.bisect_left(lasts, last_t)]
        if first:
            del news[bisect.bisect_left(news, first)]
    report = st.get("rep")
    # Every withdrawal decided after the report, until it expires: also one requested just
    # before it but decided after (in a backlog), as a held payment to a known scam must be.
    if report is not None and t < report[0]:
        report_by = f"{report[2]} {report[1]}"
        return st, DestinationFeatures(fan_in, fan_in_new, new_long, True, report_by, age, youth)
    return st, DestinationFeatures(fan_in, fan_in_new, new_long, False, "", age, youth)


def feature_vector(acc: AccountFeatures, dst: DestinationFeatures) -> list[float]:
    """The model's input row, in :data:`FEATURE_NAMES` order (families concatenated); the
    destination's counts weighted by its youth (an established destination's count less)."""
    youth = dst.youth
    fan_in = dst.fan_in_count * youth
    return [
        acc.amount_vs_history,
        acc.sustained_excess,
        acc.recent_excess,
        acc.to_fresh_destinations,
        acc.rapid_succession,
        acc.burst,
        acc.busy,
        acc.dormant_account,
        acc.big_withdrawals,
        acc.new_destination_surprise,
        acc.amount_to_new_destination,
        math.log1p(dst.fan_in_new_count * youth),
        math.log(fan_in) if fan_in > 1.0 else 0.0,
        math.log1p(dst.new_payers_long * youth),
    ]


# ---------------------------------------------------------------------- labels


def apply_account_label(
    state: dict[str, Any] | None,
    label: Any,
    params: FeatureParams,
    *,
    cooldown_s: float,
    release_s: float,
) -> dict[str, Any]:
    """An account's state after a label about it (``detector.labels.Label``), in place.

    ``fraud``: the account is compromised: its withdrawals are held for ``cooldown_s`` from
    the report. ``legit`` (an analyst released a held withdrawal): its destination becomes
    known, and withdrawals to it up to that amount are not held again for ``release_s``.
    """
    st = new_account_state(params) if state is None else upgrade_account_state(state, params)
    t = float(label.reported_at)
    if label.label == "fraud":
        st["cool"] = max(float(st.get("cool", 0.0)), t + cooldown_s)
        return st
    st.pop("cool", None)  # an analyst vouched for the account
    if label.destination is not None:
        dkey = short_digest(label.destination)
        known: dict[str, float] = st["k"]
        first_use = known.pop(dkey, t)
        known[dkey] = first_use
        if len(known) > MAX_KNOWN:
            del known[next(iter(known))]
        seen = st.get("seen", {}).get(label.withdrawal_id) if label.withdrawal_id else None
        value = float(seen[1]) if seen is not None else 0.0  # seen: [t, *features], value first
        rel = st.setdefault("rel", {})
        rel[dkey] = [t + release_s, max(value, rel.get(dkey, [0.0, 0.0])[1])]
        for key in [k for k, v in rel.items() if v[0] <= t]:
            del rel[key]
    return st


def apply_destination_label(
    state: dict[str, Any] | None, label: Any, *, report_s: float
) -> dict[str, Any]:
    """A destination's state after a label naming it, in place: ``fraud`` reports it (later
    withdrawals to it are refused or held for ``report_s``), ``legit`` clears a report."""
    st = new_destination_state() if state is None else state
    t = float(label.reported_at)
    if label.label == "fraud":
        st["rep"] = [t + report_s, label.label_id, label.source, t]
    else:
        st.pop("rep", None)
    return st


# ---------------------------------------------------------------------- reasons


def reason_detail(
    feature: str, acc: AccountFeatures, dst: DestinationFeatures, family: str = ""
) -> Reason:
    """A human sentence for an input that drove the score, from the raw numbers behind it."""
    family = family or next((f for f, names in FAMILIES.items() if feature in names), "")
    median = acc.median if acc.median > 0 else 1e-300
    if feature == "amount_vs_history":
        text = (
            f"amount {acc.value:,.2f} is {acc.value / median:,.1f}x the account's median "
            f"({acc.median:,.2f} over {acc.n} withdrawals) and "
            f"{acc.value / acc.population_median:,.1f}x the typical account's median"
        )
    elif feature == "sustained_excess":
        text = (
            f"the last withdrawals are well above the account's median "
            f"(excess {acc.sustained_excess:.2f} in ln units over the last {EXCESS_LAST})"
        )
    elif feature == "recent_excess":
        text = (
            "earlier withdrawals of the account in the long window were unusually large "
            f"(their mean excess over its and the typical amounts: {acc.recent_excess:.2f} in ln "
            "units)"
        )
    elif feature == "to_fresh_destinations":
        text = (
            f"{acc.fresh_value:,.2f} sent to newly used destinations within the usual gap "
            f"({_duration(acc.usual_gap)}), {acc.fresh_value / acc.mean_amount:,.1f}x the "
            "account's mean withdrawal"
        )
    elif feature == "big_withdrawals":
        text = (
            f"{acc.big_count} withdrawals above 2x the account's median within the usual gap "
            f"({_duration(acc.usual_gap)})"
        )
    elif feature == "rapid_succession":
        text = (
            f"{_duration(max(acc.gap, 0.0))} since the previous withdrawal, usual gap "
            f"{_duration(acc.usual_gap)}"
        )
    elif feature == "burst":
        text = (
            f"{acc.count_burst} withdrawals within a quarter of the usual gap "
            f"({_duration(acc.usual_gap / 4)})"
        )
    elif feature == "busy":
        text = f"{acc.count_long} withdrawals in the long window, usually {acc.expected_long:.1f}"
    elif feature == "dormant_account":
        text = (
            f"first withdrawal in {_duration(max(acc.gap, 0.0))}, usual gap "
            f"{_duration(acc.usual_gap)}"
        )
    elif feature == "new_destination":
        text = (
            f"destination never used by the account (new ones are {acc.p_new:.0%} of its "
            f"withdrawals; history {acc.n})"
        )
    elif feature == "amount_to_new_destination":
        text = (
            f"{acc.value:,.2f} ({acc.value / median:,.1f}x the account's median) to a "
            "destination it never used"
        )
    elif feature == "fan_in_new":
        text = (
            f"{dst.fan_in_new_count} accounts paid this destination for the first time "
            f"within the fan-in window; {_first_paid(dst)}"
        )
    elif feature == "new_payers":
        text = (
            f"{dst.new_payers_long} accounts paid this destination for the first time within the "
            f"long window; {_first_paid(dst)}"
        )
    elif feature == "fan_in":
        text = (
            f"{dst.fan_in_count} distinct accounts paid this destination within the fan-in "
            f"window; {_first_paid(dst)}"
        )
    else:
        raise ValueError(f"no reason for unknown feature {feature!r}")
    return Reason(feature, family, text)


def _first_paid(dst: DestinationFeatures) -> str:
    return f"first paid {_duration(dst.age)} ago" if dst.age > 0 else "first paid just now"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
