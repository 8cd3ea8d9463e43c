"""How methods are compared fairly: matched thresholds, review budgets, rates, AP, ROC AUC.

Two ways to spend a false-positive budget, both exact:

* :func:`match_threshold` flags exactly a share of the *normal* withdrawals (ties at the
  threshold split by weight): our simulator's measure ("attacks held while <= 1% of normal
  withdrawals are") and how every baseline is put at our policy's normal flagged rate;
* :func:`top_budget` flags the top share of *all* withdrawals by score, ties at the cut
  broken by a seeded random order: the Sparkov benchmark's protocol, exactly as its
  ``baselines.py`` does it (same seed, same ordering), so the numbers are comparable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from detector.offline.quality import NORMAL_LABEL
from detector.offline.training import DEFAULT_MAX_SAMPLES, DEFAULT_TREES

__all__ = [
    "BUDGET",
    "MAX_SAMPLES",
    "MODEL_SEED",
    "N_ESTIMATORS",
    "SHUFFLE_SEED",
    "MatchedThreshold",
    "average_precision",
    "match_threshold",
    "rates",
    "roc_auc",
    "top_budget",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
StrArray = npt.NDArray[np.str_]

# The review budget of every world: 1% (of normal withdrawals in our simulator, of all test
# withdrawals in Sparkov, whose protocol says so) (share).
BUDGET = 0.01
# Seed of the random order that breaks ties at a top-budget cut (Sparkov's baselines.py: 0).
SHUFFLE_SEED = 0
# Our forest and the baseline forests: trees, subsample size (rows) and seed; the
# `detector train` defaults, and the forests of Sparkov's baselines.py (100, 2048, 0).
N_ESTIMATORS = DEFAULT_TREES
MAX_SAMPLES = DEFAULT_MAX_SAMPLES
MODEL_SEED = 0
# Two floats closer than this (in withdrawals) are the same count: rate * n is a count.
_COUNT_EPS = 1e-6


@dataclass(frozen=True)
class MatchedThreshold:
    """Flag ``score > threshold``, and ``score == threshold`` with weight ``tie_fraction``.

    Scores tied at the threshold cannot be split by the score itself, so they count as
    flagged with probability ``tie_fraction`` (expected counts): this makes the flagged
    rate on the reference scores exactly the requested one, even with ties.
    """

    threshold: float
    tie_fraction: float

    def weights(self, scores: FloatArray) -> FloatArray:
        """Per-event flag weight: 1 above the threshold, ``tie_fraction`` at it, 0 below."""
        values = np.asarray(scores, dtype=np.float64)
        tied = (values == self.threshold).astype(np.float64)
        return np.asarray((values > self.threshold) + self.tie_fraction * tied, dtype=np.float64)


def match_threshold(scores: Sequence[float] | FloatArray, rate: float) -> MatchedThreshold:
    """The threshold that flags exactly ``rate`` of ``scores`` (ties split by weight).

    ``rate`` 0 flags nothing (threshold +inf); ``rate`` 1 flags everything.
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        raise ValueError("need at least one reference score")
    if not np.all(np.isfinite(values)):
        raise ValueError("reference scores must be finite")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    wanted = rate * values.size  # expected flagged count (withdrawals)
    if abs(wanted - round(wanted)) < _COUNT_EPS:
        wanted = float(round(wanted))
    if wanted <= 0.0:
        return MatchedThreshold(math.inf, 0.0)
    ordered = np.sort(values)[::-1]
    threshold = float(ordered[math.ceil(wanted) - 1])
    above = int(np.count_nonzero(values > threshold))
    tied = int(np.count_nonzero(values == threshold))
    fraction = min(1.0, max(0.0, (wanted - above) / tied))
    return MatchedThreshold(threshold, fraction)


def top_budget(
    scores: FloatArray, budget: float = BUDGET, seed: int = SHUFFLE_SEED
) -> tuple[BoolArray, int]:
    """The top ``budget`` share of rows by score (``round(budget * n)`` rows), ties broken
    by a seeded random order; and how many rows share the score at the cut. Identical to
    ``top_budget`` of Sparkov's ``baselines.py``."""
    values = np.asarray(scores, dtype=np.float64)
    k = round(budget * len(values))
    flagged = np.zeros(len(values), dtype=np.bool_)
    if k <= 0:
        return flagged, 0
    tiebreak = np.random.default_rng(seed).random(len(values))
    order = np.lexsort((tiebreak, -values))
    flagged[order[:k]] = True
    cut = values[order[k - 1]]
    return flagged, int(np.sum(values == cut))


def rates(weights: FloatArray, labels: StrArray, scenarios: Sequence[str]) -> dict[str, Any]:
    """Normal flagged rate, overall attack recall and recall per scenario (None: no events)
    of per-withdrawal flag weights (0/1, or fractional at a matched threshold's ties)."""
    normal = labels == NORMAL_LABEL
    attack = np.isin(labels, list(scenarios))
    by: dict[str, float | None] = {}
    for name in scenarios:
        mask = labels == name
        by[name] = float(weights[mask].mean()) if mask.any() else None
    return {
        "normal_flagged_rate": float(weights[normal].mean()) if normal.any() else 0.0,
        "attack_recall": float(weights[attack].mean()) if attack.any() else None,
        "flagged": float(weights.sum()),
        "by_scenario": by,
    }


def average_precision(scores: FloatArray, positive: BoolArray) -> float | None:
    """sklearn's average precision (ties at a score flagged together); None: no positive
    or no negative."""
    if not positive.any() or positive.all():
        return None
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(positive, scores))


def roc_auc(scores: FloatArray, positive: BoolArray) -> float | None:
    """sklearn's ROC AUC; None without both classes."""
    if not positive.any() or positive.all():
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive, scores))
