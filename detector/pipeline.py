"""The decision logic minus Kafka: one composition for the worker, ``replay`` and ``train``.

Stage 1 (keyed by account): :meth:`Stages.account` -> :class:`AccountFeatures`.
Stage 2 (keyed by destination): :meth:`Stages.destination` -> the model row.
Stage 3 (micro-batch): :meth:`Decider.decide` scores rows together and builds verdicts.

:class:`Stages` takes its two stores as mappings: the worker passes its Faust tables, the
offline tools plain dicts (:class:`FeatureState`). The worker forwards stage 1's output to
stage 2 through Kafka (``detector.stream.wire``: versioned, batched, read by field name).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from detector.events import Withdrawal, format_rfc3339
from detector.features import (
    FEATURE_NAMES,
    AccountFeatures,
    DestinationFeatures,
    FeatureParams,
    Structuring,
    account_step,
    apply_account_label,
    apply_destination_label,
    destination_step,
    feature_vector,
    reason_detail,
    upgrade_account_state,
)
from detector.model import Model
from detector.policy import MAX_REASONS, Verdict

__all__ = [
    "DEDUPE_WINDOW_S",
    "MAX_SEEN",
    "SCHEMA_VERSION",
    "SCORE_DECIMALS",
    "UNSCORED_REASON",
    "Decider",
    "FeatureState",
    "Feedback",
    "Pending",
    "Repeat",
    "Stages",
    "Store",
    "apply_feedback",
    "apply_structuring",
    "feature_rows",
    "make_verdict",
    "reason_json",
    "remember",
    "verdict_text",
]

SCHEMA_VERSION = 1  # verdict contract version (architecture.md)
# How long a withdrawal_id is remembered: by the account (s of its own withdrawal times
# before its newest one) and by stage 2's verdicts on record (s of wall clock since decided).
# A redelivery or a producer's retry within it gets the identical verdict, changes no state.
DEDUPE_WINDOW_S = 3600.0
# Most withdrawal_ids one account remembers (a market maker's hour fits).
MAX_SEEN = 64
_COMPACT = 2  # a compacted dedupe entry: [time, value] (detector.features reads the value)
SCORE_DECIMALS = 6  # scores are published rounded: stable JSON, identical online and offline


class Repeat(NamedTuple):
    """Stage 1's answer for a withdrawal_id the account forwarded in an earlier batch (the
    worker's dedupe memory keeps only the time and the value of those, see :func:`remember`):
    forward it again without features; stage 2 publishes the verdict on record for it (the
    first copy is ahead of it in the same partition, so it is decided first)."""


REPEAT = Repeat()


class Pending(NamedTuple):
    """A withdrawal with its features, waiting to be scored.

    ``decided``: the verdict document (JSON text) already published for this withdrawal_id,
    when this is a redelivery or a duplicate: it is published again as it is, unscored.
    ``unscored``: its account features came from another feature schema (a worker of
    another release, during a rolling deploy): it is held for review, not scored.
    """

    event: Withdrawal
    acc: AccountFeatures
    dst: DestinationFeatures
    row: list[float]
    decided: str | None = None
    unscored: bool = False


class Store(Protocol):
    """What :class:`Stages` needs of a state store: a dict, or a Faust table."""

    def get(self, key: str, /) -> Any: ...

    def __setitem__(self, key: str, value: Any, /) -> None: ...


@dataclass(frozen=True)
class Feedback:
    """What labels do to later withdrawals (settings: DETECTOR_FEEDBACK_*)."""

    cooldown_s: float = 86400.0  # an account reported compromised is held this long
    report_s: float = 30 * 86400.0  # a destination reported as fraud stays reported
    release_s: float = 7 * 86400.0  # an analyst's release keeps that pattern unheld
    reported_verdict: Verdict = "refuse"  # for withdrawals to a reported destination
    release_margin: float = 1.5  # a released pattern covers amounts up to this multiple


# Verdicts from mildest to strongest (a feedback rule can only make a verdict stronger).
_STRENGTH = {"allow": 0, "delay": 1, "refuse": 2}


def apply_feedback(
    verdict: Verdict, reasons: list[dict[str, str]], item: Pending, feedback: Feedback
) -> tuple[Verdict, list[dict[str, str]]]:
    """The model's verdict after what labels said about the destination and the account."""
    acc, dst = item.acc, item.dst
    if dst.reported:
        first = {
            "code": "reported_destination",
            "family": "feedback",
            "detail": f"destination reported as fraud ({dst.reported_by})",
        }
        stronger = max(verdict, feedback.reported_verdict, key=_STRENGTH.__getitem__)
        return stronger, [first, *reasons][:MAX_REASONS]
    if acc.cooldown:
        first = {
            "code": "account_cooldown",
            "family": "feedback",
            "detail": "account reported compromised: its withdrawals are held for review",
        }
        return max(verdict, "delay", key=_STRENGTH.__getitem__), [first, *reasons][:MAX_REASONS]
    if (
        acc.released_value
        and verdict != "allow"
        and acc.value <= acc.released_value * feedback.release_margin
    ):
        return "allow", []  # an analyst released this pattern (destination, amount) lately
    return verdict, reasons


class Stages:
    """The feature steps composed over three stores, idempotent by withdrawal_id.

    * ``accounts`` (per account): the account's history, and the withdrawal_ids it has
      seen within the dedupe window with the features each got: a redelivered or repeated
      withdrawal gets its first features again and does not change the history twice;
    * ``destinations`` (per destination): fan-in;
    * ``decided`` (per withdrawal_id, written by the destination stage): the verdict
      published for it, published again as it is for a repeat.
    """

    def __init__(
        self,
        accounts: Store,
        destinations: Store,
        decided: Store,
        params: FeatureParams,
        *,
        structuring: Structuring | None = None,
        dedupe_window_s: float = DEDUPE_WINDOW_S,
        feedback: Feedback | None = None,
    ) -> None:
        # The model's learned scales (the worker sets them again when it switches models).
        self.params = params
        self.structuring = structuring
        self.accounts = accounts
        self.destinations = destinations
        self.decided = decided
        self.dedupe_window_s = dedupe_window_s
        self.feedback = Feedback() if feedback is None else feedback

    def account(self, event: Withdrawal) -> AccountFeatures:
        acc = self.account_at(event, None)
        # Without an offset nothing is recognised by offset; offline nothing is compacted.
        assert isinstance(acc, AccountFeatures)
        return acc

    def begin_batch(self) -> None:
        """The worker starts a batch: what it remembers from now on is kept whole until the
        batch's sends are acknowledged (see :meth:`account_at`)."""
        self._batch = set()

    # The withdrawal_ids remembered or forwarded again in the worker's current batch; None
    # offline (no batches: entries keep their features, the plain window and MAX_SEEN).
    _batch: set[str] | None = None

    def account_at(self, event: Withdrawal, offset: int | None) -> AccountFeatures | Repeat | None:
        """Stage 1 for ``event``, the record at ``offset`` of its account's input partition
        (None offline).

        A withdrawal_id the account remembers gets its first features again (the repeat is
        forwarded again; stage 2 publishes the verdict on record); one remembered from an
        earlier batch of the worker, whose features are no longer kept, gets :data:`REPEAT`.
        A record at or below the last offset applied to the account, no newer than its
        newest withdrawal and no longer remembered, is a redelivery of one applied and
        forwarded long ago: None, nothing to do. (A redelivery can exceed :data:`MAX_SEEN`
        withdrawals of one account when commits are held back, e.g. during a broker outage:
        re-applying them counted a hot account's history twice, 104 withdrawals in one chaos
        run. Its forward was acknowledged: only the batch in flight at a crash can be
        half-sent, and everything a batch adds to ``seen`` is kept whole until the next
        batch.)
        """
        state = self.accounts.get(event.account_id)
        if state is not None:
            state = upgrade_account_state(state, self.params)
            seen = state.get("seen", {}).get(event.withdrawal_id)
            if seen is not None:
                if len(seen) <= _COMPACT:
                    return REPEAT
                # Forwarded again in this batch (after a crash it may be the first forward
                # that lands): whole until the next batch, as an entry of this one.
                if self._batch is not None:
                    self._batch.add(event.withdrawal_id)
                return AccountFeatures(*seen[1:])  # this version's layout (state versioned)
            if offset is not None and _applied_before(state, event, offset):
                return None
        state, acc = account_step(state, event, self.params, self.structuring)
        if offset is not None:
            state["o"] = offset
        remember(state, event, acc, self.dedupe_window_s, self._batch)
        self.accounts[event.account_id] = state
        return acc

    def destination(self, event: Withdrawal, acc: AccountFeatures | None) -> Pending:
        """Stage 2; ``acc`` None: features of another schema, held unscored (no fan-in
        update: what the account stage knew is not in a form this version reads)."""
        if acc is None:
            blank, none = AccountFeatures.blank(event.value), DestinationFeatures(0, 0, 0)
            row = feature_vector(blank, none)
            return Pending(event, blank, none, row, self.decided.get(event.withdrawal_id), True)
        state, dst = destination_step(
            self.destinations.get(event.destination), event, acc, self.params
        )
        self.destinations[event.destination] = state  # a repeat re-applies idempotently
        decided = self.decided.get(event.withdrawal_id)
        return Pending(event, acc, dst, feature_vector(acc, dst), decided)

    def record(self, item: Pending, verdict_text: str) -> None:
        """Remember the verdict published for ``item`` (call once it is decided)."""
        if item.decided is None:
            self.decided[item.event.withdrawal_id] = verdict_text

    def step(self, event: Withdrawal) -> Pending:
        return self.destination(event, self.account(event))

    def warm(self, event: Withdrawal) -> None:
        """Apply ``event`` to the state only, as history (``detector backfill``): the same
        account and destination updates as :meth:`step`, without a model row or a dedupe
        entry (history was decided elsewhere, if at all: the caller skips repeats)."""
        state = self.accounts.get(event.account_id)
        state, acc = account_step(state, event, self.params, self.structuring)
        self.accounts[event.account_id] = state
        self.destinations[event.destination] = destination_step(
            self.destinations.get(event.destination), event, acc, self.params
        )[0]

    # Labels (detector.labels.Label): the account's part on its stage, the destination's on
    # its own; `label` does both (offline).

    def account_label(self, label: Any) -> None:
        if label.account_id is not None:
            self.accounts[label.account_id] = apply_account_label(
                self.accounts.get(label.account_id),
                label,
                self.params,
                cooldown_s=self.feedback.cooldown_s,
                release_s=self.feedback.release_s,
            )

    def destination_label(self, label: Any) -> None:
        if label.destination is not None and (label.label == "fraud" or label.account_id):
            self.destinations[label.destination] = apply_destination_label(
                self.destinations.get(label.destination), label, report_s=self.feedback.report_s
            )

    def label(self, label: Any) -> None:
        self.account_label(label)
        self.destination_label(label)


def _applied_before(state: dict[str, Any], event: Withdrawal, offset: int) -> bool:
    """True if the record at ``offset`` was applied to this account already: at or below
    the last applied offset and no newer than the account's newest withdrawal (a topic
    recreated under the same name restarts its offsets, and its new withdrawals are newer)."""
    applied, last = state.get("o"), state.get("last")
    return (
        applied is not None
        and last is not None
        and offset <= applied
        and event.requested_at <= last
    )


def remember(
    state: dict[str, Any],
    event: Withdrawal,
    acc: AccountFeatures,
    window_s: float,
    batch: set[str] | None = None,
) -> None:
    """Add ``event`` to the account's seen withdrawal_ids (in place), with its time: the
    newest :data:`MAX_SEEN`, within ``window_s`` of the account's newest withdrawal time.

    The window runs on the account's own withdrawal times, not the clock of the machine that
    processes them: a producer's retry or a client's resubmission reaches the partition
    shortly after the original in submission order, whatever the backlog, while a worker
    draining hours of backlog in minutes would otherwise remember every id of the backlog
    (``MAX_SEEN`` each, re-encoded on every write: the mean account state of
    ``bench/bench_state.py`` was 3,988 B that way, 2,055 B this way). A redelivery by Kafka
    is recognised by its offset instead (:meth:`Stages.account_at`).

    ``batch`` (the worker's; None offline) holds the ids of the batch in flight: those are
    never evicted, and keep their features until the next batch. An earlier batch's
    forwards were acknowledged, so their repeats need only be recognised (:data:`REPEAT`),
    and those entries shrink to ``[time, value]``. The features were ~87% of an account's
    changelog value (12.4 KB mean, ``bench/bench_state.py``), encoded on every write."""
    seen: dict[str, list[Any]] = state.setdefault("seen", {})
    seen[event.withdrawal_id] = [event.requested_at, *acc]
    if batch is not None:
        batch.add(event.withdrawal_id)
        for wid in reversed(seen):
            if wid in batch:
                continue
            entry = seen[wid]
            if len(entry) <= _COMPACT:
                break  # older entries were compacted by an earlier call
            seen[wid] = entry[:_COMPACT]
    # Oldest first (insertion order: ids are added as they are processed, never re-added);
    # a late withdrawal is remembered at least until the next.
    since = min(float(state["last"]) - window_s, event.requested_at)
    while seen:
        oldest = next(iter(seen))
        if batch is not None and oldest in batch:
            break
        if len(seen) <= MAX_SEEN and seen[oldest][0] >= since:
            break
        del seen[oldest]


class FeatureState(Stages):
    """Offline state: the three stores are plain dicts."""

    accounts: dict[str, dict[str, Any]]
    destinations: dict[str, dict[str, Any]]
    decided: dict[str, str]

    def __init__(
        self,
        params: FeatureParams,
        *,
        structuring: Structuring | None = None,
        dedupe_window_s: float = DEDUPE_WINDOW_S,
        feedback: Feedback | None = None,
    ) -> None:
        super().__init__(
            {},
            {},
            {},
            params,
            structuring=structuring,
            dedupe_window_s=dedupe_window_s,
            feedback=feedback,
        )


def feature_rows(events: Iterable[Withdrawal], params: FeatureParams) -> Iterator[Pending]:
    """Replay events (already in event-time order) through fresh state."""
    state = FeatureState(params)
    for event in events:
        yield state.step(event)


class Decider:
    """Scores micro-batches with the compiled forest and applies the model's policy."""

    def __init__(
        self,
        model: Model,
        *,
        hold_seconds: int,
        feedback: Feedback | None = None,
        structuring: Structuring | None = None,
    ) -> None:
        self.model = model
        self.hold_seconds = hold_seconds
        self.feedback = Feedback() if feedback is None else feedback
        # The structuring rule (settings; None = off), applied on stage 1's count.
        self.structuring = structuring
        # The last batch's rows and scores (replay keeps them for its report).
        self.last_rows: np.ndarray = np.empty((0, len(model.feature_names)))
        self.last_scores: np.ndarray = np.empty(0)

    def switch(self, model: Model) -> None:
        """Decide with ``model`` from the next batch on (the worker calls it between
        batches: a batch is decided by one model)."""
        self.model = model

    def decide(self, items: Sequence[Pending], *, now: float | None = None) -> list[dict[str, Any]]:
        """One verdict document per item, in order; a repeat gets its first verdict again."""
        rows = self.last_rows = _matrix(items, len(self.model.feature_names))
        fresh = [i for i, it in enumerate(items) if it.decided is None and not it.unscored]
        held = [i for i, it in enumerate(items) if it.decided is None and it.unscored]
        scores = np.empty(len(items))
        evidence = np.empty((len(items), len(self.model.families)))
        if len(fresh) == len(items):
            scores, evidence = self.model.score_with_evidence(rows)
        elif fresh:
            scores[fresh], evidence[fresh] = self.model.score_with_evidence(rows[fresh])
        out: list[dict[str, Any]] = [{} for _ in items]
        for i, it in enumerate(items):
            if it.decided is not None:
                out[i] = json.loads(it.decided)
                scores[i] = float(out[i].get("score", 0.0))
        self.last_scores = scores
        policy = self.model.policy
        verdicts = dict(zip(fresh, policy.verdicts(scores[fresh]), strict=True))
        flagged = [i for i in fresh if verdicts[i] != "allow"]
        reasons: dict[int, list[dict[str, str]]] = {}
        if flagged:
            drivers = self.model.explain(rows[flagged], evidence[flagged], limit=MAX_REASONS)
            for k, i in enumerate(flagged):
                it = items[i]
                reasons[i] = [
                    reason_json(reason_detail(FEATURE_NAMES[column], it.acc, it.dst, family))
                    for family, column in drivers[k]
                ]
        for i in held:  # reported at the hold threshold: at least as suspect as a hold
            scores[i] = policy.delay_threshold
        decided_at = format_rfc3339(time.time() if now is None else now)
        rounded = np.round(scores, SCORE_DECIMALS).tolist()
        for i in held:
            out[i] = make_verdict(
                items[i].event,
                "delay",
                rounded[i],
                [UNSCORED_REASON],
                model_version=self.model.version,
                hold_seconds=self.hold_seconds,
                decided_at=decided_at,
            )
        for i in fresh:
            verdict, why = verdicts[i], reasons.get(i, [])
            rule = self.structuring
            if rule is not None and items[i].acc.near_limit >= rule.count:
                verdict, why = apply_structuring(verdict, why, items[i])
            verdict, why = apply_feedback(verdict, why, items[i], self.feedback)
            out[i] = make_verdict(
                items[i].event,
                verdict,
                rounded[i],
                why,
                model_version=self.model.version,
                hold_seconds=self.hold_seconds,
                decided_at=decided_at,
            )
        # A withdrawal_id twice in one batch (a redelivery that caught up with its first
        # copy in a backlog) is decided once: the later copy saw the destination after the
        # first copy counted, so scoring it again could give another verdict.
        first: dict[str, int] = {}
        for i, it in enumerate(items):
            if it.decided is None:
                j = first.setdefault(it.event.withdrawal_id, i)
                if j != i:
                    out[i], scores[i] = dict(out[j]), scores[j]
        return out


UNSCORED_REASON = {
    "code": "unscored",
    "family": "policy",
    "detail": (
        "features computed by a worker of another feature schema (rolling deploy): "
        "held for review unscored"
    ),
}


def reason_json(reason: Any) -> dict[str, str]:
    """A reason as the verdict contract has it: ``{code, family, detail}``."""
    return {"code": reason.code, "family": reason.family, "detail": reason.detail}


def apply_structuring(
    verdict: Verdict, reasons: list[dict[str, str]], item: Pending
) -> tuple[Verdict, list[dict[str, str]]]:
    """The structuring rule fired: hold at least, and say why first."""
    event = item.event
    first = {
        "code": "structuring",
        "family": "policy",
        "detail": (
            f"{item.acc.near_limit} withdrawals of {event.asset} just under its structuring "
            "limit within the long window"
        ),
    }
    stronger = max(verdict, "delay", key=_STRENGTH.__getitem__)
    return stronger, [first, *reasons][:MAX_REASONS]


def _matrix(items: Sequence[Pending], width: int) -> np.ndarray:
    """The items' model rows as one float64 matrix (``(0, width)`` for no items)."""
    if not items:
        return np.empty((0, width))
    return np.array([it.row for it in items], dtype=np.float64)


def verdict_text(doc: dict[str, Any]) -> str:
    """The one encoding of a verdict (compact JSON): what is published, remembered, written."""
    return json.dumps(doc, separators=(",", ":"), allow_nan=False)


def make_verdict(
    event: Withdrawal,
    verdict: str,
    score: float,
    reasons: list[dict[str, str]],
    *,
    model_version: str,
    hold_seconds: int,
    decided_at: str,
) -> dict[str, Any]:
    """The verdict document of the contract (plain JSON, no Faust fields)."""
    doc: dict[str, Any] = {
        "withdrawal_id": event.withdrawal_id,
        "account_id": event.account_id,
        "verdict": verdict,
        "score": score,
        "reasons": reasons,
        "model_version": model_version,
        "decided_at": decided_at,
        "schema_version": SCHEMA_VERSION,
    }
    if verdict == "delay":
        doc["hold_seconds"] = hold_seconds
    return doc
