"""Policy: anomaly score -> verdict (thresholds calibrated at training time)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_DELAY_RATE",
    "DEFAULT_REFUSE_RATE",
    "MAX_REASONS",
    "VERDICTS",
    "Policy",
    "Verdict",
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

    def verdicts(self, scores: npt.NDArray[np.float64]) -> list[Verdict]:
        """:meth:`verdict` of each score, compared as one array."""
        kind = (scores >= self.delay_threshold).astype(np.intp)
        kind += scores >= self.refuse_threshold  # refuse_threshold >= delay_threshold
        return [VERDICTS[k] for k in kind.tolist()]

    def to_json(self) -> dict[str, Any]:
        return {"delay_threshold": self.delay_threshold, "refuse_threshold": self.refuse_threshold}
