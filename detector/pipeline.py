"""The online decision logic minus Kafka, shared by the worker, ``replay`` and ``train``.

Stage 1 (keyed by account): :meth:`FeatureState.account` -> :class:`AccountFeatures`.
Stage 2 (keyed by destination): :meth:`FeatureState.destination` -> the model row.
Stage 3 (micro-batch): :meth:`Decider.decide` scores rows together and builds verdicts.

The worker keeps the two states in Faust tables; :class:`FeatureState` keeps them in dicts
for offline runs. Both call the same step functions of :mod:`detector.features`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from detector.events import Withdrawal, format_rfc3339
from detector.features import (
    AccountFeatures,
    DestinationFeatures,
    account_step,
    destination_step,
    feature_vector,
)
from detector.model import Model
from detector.policy import explain

__all__ = [
    "SCHEMA_VERSION",
    "SCORE_DECIMALS",
    "Decider",
    "FeatureState",
    "Pending",
    "feature_rows",
    "make_verdict",
]

SCHEMA_VERSION = 1  # verdict contract version (architecture.md)
SCORE_DECIMALS = 6  # scores are published rounded: stable JSON, identical online and offline


class Pending(NamedTuple):
    """A withdrawal with its features, waiting to be scored."""

    event: Withdrawal
    acc: AccountFeatures
    dst: DestinationFeatures
    row: list[float]


class FeatureState:
    """Offline per-account and per-destination state (the worker uses Faust tables)."""

    def __init__(self) -> None:
        self.accounts: dict[str, dict[str, Any]] = {}
        self.destinations: dict[str, dict[str, Any]] = {}

    def account(self, event: Withdrawal) -> AccountFeatures:
        state, acc = account_step(self.accounts.get(event.account_id), event)
        self.accounts[event.account_id] = state
        return acc

    def destination(self, event: Withdrawal, acc: AccountFeatures) -> Pending:
        state, dst = destination_step(
            self.destinations.get(event.destination), event, new_for_account=acc.new_destination
        )
        self.destinations[event.destination] = state
        return Pending(event, acc, dst, feature_vector(acc, dst))

    def step(self, event: Withdrawal) -> Pending:
        return self.destination(event, self.account(event))


def feature_rows(events: Iterable[Withdrawal]) -> Iterator[Pending]:
    """Replay events (already in event-time order) through fresh state."""
    state = FeatureState()
    for event in events:
        yield state.step(event)


class Decider:
    """Scores micro-batches with the compiled forest and applies the model's policy."""

    def __init__(self, model: Model, *, hold_seconds: int) -> None:
        self.model = model
        self.hold_seconds = hold_seconds
        self._ordinary = model.ordinary
        # The last batch's rows and scores (replay keeps them for its report).
        self.last_rows: np.ndarray = np.empty((0, len(model.feature_names)))
        self.last_scores: np.ndarray = np.empty(0)

    def scores(self, items: Sequence[Pending]) -> np.ndarray:
        return self._score(_matrix(items, len(self.model.feature_names)))

    def _score(self, rows: np.ndarray) -> np.ndarray:
        return self.model.score(rows)

    def decide(self, items: Sequence[Pending], *, now: float | None = None) -> list[dict[str, Any]]:
        """One verdict document per item, in order."""
        rows = self.last_rows = _matrix(items, len(self.model.feature_names))
        scores = self.last_scores = self._score(rows)
        policy = self.model.policy
        verdicts = [policy.verdict(float(s)) for s in scores]
        flagged = [i for i, v in enumerate(verdicts) if v != "allow"]
        reasons: dict[int, list[dict[str, str]]] = {}
        if flagged:
            excess = self.model.excess_contributions(rows[flagged])
            for k, i in enumerate(flagged):
                it = items[i]
                reasons[i] = [
                    {"code": r.code, "detail": r.detail}
                    for r in explain(it.row, excess[k], self._ordinary, it.acc, it.dst)
                ]
        decided_at = format_rfc3339(time.time() if now is None else now)
        rounded = np.round(scores, SCORE_DECIMALS).tolist()
        return [
            make_verdict(
                it.event,
                verdicts[i],
                rounded[i],
                reasons.get(i, []),
                model_version=self.model.version,
                hold_seconds=self.hold_seconds,
                decided_at=decided_at,
            )
            for i, it in enumerate(items)
        ]


def _matrix(items: Sequence[Pending], width: int) -> np.ndarray:
    """The items' model rows as one float64 matrix (``(0, width)`` for no items)."""
    if not items:
        return np.empty((0, width))
    return np.array([it.row for it in items], dtype=np.float64)


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
