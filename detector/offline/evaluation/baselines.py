"""The baselines every world computes in the same run, from the contract's fields only.

* ``static_threshold``: the amount itself (flag the largest amounts);
* ``iforest_amount``: an sklearn ``IsolationForest`` on ln(amount) alone (Sparkov's
  baselines.py (a): 100 trees, 2,048-row subsamples, seed 0), fit on the training
  withdrawals;
* ``max_pct_rank``: the larger of the training-percentile ranks of the amount and of the
  amount / the account's trailing 30-day median amount (Sparkov's baselines.py (c), the best
  simple baseline there).

None of them sees labels; each is thresholded by :mod:`~detector.offline.evaluation.measures`
at the same false-positive budget as ours.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from detector.offline.evaluation.measures import MAX_SAMPLES, MODEL_SEED, N_ESTIMATORS

__all__ = ["BASELINES", "IFOREST", "MAX_PCT_RANK", "OURS", "STATIC", "TITLES", "baseline_scores"]

FloatArray = npt.NDArray[np.float64]

OURS = "ours"
STATIC = "static_threshold"
IFOREST = "iforest_amount"
MAX_PCT_RANK = "max_pct_rank"
BASELINES = (STATIC, IFOREST, MAX_PCT_RANK)
TITLES = {
    OURS: "ours (`train()` + `replay()`)",
    STATIC: "static amount threshold",
    IFOREST: "iForest on ln(amount)",
    MAX_PCT_RANK: "max pct rank (amount, amount / 30-day median)",
}
# Floor before ln(amount) (amount units): guards ln(0); far below any simulated or Sparkov
# amount, so it changes nothing there.
_MIN_LOG_AMOUNT = 1e-9


def baseline_scores(
    train_amount: FloatArray,
    test_amount: FloatArray,
    train_ratio: FloatArray,
    test_ratio: FloatArray,
) -> dict[str, FloatArray]:
    """Each baseline's score of every test withdrawal (higher = more suspicious)."""
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(
        n_estimators=N_ESTIMATORS,
        max_samples=min(MAX_SAMPLES, train_amount.size),
        random_state=MODEL_SEED,
    )
    forest.fit(np.log(np.maximum(train_amount, _MIN_LOG_AMOUNT))[:, None])
    iforest = -forest.score_samples(np.log(np.maximum(test_amount, _MIN_LOG_AMOUNT))[:, None])
    ranks = np.maximum(_pct_rank(train_amount, test_amount), _pct_rank(train_ratio, test_ratio))
    return {
        STATIC: np.asarray(test_amount, dtype=np.float64),
        IFOREST: np.asarray(iforest, dtype=np.float64),
        MAX_PCT_RANK: np.asarray(ranks, dtype=np.float64),
    }


def _pct_rank(train_values: FloatArray, values: FloatArray) -> FloatArray:
    """Share of training values <= each value (the training-percentile rank, 0..1)."""
    ordered = np.sort(train_values)
    return np.asarray(np.searchsorted(ordered, values, side="right") / len(ordered))
