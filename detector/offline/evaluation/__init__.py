"""``detector evaluate``: regenerate ``docs/evaluation.md`` (our model vs baselines) in one run.

The run is self-contained and seeded, so the document is reproducible (only the measured
speeds change between machines):

1. simulate a *training* history (few attacks: real history is mostly normal) and a
   separate *test* set (more attacks, so every scenario has enough withdrawals), both
   written as JSONL under ``work_dir``;
2. train our model with :func:`detector.offline.training.train` on the training file (thresholds
   calibrated on the training scores only);
3. replay the test set through :func:`detector.offline.replay.replay` (the worker's decision
   logic): per-scenario recall at the configured policy (flagged = delay or refuse) and
   the normal flagged rate, plus refuse-only numbers and the replay's events/s;
4. baselines on the same test withdrawals, each thresholded so that its flagged rate on the
   test set's *normal* withdrawals equals ours exactly (same false-positive budget, see
   :func:`match_threshold`): a static ``amount_usd`` threshold, and an sklearn
   ``IsolationForest`` on ln(amount_usd) alone (same trees and subsample size as ours, fit
   on the training withdrawals); then all three methods again at exactly the configured
   delay rate (ranking quality with calibration removed) and their average precision;
5. write the markdown, two PNGs beside it (``<stem>_pr.png``, ``<stem>_scores.png``) and
   every figure as JSON (``<stem>.json``); the markdown only prints numbers of that JSON.
"""

from detector.offline.evaluation.measures import (
    MAX_SAMPLES,
    MODEL_SEED,
    N_ESTIMATORS,
    TARGET_NORMAL_FLAGGED_RATE,
    TARGET_RECALL,
    TEST_ATTACKS_PER_SCENARIO,
    TRAIN_ATTACKS_PER_SCENARIO,
    MatchedThreshold,
    match_threshold,
)
from detector.offline.evaluation.run import run_evaluation

__all__ = [
    "MAX_SAMPLES",
    "MODEL_SEED",
    "N_ESTIMATORS",
    "TARGET_NORMAL_FLAGGED_RATE",
    "TARGET_RECALL",
    "TEST_ATTACKS_PER_SCENARIO",
    "TRAIN_ATTACKS_PER_SCENARIO",
    "MatchedThreshold",
    "match_threshold",
    "run_evaluation",
]
