"""``detector train``: replay history through the features, fit, calibrate, save, report."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import ModelError
from detector.features import FEATURE_NAMES
from detector.model import Family, Model, Signer
from detector.offline.dataset import load_events
from detector.offline.forests import compile_forest, fit_forest
from detector.pipeline import feature_rows
from detector.policy import DEFAULT_DELAY_RATE, DEFAULT_REFUSE_RATE, Policy

__all__ = ["DEFAULT_MAX_SAMPLES", "DEFAULT_TREES", "TrainResult", "fit_model", "train"]

# Forest size, measured (docs/feature-design.md): 2,048-row subsamples (depth limit 11) let
# the trees see the thin tails attacks fall into (256 lost ~20 points of recall); 100 trees
# score within a point of 200 or 300 at half the serving cost of 200.
DEFAULT_TREES = 100
DEFAULT_MAX_SAMPLES = 2048

# Histogram resolution of the saved report (bins over [0, 1]).
_REPORT_BINS = 50
# Rows whose mean path-depth credit is each feature's "normal" contribution (reasons).
_REFERENCE_ROWS = 20_000


@dataclass(frozen=True)
class TrainResult:
    model: Model
    report: dict[str, Any]
    out_dir: Path


def train(
    events_path: Path,
    out_dir: Path,
    *,
    delay_rate: float = DEFAULT_DELAY_RATE,
    refuse_rate: float = DEFAULT_REFUSE_RATE,
    n_estimators: int = DEFAULT_TREES,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    seed: int = 0,
    plots: bool = True,
    signer: Signer | None = None,
) -> TrainResult:
    events = load_events(events_path)
    if len(events) < 2:
        raise ModelError(
            f"{events_path}: need at least 2 withdrawals to train, found {len(events)}"
        )
    rows = np.array([item.row for item in feature_rows(events)], dtype=np.float64)
    model, scores = fit_model(
        rows,
        delay_rate=delay_rate,
        refuse_rate=refuse_rate,
        n_estimators=n_estimators,
        max_samples=max_samples,
        random_state=seed,
        training={
            "source": events_path.name,
            "first_event": events[0].requested_at_text,
            "last_event": events[-1].requested_at_text,
        },
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    counts, edges = np.histogram(scores, bins=_REPORT_BINS, range=(0.0, 1.0))
    report = {
        "model_version": model.version,
        "events": len(events),
        "thresholds": model.policy.to_json(),
        "training_flagged": {
            "delay": float(
                np.mean(
                    (scores >= model.policy.delay_threshold)
                    & (scores < model.policy.refuse_threshold)
                )
            ),
            "refuse": float(np.mean(scores >= model.policy.refuse_threshold)),
        },
        "score_quantiles": {
            q: float(np.quantile(scores, float(q))) for q in ("0.5", "0.9", "0.99", "0.999")
        },
        "score_histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
    }
    (out_dir / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    if plots:
        from detector.offline.plots import save_score_histogram_png

        save_score_histogram_png(scores, model.policy, out_dir / "score_histogram.png")
    model.save(out_dir, signer=signer)  # last: the manifest covers the report and figure
    return TrainResult(model, report, out_dir)


def fit_model(
    rows: np.ndarray,
    *,
    delay_rate: float,
    refuse_rate: float,
    n_estimators: int = DEFAULT_TREES,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    random_state: int = 0,
    training: dict[str, Any] | None = None,
) -> tuple[Model, np.ndarray]:
    """Fit an IsolationForest on feature rows and calibrate the policy on them.

    Thresholds are the training-score quantiles that delay ``delay_rate`` and refuse
    ``refuse_rate`` of the training withdrawals. Returns the model and the training scores.
    """
    if not 0 < refuse_rate <= delay_rate < 1:
        raise ValueError(f"need 0 < refuse_rate ({refuse_rate}) <= delay_rate ({delay_rate}) < 1")
    if len(rows) < 2:
        raise ModelError(f"need at least 2 training withdrawals, got {len(rows)}")
    forest_sk = fit_forest(
        rows, n_estimators=n_estimators, max_samples=max_samples, random_state=random_state
    )
    reference = rows[np.random.default_rng(random_state).permutation(len(rows))[:_REFERENCE_ROWS]]
    forest = compile_forest(forest_sk, X_reference=reference)
    family = Family("all", tuple(range(len(FEATURE_NAMES))), forest)
    scores = forest.score(rows)
    policy = Policy(
        delay_threshold=float(np.quantile(scores, 1 - delay_rate)),
        refuse_threshold=float(np.quantile(scores, 1 - refuse_rate)),
    )
    ordinary = tuple(float(x) for x in np.median(rows, axis=0))
    digest = hashlib.sha256(np.ascontiguousarray(rows, dtype=np.float64).tobytes()).hexdigest()
    info = {
        "events": len(rows),
        "delay_rate": delay_rate,
        "refuse_rate": refuse_rate,
        "n_estimators": n_estimators,
        "max_samples": int(forest_sk.max_samples_),
        "random_state": random_state,
        **(training or {}),
    }
    version = f"iforest-{digest[:10]}"
    return Model(version, (family,), policy, ordinary, training=info), scores
