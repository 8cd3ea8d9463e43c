"""Policy: anomaly score -> verdict, and the reasons behind a held or refused withdrawal."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from detector.features import (
    FEATURE_NAMES,
    AccountFeatures,
    DestinationFeatures,
    Reason,
    reason_detail,
)

__all__ = [
    "DEFAULT_DELAY_RATE",
    "DEFAULT_REFUSE_RATE",
    "MAX_REASONS",
    "VERDICTS",
    "Policy",
    "Verdict",
    "explain",
]

Verdict = Literal["allow", "delay", "refuse"]
# The verdict kinds, mildest first: the one list every module and metric uses.
VERDICTS: tuple[Verdict, ...] = ("allow", "delay", "refuse")
# Training calibrates the thresholds so that these shares of the training withdrawals are
# delayed / refused (the review budget an exchange plans for).
DEFAULT_DELAY_RATE = 0.01
DEFAULT_REFUSE_RATE = 0.001
# A reviewer reads three reasons; more dilutes them.
MAX_REASONS = 3


@dataclass(frozen=True, slots=True)
class Policy:
    """Thresholds on the anomaly score, calibrated at training time (saved with the model)."""

    delay_threshold: float
    refuse_threshold: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.delay_threshold <= self.refuse_threshold <= 1.0:
            raise ValueError(
                f"need 0 <= delay ({self.delay_threshold}) <= refuse ({self.refuse_threshold}) <= 1"
            )

    def verdict(self, score: float) -> Verdict:
        if score >= self.refuse_threshold:
            return "refuse"
        if score >= self.delay_threshold:
            return "delay"
        return "allow"

    def to_json(self) -> dict[str, Any]:
        return {"delay_threshold": self.delay_threshold, "refuse_threshold": self.refuse_threshold}


def explain(
    row: Sequence[float],
    excess: np.ndarray,
    ordinary: Sequence[float],
    acc: AccountFeatures,
    dst: DestinationFeatures,
) -> list[Reason]:
    """Top contributing features of one row, as reason codes with human details.

    ``excess`` is the row's per-feature path-depth credit minus the training mean (how much
    more each feature isolated this withdrawal than it isolates a normal one); ``ordinary``
    is each feature's training median. Only features above their ordinary value can be a
    reason (a feature at its usual value explains nothing); they are ranked by excess.
    """
    elevated = [i for i in range(len(FEATURE_NAMES)) if row[i] > ordinary[i]]
    ranked = sorted(elevated, key=lambda i: float(excess[i]), reverse=True)
    chosen = [i for i in ranked if excess[i] > 0][:MAX_REASONS] or ranked[:1]
    return [reason_detail(FEATURE_NAMES[i], acc, dst) for i in chosen]
