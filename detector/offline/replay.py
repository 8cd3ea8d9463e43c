"""``detector replay``: the worker's exact decision logic over a file, without Kafka.

Events are replayed in event-time order through :class:`~detector.pipeline.FeatureState`
and scored in chunks by :class:`~detector.pipeline.Decider`, exactly as the worker's agents
do. With ``metadata.label`` on the events, a quality report is computed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector.events import Withdrawal
from detector.features import AccountFeatures, Structuring
from detector.gctune import relaxed
from detector.labels import Label
from detector.model import Model
from detector.offline.quality import Tally
from detector.pipeline import Decider, FeatureState, Feedback, Pending, verdict_text

__all__ = ["CHUNK", "ReplayResult", "quality_report", "replay", "write_verdicts"]

# Rows scored together: large enough for the batched scorer's best per-row cost.
CHUNK = 4096


@dataclass
class ReplayResult:
    verdicts: list[dict[str, Any]]
    scores: np.ndarray
    labels: list[str | None]
    seconds: float
    rows: np.ndarray = field(repr=False)

    @property
    def events_per_second(self) -> float:
        return len(self.verdicts) / self.seconds if self.seconds > 0 else float("inf")


@relaxed()  # many small objects live at once: ~1.2-1.5x events/s (bench/bench_replay.py)
def replay(
    events: Iterable[Withdrawal],
    model: Model,
    *,
    hold_seconds: int = 3600,
    now: float | None = None,
    destination_order: Sequence[str] | None = None,
    reports: Sequence[Label] = (),
    feedback: Feedback | None = None,
    score_from: float | None = None,
    structuring: Structuring | None = None,
) -> ReplayResult:
    """Decide every event (given in event-time order) as the worker would.

    ``destination_order`` (withdrawal_ids): the order in which the worker's destination
    stage took the withdrawals (the by-destination topic, partition by partition). Account
    features are always computed in event-time order (a Kafka partition keeps each
    account's order); fan-in depends on the order in which payments *to one destination*
    reach its partition, which with several input partitions can differ from event time.
    Given that order, replay reproduces the worker exactly; verdicts come back in it.

    ``reports`` (labels): each takes effect at its ``reported_at``, interleaved in event
    time with the withdrawals, as in the worker (``feedback``: what they do).

    ``score_from`` (epoch s): withdrawals before it only build state (a warm backtest:
    history, then the period under test); only the later ones are decided and returned.
    """
    started = time.perf_counter()
    decider = Decider(model, hold_seconds=hold_seconds, feedback=feedback, structuring=structuring)
    state = FeatureState(model.params, structuring=structuring, feedback=feedback)
    verdicts: list[dict[str, Any]] = []
    scores: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    labels: list[str | None] = []
    chunk: list[Pending] = []
    stamp = time.time() if now is None else now

    published = state.decided = _Published()

    def flush() -> None:
        decided = decider.decide(chunk, now=stamp)
        for item, verdict in zip(chunk, decided, strict=True):
            if item.decided is None:
                published[item.event.withdrawal_id] = verdict
        verdicts.extend(decided)
        scores.append(decider.last_scores)
        rows.append(decider.last_rows)
        chunk.clear()

    for item in _items(state, events, destination_order, reports):
        if score_from is not None and item.event.requested_at < score_from:
            continue  # warm-up: the state moved, nothing is decided
        chunk.append(item)
        labels.append(item.event.label)
        if len(chunk) >= CHUNK:
            flush()
    if chunk:
        flush()
    return ReplayResult(
        verdicts,
        np.concatenate(scores) if scores else np.empty(0),
        labels,
        time.perf_counter() - started,
        np.concatenate(rows) if rows else np.empty((0, len(model.feature_names))),
    )


class _Published(dict[str, Any]):
    """The verdicts on record, as documents: encoded (as the worker keeps them) only when a
    repeat of a withdrawal reads its verdict; replay never changes a document it returned."""

    def get(self, key: str, default: Any = None) -> Any:
        doc = super().get(key)
        return default if doc is None else verdict_text(doc)


def _items(
    state: FeatureState,
    events: Iterable[Withdrawal],
    destination_order: Sequence[str] | None,
    reports: Sequence[Label],
) -> Iterator[Pending]:
    """Both stages in event-time order, labels applied at their ``reported_at`` (before a
    withdrawal at the same instant); or stage 1 in event-time order, then stage 2 in the
    worker's destination order (every withdrawal must be in it)."""
    if destination_order is None:
        pending = sorted(reports, key=lambda label: label.reported_at)
        i = 0
        for event in events:
            while i < len(pending) and pending[i].reported_at <= event.requested_at:
                state.label(pending[i])
                i += 1
            yield state.step(event)
        return
    if reports:
        raise ValueError("destination_order and reports cannot be combined")
    first: dict[str, tuple[Withdrawal, AccountFeatures]] = {}
    for event in events:
        acc = state.account(event)
        first.setdefault(event.withdrawal_id, (event, acc))
    missing = set(first) - set(destination_order)
    if missing:
        raise ValueError(f"{len(missing)} withdrawals are not in destination_order")
    for wid in dict.fromkeys(destination_order):
        if wid in first:
            event, acc = first[wid]
            yield state.destination(event, acc)


def quality_report(
    verdicts: Sequence[dict[str, Any]], labels: Sequence[str | None]
) -> dict[str, Any]:
    """Counts, and when labels exist: normal flagged rate, attack recall, recall by scenario."""
    tally = Tally()
    for verdict, label in zip(verdicts, labels, strict=True):
        tally.add(verdict["verdict"], label)
    return tally.report()


def write_verdicts(verdicts: Iterable[dict[str, Any]], path: Path) -> None:
    with path.open("w", encoding="utf-8") as out:
        for verdict in verdicts:
            out.write(verdict_text(verdict))
            out.write("\n")
