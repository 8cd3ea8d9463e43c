"""Post hoc: other ways of combining the three families' evidence, in two worlds at once.

    python bench/family_weights.py [--sparkov ../shared/benchmarks/sparkov] [--work DIR]

(about 2.5 minutes). Fits the model as ``detector evaluate`` does (``train()``, model seed 0)
on (1) Sparkov's *train* part before 2020-01-01, scoring the rest of the train part (its
test part is never read), and (2) the simulator's unshifted world of ``docs/evaluation.md``
(1,000 accounts, 21 + 21 days, seed 1), scoring its test period warm. It keeps each scored
withdrawal's per-family evidence, then recombines it (``Model.statistic``'s rule: the
largest weighted evidence, plus ``alpha`` x the second, plus ``alpha ** 2`` x the third)
for each family alone and a grid of family weights and ``alpha``, and prints recall at a 1%
budget in both worlds, measured as ``detector evaluate`` measures it (Sparkov:
``top_budget``, the top 1% of scored withdrawals, ties in a seeded random order; simulator:
``match_threshold``, flagging 1% of the normal withdrawals, lowest scenario beside). The
figures are in ``docs/feature-design.md``.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from detector.events import parse_rfc3339  # noqa: E402
from detector.model import Model  # noqa: E402
from detector.offline import simulate  # noqa: E402
from detector.offline.dataset import load_events  # noqa: E402
from detector.offline.evaluation.measures import (  # noqa: E402
    BUDGET,
    MODEL_SEED,
    match_threshold,
    rates,
    top_budget,
)
from detector.offline.evaluation.sparkov import _load  # noqa: E402
from detector.offline.quality import NORMAL_LABEL  # noqa: E402
from detector.offline.replay import replay  # noqa: E402
from detector.offline.training import train  # noqa: E402

SPLIT = "2020-01-01T00:00:00Z"


def sparkov_evidence(directory: Path, work: Path) -> tuple[Model, np.ndarray, np.ndarray]:
    """(model, evidence, is_fraud) of Sparkov's train part after :data:`SPLIT`, fitted before it."""
    fit = work / "sparkov-fit.jsonl"
    cut = parse_rfc3339(SPLIT)
    with gzip.open(directory / "train.jsonl.gz", "rt") as src, fit.open("w") as dst:
        for line in src:
            if parse_rfc3339(json.loads(line)["requested_at"]) < cut:
                dst.write(line)
    model = train(fit, work / "sparkov-model", seed=MODEL_SEED, plots=False).model
    events = _load(directory / "train.jsonl.gz")
    result = replay(events, model, score_from=cut)
    labels = np.array([e.label == "fraud" for e in events if e.requested_at >= cut])
    return model, model.evidence(result.rows), labels


def simulator_evidence(work: Path) -> tuple[Model, np.ndarray, np.ndarray]:
    """(model, evidence, label) of the unshifted simulated world's test period, warm."""
    config = simulate.SimConfig(
        accounts=1000,
        days=42.0,
        test_days=21.0,
        seed=1,
        attacks_per_scenario=2,
        test_attacks_per_scenario=24,
    )
    events = simulate.generate(config)
    start = config.test_start.timestamp()
    history = [e for e in events if parse_rfc3339(e["requested_at"]) < start]
    history_path = work / "sim-history.jsonl"
    simulate.write_jsonl(history, history_path)
    model = train(
        history_path,
        work / "sim-model",
        fit_from=config.warmup_end.timestamp(),
        seed=MODEL_SEED,
        plots=False,
    ).model
    everything = work / "sim-all.jsonl"
    simulate.write_jsonl(events, everything)
    withdrawals = sorted(load_events(everything), key=lambda e: e.requested_at)
    result = replay(withdrawals, model, score_from=start)
    labels = np.array([e.label or "" for e in withdrawals if e.requested_at >= start])
    return model, model.evidence(result.rows), labels


def combined(
    model: Model, evidence: np.ndarray, alpha: float, weights: tuple[float, ...]
) -> np.ndarray:
    """The model's own combining rule (``Model.statistic``) with other family weights and
    ``alpha``; the score is a monotone function of it, so rankings are the same."""
    result: np.ndarray = replace(model, alpha=alpha).statistic(evidence * np.asarray(weights))
    return result


def simulator_recall(scores: np.ndarray, label: np.ndarray) -> tuple[float, float, str]:
    """Attack recall at 1% of the normal withdrawals flagged (ties split by weight, as the
    report measures it); the lowest scenario's."""
    scenarios = sorted(set(label[label != NORMAL_LABEL]))
    threshold = match_threshold(scores[label == NORMAL_LABEL], BUDGET)
    got = rates(threshold.weights(scores), label, scenarios)
    worst = min(scenarios, key=lambda s: got["by_scenario"][s])
    return got["attack_recall"], got["by_scenario"][worst], worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sparkov", type=Path, default=REPO.parent / "shared/benchmarks/sparkov")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="family-weights-")) if args.work is None else args.work
    work.mkdir(parents=True, exist_ok=True)
    try:
        spk_model, spk_evidence, fraud = sparkov_evidence(args.sparkov, work)
        sim_model, sim_evidence, label = simulator_evidence(work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    def row(name: str, spk: np.ndarray, sim: np.ndarray) -> None:
        recall, lowest, which = simulator_recall(sim, label)
        spk_recall = fraud[top_budget(spk)[0]].sum() / fraud.sum()
        print(
            f"{name:44s} sparkov-validation {100 * spk_recall:5.1f}%   "
            f"simulator {100 * recall:5.1f}%   lowest {100 * lowest:5.1f}% ({which})"
        )

    ones = (1.0,) * len(spk_model.families)
    row(
        f"shipped: weights 1/1/1, alpha {spk_model.alpha:g}",
        combined(spk_model, spk_evidence, spk_model.alpha, ones),
        combined(sim_model, sim_evidence, sim_model.alpha, ones),
    )
    for j, family in enumerate(spk_model.families):
        row(f"{family.name} family alone", spk_evidence[:, j], sim_evidence[:, j])
    grid = itertools.product((0.2, 0.35, 0.5), (0.8, 0.9, 1.0, 1.1), (0.8, 0.9, 1.0, 1.1, 1.2))
    for alpha, wf, wd in grid:
        weights = (1.0, wf, wd)
        row(
            f"weights 1/{wf:g}/{wd:g}, alpha {alpha:g}",
            combined(spk_model, spk_evidence, alpha, weights),
            combined(sim_model, sim_evidence, alpha, weights),
        )


if __name__ == "__main__":
    main()
