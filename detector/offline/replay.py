"""``detector replay``: the worker's exact decision logic over a file, without Kafka.

Events are replayed in event-time order through :class:`~detector.pipeline.FeatureState`
and scored in chunks by :class:`~detector.pipeline.Decider`, exactly as the worker's agents
do. With ``metadata.label`` on the events, a quality report is computed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector.events import Withdrawal
from detector.model import Model
from detector.offline.quality import Tally
from detector.pipeline import Decider, FeatureState, Pending

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


def replay(
    events: Iterable[Withdrawal],
    model: Model,
    *,
    hold_seconds: int = 3600,
    now: float | None = None,
) -> ReplayResult:
    """Decide every event (given in event-time order) as the worker would."""
    started = time.perf_counter()
    decider = Decider(model, hold_seconds=hold_seconds)
    state = FeatureState()
    verdicts: list[dict[str, Any]] = []
    scores: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    labels: list[str | None] = []
    chunk: list[Pending] = []
    stamp = time.time() if now is None else now

    def flush() -> None:
        verdicts.extend(decider.decide(chunk, now=stamp))
        scores.append(decider.last_scores)
        rows.append(decider.last_rows)
        chunk.clear()

    for event in events:
        item = state.step(event)
        chunk.append(item)
        labels.append(event.label)
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
            out.write(json.dumps(verdict, separators=(",", ":")))
            out.write("\n")
