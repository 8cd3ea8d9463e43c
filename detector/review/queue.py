"""The review queue's state: a plain function of the records read from Kafka.

Three inputs, applied in whatever order they arrive (the service reads three topics at once,
so a verdict can come before its withdrawal, a review decision before its verdict):

* :meth:`ReviewQueue.apply_withdrawal`: a withdrawal (``withdrawals``), kept for context (the
  account's recent withdrawals, the destination's fan-in) and joined to its held verdict;
* :meth:`ReviewQueue.apply_verdict`: a verdict (``decisions``); a ``delay`` enters the queue
  unless a review decision already resolved it;
* :meth:`ReviewQueue.apply_review`: a review decision (``review-decisions``): the withdrawal
  leaves the queue for good.

Every input is idempotent (redelivered records change nothing), so a restarted service that
reads the same look-back again rebuilds the same queue. Memory is bounded by the constants
below: with the defaults, at most ~50,000 accounts x 10 withdrawals and 50,000 destinations x
200 payers of context, whatever the traffic; held withdrawals older than the look-back leave
the queue (:meth:`ReviewQueue.expire`) exactly as a restarted service would not read them.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from detector.events import Withdrawal
from detector.review.records import ReviewDecision, VerdictRecord

__all__ = [
    "FAN_IN_WINDOW_S",
    "FanIn",
    "Filters",
    "HeldItem",
    "QueueStats",
    "Resolution",
    "ReviewQueue",
    "apply_all",
]

_V = TypeVar("_V")

# Fan-in counts distinct accounts paying an address within a day, the worker's fan-in window
# (detector.features), so the page and the model speak of the same number (seconds).
FAN_IN_WINDOW_S = 86400.0
# Accounts whose recent withdrawals are kept (least recently active ones are forgotten first),
# and how many withdrawals each: what an analyst reads next to a held one.
MAX_ACCOUNTS = 50_000
RECENT_PER_ACCOUNT = 10
# Destinations whose payers are kept (least recently paid forgotten first), and payers each:
# far above any honest address's daily fan-in; a mule address shows as "200+".
MAX_DESTINATIONS = 50_000
MAX_PAYERS = 200
# Verdict kinds remembered for the account-history column (withdrawal ids).
MAX_VERDICT_KINDS = 200_000
# Resolved withdrawal ids remembered, so a verdict read after its review decision (or a
# redelivered one) never re-enters the queue. Review decisions are ~1% of traffic.
MAX_RESOLVED = 200_000
# Held withdrawals kept; beyond this the oldest go (they are long overdue, and the overdue
# alert has been firing): a bound, not an expected size.
MAX_HELD = 100_000


@dataclass(slots=True)
class HeldItem:
    """A withdrawal held for review: its verdict and, once seen, the withdrawal itself."""

    verdict: VerdictRecord
    withdrawal: Withdrawal | None = None

    @property
    def withdrawal_id(self) -> str:
        return self.verdict.withdrawal_id

    @property
    def account_id(self) -> str:
        return self.verdict.account_id

    def age_s(self, now: float) -> float:
        """Seconds since the worker held it (0 if its clock ran ahead of ours)."""
        return max(0.0, now - self.verdict.decided_at)

    def overdue(self, now: float) -> bool:
        """Past its hold time without a review decision."""
        return now >= self.verdict.due_at


@dataclass(frozen=True, slots=True)
class Resolution:
    """How a withdrawal left the queue."""

    review_id: str
    decision: str
    reviewer: str
    reviewed_at: float
    reviewed_at_text: str


@dataclass(frozen=True, slots=True)
class FanIn:
    """Distinct accounts that paid ``destination`` from ``since`` on (most recent first)."""

    destination: str
    since: float
    accounts: tuple[str, ...]
    capped: bool  # more payers than MAX_PAYERS were seen: the count is a lower bound

    @property
    def count(self) -> int:
        return len(self.accounts)


@dataclass(frozen=True, slots=True)
class QueueStats:
    depth: int
    oldest_age_s: float
    overdue: int


@dataclass(frozen=True, slots=True)
class Filters:
    """The page's filters; ``None`` means "any". Amounts compare :attr:`Withdrawal.value`
    (USD when the withdrawal carries ``amount_usd``, else the asset amount: what the model
    scores). Asset and amount filters leave out items whose withdrawal was not seen yet."""

    reason: str | None = None
    asset: str | None = None
    min_amount: float | None = None
    max_amount: float | None = None

    @property
    def active(self) -> bool:
        return any(v is not None for v in dataclasses.astuple(self))

    def matches(self, item: HeldItem) -> bool:
        if self.reason is not None and self.reason not in item.verdict.reason_codes:
            return False
        if self.asset is None and self.min_amount is None and self.max_amount is None:
            return True
        w = item.withdrawal
        if w is None:
            return False
        if self.asset is not None and w.asset.casefold() != self.asset.casefold():
            return False
        if self.min_amount is not None and w.value < self.min_amount:
            return False
        return self.max_amount is None or w.value <= self.max_amount

    @classmethod
    def parse(cls, query: dict[str, str]) -> tuple[Filters, list[str]]:
        """Filters from query parameters (``reason``, ``asset``, ``min_amount``,
        ``max_amount``); unreadable values are ignored and reported."""
        problems: list[str] = []

        def text(name: str) -> str | None:
            value = query.get(name, "").strip()
            return value[:128] or None

        def number(name: str) -> float | None:
            raw = text(name)
            if raw is None:
                return None
            try:
                value = float(raw.replace(",", "").replace("_", ""))
            except ValueError:
                value = math.nan
            if not math.isfinite(value) or value < 0:
                problems.append(f"{name} must be a number >= 0 (ignored)")
                return None
            return value

        return (
            cls(text("reason"), text("asset"), number("min_amount"), number("max_amount")),
            problems,
        )


class ReviewQueue:
    """Held withdrawals awaiting review, and the context an analyst reads next to them."""

    def __init__(self, *, lookback_s: float, fan_in_window_s: float = FAN_IN_WINDOW_S) -> None:
        self.lookback_s = lookback_s
        self.fan_in_window_s = fan_in_window_s
        self._held: dict[str, HeldItem] = {}
        self._resolved: OrderedDict[str, Resolution] = OrderedDict()
        self._accounts: OrderedDict[str, deque[Withdrawal]] = OrderedDict()
        # destination -> {account: latest requested_at}; plus which destinations overflowed
        self._payers: OrderedDict[str, OrderedDict[str, float]] = OrderedDict()
        self._capped: set[str] = set()
        self._kinds: OrderedDict[str, str] = OrderedDict()

    # Inputs --------------------------------------------------------------------------------

    def apply_withdrawal(self, withdrawal: Withdrawal) -> None:
        """Remember a withdrawal (without its metadata) and join it to its held verdict."""
        w = dataclasses.replace(withdrawal, metadata=None) if withdrawal.metadata else withdrawal
        recent = self._accounts.get(w.account_id)
        if recent is None:
            recent = self._accounts[w.account_id] = deque(maxlen=RECENT_PER_ACCOUNT)
            _bound(self._accounts, MAX_ACCOUNTS)
        else:
            self._accounts.move_to_end(w.account_id)
        if all(seen.withdrawal_id != w.withdrawal_id for seen in recent):
            recent.append(w)
            self._add_payer(w)
        item = self._held.get(w.withdrawal_id)
        if item is not None and item.withdrawal is None and item.account_id == w.account_id:
            item.withdrawal = w

    def apply_verdict(self, verdict: VerdictRecord) -> None:
        """Remember the verdict's kind; a ``delay`` joins the queue unless already resolved."""
        wid = verdict.withdrawal_id
        self._kinds[wid] = verdict.verdict
        self._kinds.move_to_end(wid)
        _bound(self._kinds, MAX_VERDICT_KINDS)
        if not verdict.held or wid in self._held or wid in self._resolved:
            return
        self._held[wid] = HeldItem(verdict, self._find(verdict.account_id, wid))
        if len(self._held) > MAX_HELD:
            oldest = min(self._held.values(), key=_order)
            del self._held[oldest.withdrawal_id]

    def apply_review(self, decision: ReviewDecision) -> None:
        """A final decision: the withdrawal leaves the queue (the first decision is kept)."""
        wid = decision.withdrawal_id
        self._held.pop(wid, None)
        if wid not in self._resolved:
            self._resolved[wid] = Resolution(
                decision.review_id,
                decision.decision,
                decision.reviewer,
                decision.reviewed_at,
                decision.reviewed_at_text,
            )
            _bound(self._resolved, MAX_RESOLVED)

    def expire(self, now: float) -> int:
        """Forget held withdrawals and resolutions older than the look-back (what a restarted
        service would not read again); returns how many held withdrawals left."""
        horizon = now - self.lookback_s
        gone = [wid for wid, item in self._held.items() if item.verdict.decided_at < horizon]
        for wid in gone:
            del self._held[wid]
        while self._resolved:
            wid, resolution = next(iter(self._resolved.items()))
            if resolution.reviewed_at >= horizon:
                break
            del self._resolved[wid]
        return len(gone)

    # Queries -------------------------------------------------------------------------------

    def pending(self, filters: Filters | None = None) -> list[HeldItem]:
        """Held withdrawals awaiting review, oldest hold first, that match ``filters``."""
        items = sorted(self._held.values(), key=_order)
        return items if filters is None else [i for i in items if filters.matches(i)]

    def get(self, withdrawal_id: str) -> HeldItem | None:
        return self._held.get(withdrawal_id)

    def resolution(self, withdrawal_id: str) -> Resolution | None:
        return self._resolved.get(withdrawal_id)

    def recent_withdrawals(self, account_id: str) -> list[tuple[Withdrawal, str | None]]:
        """The account's last withdrawals seen, newest first, with their verdicts if known."""
        recent = sorted(self._accounts.get(account_id, ()), key=lambda w: -w.requested_at)
        return [(w, self._kinds.get(w.withdrawal_id)) for w in recent]

    def fan_in(self, destination: str, at: float) -> FanIn:
        """Distinct accounts that paid ``destination`` from ``fan_in_window_s`` before ``at``
        (the held withdrawal's requested_at) on, later payments included."""
        since = at - self.fan_in_window_s
        payers = self._payers.get(destination, OrderedDict())
        recent = sorted(((t, account) for account, t in payers.items() if t >= since), reverse=True)
        return FanIn(destination, since, tuple(a for _, a in recent), destination in self._capped)

    def stats(self, now: float) -> QueueStats:
        items = self._held.values()
        oldest = max((i.age_s(now) for i in items), default=0.0)
        return QueueStats(len(self._held), oldest, sum(1 for i in items if i.overdue(now)))

    def reasons(self) -> list[str]:
        """Reason codes of the held withdrawals (the reason filter's choices)."""
        return sorted({code for i in self._held.values() for code in i.verdict.reason_codes})

    def assets(self) -> list[str]:
        return sorted({i.withdrawal.asset for i in self._held.values() if i.withdrawal})

    def __len__(self) -> int:
        return len(self._held)

    # Internals -----------------------------------------------------------------------------

    def _find(self, account_id: str, withdrawal_id: str) -> Withdrawal | None:
        for w in self._accounts.get(account_id, ()):
            if w.withdrawal_id == withdrawal_id:
                return w
        return None

    def _add_payer(self, w: Withdrawal) -> None:
        payers = self._payers.get(w.destination)
        if payers is None:
            payers = self._payers[w.destination] = OrderedDict()
            if len(self._payers) > MAX_DESTINATIONS:
                old, _ = self._payers.popitem(last=False)
                self._capped.discard(old)
        else:
            self._payers.move_to_end(w.destination)
        latest = max(payers.get(w.account_id, w.requested_at), w.requested_at)
        payers[w.account_id] = latest
        payers.move_to_end(w.account_id)
        if len(payers) > MAX_PAYERS:
            # forget the payer seen longest ago (by event time)
            del payers[min(payers, key=payers.__getitem__)]
            self._capped.add(w.destination)


def _order(item: HeldItem) -> tuple[float, float, str]:
    """Oldest hold first; ties by request time, then id (a stable order for the page)."""
    requested = item.withdrawal.requested_at if item.withdrawal else item.verdict.decided_at
    return (item.verdict.decided_at, requested, item.withdrawal_id)


def _bound(mapping: OrderedDict[str, _V], limit: int) -> None:
    while len(mapping) > limit:
        mapping.popitem(last=False)


def apply_all(queue: ReviewQueue, records: Iterable[object]) -> None:
    """Apply records of any of the three kinds in order (tests and tools)."""
    for record in records:
        if isinstance(record, Withdrawal):
            queue.apply_withdrawal(record)
        elif isinstance(record, VerdictRecord):
            queue.apply_verdict(record)
        elif isinstance(record, ReviewDecision):
            queue.apply_review(record)
        else:
            raise TypeError(f"not a queue input: {type(record).__name__}")
