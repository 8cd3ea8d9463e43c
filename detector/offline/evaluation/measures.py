"""Rates, matched thresholds and average precision: how methods are compared fairly."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from detector.features import FEATURE_NAMES
from detector.model import Model
from detector.offline import simulate
from detector.offline.plots import precision_recall_curve
from detector.offline.training import DEFAULT_MAX_SAMPLES, DEFAULT_TREES

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Target of the detector: share of attack withdrawals flagged (delay or refuse) ...
TARGET_RECALL = 0.90
# ... while flagging at most this share of normal withdrawals.
TARGET_NORMAL_FLAGGED_RATE = 0.01
# Attacks per scenario in the training history: real history is mostly normal (count).
TRAIN_ATTACKS_PER_SCENARIO = 2
# Attacks per scenario in the test set: enough withdrawals per scenario for a recall that
# moves in steps of a few percent even for the 1-3-withdrawal scenarios (count) ...
TEST_ATTACKS_PER_SCENARIO = 24
# ... but at most one per this many accounts, so small populations keep enough free
# victims (each single-account attack takes its own account) (accounts per attack).
_ACCOUNTS_PER_TEST_ATTACK = 40
# Our forest and the raw-amount baseline forest: trees, subsample size (rows) and seed;
# the `detector train` defaults.
N_ESTIMATORS = DEFAULT_TREES  # same forest size as `detector train`
MAX_SAMPLES = DEFAULT_MAX_SAMPLES
MODEL_SEED = 0
# Floor before taking ln(amount_usd) (USD): one cent, guards ln(0) on dust amounts.
_MIN_LOG_USD = 0.01
# Two floats closer than this (in withdrawals) are the same count: rate * n is a count.
_COUNT_EPS = 1e-6
# A feature of missed withdrawals is "at its ordinary value" when its median is within
# this of the training median (feature units; every feature is floored at the ordinary end).
_ORDINARY_EPS = 1e-9
# Histogram bins of the score figure (count over the observed score range).
_SCORE_BINS = 80
# Figure size (inches) and resolution (dots per inch) of both PNGs.
_FIG_SIZE = (8.0, 5.0)
_FIG_DPI = 110

_OURS = "ours"
_STATIC = "static_threshold"
_RAW = "raw_amount_iforest"
_METHOD_TITLES = {
    _OURS: "ours (isolation forest, our features)",
    _STATIC: "static amount threshold",
    _RAW: "raw-amount iForest",
}
_COLORS = {_OURS: "#4c72b0", _STATIC: "#dd8452", _RAW: "#55a868"}


def _say(message: str) -> None:
    print(f"[evaluate] {message}", flush=True)


# ---------------------------------------------------------------------------------------
# Threshold matching
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------


def _rates(weights: FloatArray, labels: npt.NDArray[np.str_]) -> dict[str, Any]:
    """Normal flagged rate, overall attack recall and recall per scenario (None: no events)."""
    normal = labels == simulate.NORMAL_LABEL
    attack = np.isin(labels, simulate.SCENARIOS)
    by: dict[str, float | None] = {}
    for name in simulate.SCENARIOS:
        mask = labels == name
        by[name] = float(weights[mask].mean()) if mask.any() else None
    return {
        "normal_flagged_rate": float(weights[normal].mean()) if normal.any() else 0.0,
        "attack_recall": float(weights[attack].mean()) if attack.any() else None,
        "by_scenario": by,
    }


def _average_precision(scores: FloatArray, positive: BoolArray) -> float | None:
    """Average precision of "flag when score >= t" (ties flagged together); None: no positive."""
    if not positive.any():
        return None
    precision, recall, _ = precision_recall_curve(scores, positive)
    steps = np.diff(np.r_[0.0, recall])
    return float(np.sum(steps * precision))


def _ap_table(scores: FloatArray, labels: npt.NDArray[np.str_]) -> dict[str, Any]:
    normal = labels == simulate.NORMAL_LABEL
    attack = np.isin(labels, simulate.SCENARIOS)
    keep = normal | attack
    out: dict[str, Any] = {"all": _average_precision(scores[keep], attack[keep])}
    for name in simulate.SCENARIOS:
        mask = normal | (labels == name)
        out[name] = _average_precision(scores[mask], (labels == name)[mask])
    return out


def _matched(
    scores: FloatArray, labels: npt.NDArray[np.str_], rate: float
) -> tuple[dict[str, Any], FloatArray]:
    """Threshold ``scores`` at exactly ``rate`` of the normal withdrawals; its rates."""
    normal = labels == simulate.NORMAL_LABEL
    matched = match_threshold(scores[normal], rate)
    weights = matched.weights(scores)
    result = {
        "threshold": matched.threshold if math.isfinite(matched.threshold) else None,
        "tie_fraction": matched.tie_fraction,
        **_rates(weights, labels),
    }
    return result, weights


def _raw_amount_scores(train_usd: FloatArray, test_usd: FloatArray) -> FloatArray:
    """Anomaly score s(x) in (0, 1] of an IsolationForest fit on ln(amount_usd) alone."""
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(
        n_estimators=N_ESTIMATORS,
        max_samples=min(MAX_SAMPLES, train_usd.size),
        random_state=MODEL_SEED,
    )
    forest.fit(np.log(np.maximum(train_usd, _MIN_LOG_USD)).reshape(-1, 1))
    raw = forest.score_samples(np.log(np.maximum(test_usd, _MIN_LOG_USD)).reshape(-1, 1))
    return np.asarray(-raw, dtype=np.float64)


def _missed_analysis(
    rows: FloatArray,
    flagged: BoolArray,
    labels: npt.NDArray[np.str_],
    scores: FloatArray,
    model: Model,
) -> dict[str, Any]:
    """Per scenario: median features of missed vs caught attack withdrawals, and their scores."""
    out: dict[str, Any] = {}
    ordinary = dict(zip(FEATURE_NAMES, model.ordinary, strict=True))
    for name in simulate.SCENARIOS:
        mask = labels == name
        missed = mask & ~flagged
        caught = mask & flagged

        def medians(sel: BoolArray) -> dict[str, float] | None:
            if not sel.any():
                return None
            med = np.median(rows[sel], axis=0)
            return {f: float(v) for f, v in zip(FEATURE_NAMES, med, strict=True)}

        out[name] = {
            "events": int(mask.sum()),
            "missed": int(missed.sum()),
            "caught": int(caught.sum()),
            "median_score_missed": float(np.median(scores[missed])) if missed.any() else None,
            "median_score_caught": float(np.median(scores[caught])) if caught.any() else None,
            "median_features_missed": medians(missed),
            "median_features_caught": medians(caught),
            "ordinary": ordinary,
        }
    return out
