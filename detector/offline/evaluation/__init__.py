"""``detector evaluate``: regenerate ``docs/evaluation.md``, three worlds in one report.

One seeded run, every number printed from the JSON it writes beside the markdown:

(a) our simulator, every scenario: one simulated population over a training history (few
    attacks) and a test period (many attacks); ``train()`` on the history, ``replay()``
    over history + test warm (``score_from`` = the test's start); recall per scenario at
    the model's own policy and at a 1% budget of normal withdrawals, AP, baselines
    (:mod:`~detector.offline.evaluation.baselines`) in the same run; then again with the
    simulator's fraud reports as feedback (:mod:`~detector.offline.evaluation.simworld`);
(b) the same with shifted habits (amounts x0.01 and x100, activity x0.2 and x5), each
    retrained on its own shifted history, compared with (a);
(c) the external Sparkov benchmark when its directory is there, by its README's protocol
    (:mod:`~detector.offline.evaluation.sparkov`), with its 7-day-late fraud reports.

Then the targets of issue 8, each met or not with its figure, "what the misses look like"
per world, four PNGs (:mod:`~detector.offline.evaluation.figures`) and the timings.
Measures: :mod:`~detector.offline.evaluation.measures`; markdown:
:mod:`~detector.offline.evaluation.report`; orchestration: :mod:`~detector.offline.evaluation.run`.
"""

from detector.offline.evaluation.measures import (
    BUDGET,
    MAX_SAMPLES,
    MODEL_SEED,
    N_ESTIMATORS,
    MatchedThreshold,
    match_threshold,
    top_budget,
)
from detector.offline.evaluation.run import (
    DEFAULT_SPARKOV,
    TARGETS,
    TEST_ATTACKS_PER_SCENARIO,
    TRAIN_ATTACKS_PER_SCENARIO,
    render,
    run_evaluation,
)
from detector.offline.evaluation.simworld import WORLDS, WorldSpec

__all__ = [
    "BUDGET",
    "DEFAULT_SPARKOV",
    "MAX_SAMPLES",
    "MODEL_SEED",
    "N_ESTIMATORS",
    "TARGETS",
    "TEST_ATTACKS_PER_SCENARIO",
    "TRAIN_ATTACKS_PER_SCENARIO",
    "WORLDS",
    "MatchedThreshold",
    "WorldSpec",
    "match_threshold",
    "render",
    "run_evaluation",
    "top_budget",
]
