"""``detector train``: replay history through the features, fit, calibrate, save, report."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import ModelError
from detector.events import format_rfc3339
from detector.features import FAMILIES, FeatureParams, learn_params
from detector.model import (
    CALIBRATION_LEVELS,
    DEFAULT_ALPHA,
    TAIL_FROM,
    Family,
    Model,
    Signer,
)
from detector.offline.dataset import load_events
from detector.offline.forests import compile_forest, fit_forest
from detector.pipeline import feature_rows
from detector.policy import DEFAULT_DELAY_RATE, DEFAULT_REFUSE_RATE, Policy

__all__ = [
    "DEFAULT_MAX_SAMPLES",
    "DEFAULT_TREES",
    "FAMILY_MAX_SAMPLES",
    "FAMILY_TAIL_TO",
    "TrainResult",
    "fit_model",
    "train",
]

# Forest size, measured (docs/feature-design.md): 2,048-row subsamples (depth limit 11) let
# the trees see the thin tails attacks fall into (256 lost ~20 points of recall); 100 trees
# score within a point of 200 or 300 at half the serving cost of 200.
DEFAULT_TREES = 100
DEFAULT_MAX_SAMPLES = 2048
# Per family, measured (docs/feature-design.md, "Sample size and tail per family"): the
# destination family's inputs are sparse counts (first-time payers, fan-in) whose tail is a
# few rows in ten thousand; a 2,048-row subsample rarely holds one, so a scam address's
# fifth new payer scored like the busiest ordinary destination. Its trees see 16,384 rows
# (capped at the training rows); the amount and frequency families keep 2,048 (larger
# subsamples lowered Sparkov's validation recall there).
FAMILY_MAX_SAMPLES: dict[str, int] = {
    "amount": DEFAULT_MAX_SAMPLES,
    "frequency": DEFAULT_MAX_SAMPLES,
    "destination": 16_384,
}
# Where each family's empirical evidence ends (saved per family as ``tail_to``): above it
# the evidence is the exponential tail fitted to the TAIL_FROM..tail_to bulk. The top of
# the amount and frequency families' training scores hold unlabelled attacks and benign
# bursts (0.90); the destination family's larger subsample resolves its top, and its
# empirical ranks hold up to the 98th percentile.
FAMILY_TAIL_TO: dict[str, float] = {"amount": 0.90, "frequency": 0.90, "destination": 0.98}

# Histogram resolution of the saved report (bins over [0, 1]).
_REPORT_BINS = 50
# Rows whose mean path-depth credit is each feature's "normal" contribution (reasons).
_REFERENCE_ROWS = 20_000
# Reasons name an input above this training quantile.
_NOTABLE = 0.9


@dataclass(frozen=True)
class TrainResult:
    model: Model
    report: dict[str, Any]
    out_dir: Path


def train(
    events_path: Path,
    out_dir: Path,
    *,
    warmup_path: Path | None = None,
    fit_from: float | None = None,
    delay_rate: float = DEFAULT_DELAY_RATE,
    refuse_rate: float = DEFAULT_REFUSE_RATE,
    n_estimators: int = DEFAULT_TREES,
    max_samples: int | None = None,
    combine: str = "evidence",
    weights: Mapping[str, float] | None = None,
    seed: int = 0,
    plots: bool = True,
    signer: Signer | None = None,
) -> TrainResult:
    """Learn the feature scales from the history, replay it through the features, fit one
    forest per family on the rows from ``fit_from`` on (earlier rows, and ``warmup_path``'s
    withdrawals, only build state: an account's first withdrawals in a history are cold and
    unlike the ones the worker will see), calibrate, save, report."""
    events = load_events(events_path)
    if warmup_path is not None:
        history = load_events(warmup_path)
        if fit_from is None and events:
            fit_from = events[0].requested_at
        events = sorted([*history, *events], key=lambda e: e.requested_at)
    if len(events) < 2:
        raise ModelError(
            f"{events_path}: need at least 2 withdrawals to train, found {len(events)}"
        )
    params = learn_params(events)
    rows = np.array([item.row for item in feature_rows(events, params)], dtype=np.float64)
    if fit_from is not None:
        rows = rows[np.array([e.requested_at >= fit_from for e in events], dtype=bool)]
        if len(rows) < 2:
            raise ModelError(f"{events_path}: fewer than 2 withdrawals after the warm-up")
    model, scores = fit_model(
        rows,
        params,
        delay_rate=delay_rate,
        refuse_rate=refuse_rate,
        n_estimators=n_estimators,
        max_samples=max_samples,
        combine=combine,
        weights=weights,
        random_state=seed,
        training={
            "source": events_path.name,
            "first_event": events[0].requested_at_text,
            "last_event": events[-1].requested_at_text,
            "fit_from": None if fit_from is None else format_rfc3339(fit_from),
            "history_events": len(events),
        },
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    counts, edges = np.histogram(scores, bins=_REPORT_BINS, range=(0.0, 1.0))
    report = {
        "model_version": model.version,
        "events": len(rows),
        "history_events": len(events),
        "params": params.to_json(),
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
    params: FeatureParams,
    *,
    delay_rate: float,
    refuse_rate: float,
    n_estimators: int = DEFAULT_TREES,
    max_samples: int | None = None,
    combine: str = "evidence",
    weights: Mapping[str, float] | None = None,
    alpha: float = DEFAULT_ALPHA,
    random_state: int = 0,
    training: dict[str, Any] | None = None,
) -> tuple[Model, np.ndarray]:
    """One isolation forest per feature family on its inputs (floored at their training
    medians), each calibrated on its training scores; the policy's thresholds are the
    training quantiles of the combined score that delay ``delay_rate`` and refuse
    ``refuse_rate`` of the training withdrawals. Returns the model and the training scores.
    """
    if not 0 < refuse_rate <= delay_rate < 1:
        raise ValueError(f"need 0 < refuse_rate ({refuse_rate}) <= delay_rate ({delay_rate}) < 1")
    if len(rows) < 2:
        raise ModelError(f"need at least 2 training withdrawals, got {len(rows)}")
    weights = dict(weights or {})
    unknown = set(weights) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown families in weights: {sorted(unknown)}")
    samples = {
        name: FAMILY_MAX_SAMPLES.get(name, DEFAULT_MAX_SAMPLES)
        if max_samples is None
        else max_samples
        for name in FAMILIES
    }
    rng = np.random.default_rng(random_state)
    reference_rows = rng.permutation(len(rows))[:_REFERENCE_ROWS]
    families = []
    start = 0
    for name, inputs in FAMILIES.items():
        columns = tuple(range(start, start + len(inputs)))
        start += len(inputs)
        block = rows[:, columns]
        floors = np.median(block, axis=0)
        floored = np.maximum(block, floors)
        forest_sk = fit_forest(
            floored,
            n_estimators=n_estimators,
            max_samples=samples[name],
            random_state=random_state,
        )
        forest = compile_forest(forest_sk, X_reference=floored[reference_rows])
        scores = forest.score(floored)
        tail_to = FAMILY_TAIL_TO[name]
        low, high = np.quantile(scores, [TAIL_FROM, tail_to])
        families.append(
            Family(
                name,
                columns,
                forest,
                tuple(float(x) for x in floors),
                tuple(float(x) for x in np.quantile(block, _NOTABLE, axis=0)),
                tuple(float(x) for x in np.quantile(scores, CALIBRATION_LEVELS)),
                float(math.log((1 - TAIL_FROM) / (1 - tail_to)) / max(high - low, 1e-9)),
                float(weights.get(name, 1.0)),
                tail_to,
            )
        )
    digest = hashlib.sha256(np.ascontiguousarray(rows, dtype=np.float64).tobytes())
    digest.update(
        json.dumps(
            [
                combine,
                sorted(weights.items()),
                alpha,
                n_estimators,
                sorted(samples.items()),
                random_state,
                TAIL_FROM,  # the evidence's tail: a model scoring otherwise is another version
                sorted(FAMILY_TAIL_TO.items()),
            ]
        ).encode()
    )
    draft = Model(
        f"iforest-{digest.hexdigest()[:10]}",
        tuple(families),
        Policy(0.0, 1.0),
        params,
        combine=combine,
        alpha=alpha,
        training={},
    )
    scale = 1.0
    if combine == "evidence":
        # Put the delay threshold near 0.5: the score keeps its resolution where it matters.
        statistic = draft.statistic(draft.evidence(rows))
        at_delay = float(np.quantile(statistic, 1 - delay_rate))
        scale = math.log(2.0) / at_delay if at_delay > 0 else 1.0
    model = dataclasses.replace(draft, scale=scale)
    scores = model.score(rows)
    policy = Policy(
        delay_threshold=float(np.quantile(scores, 1 - delay_rate)),
        refuse_threshold=float(np.quantile(scores, 1 - refuse_rate)),
    )
    info = {
        "events": len(rows),
        "delay_rate": delay_rate,
        "refuse_rate": refuse_rate,
        "n_estimators": n_estimators,
        "max_samples": {name: min(n, len(rows)) for name, n in samples.items()},
        "random_state": random_state,
        **(training or {}),
    }
    return dataclasses.replace(model, policy=policy, training=info), scores
