"""The served model: a compiled forest plus its policy, saved as verified arrays + JSON.

A model directory holds ``model.json`` (format, feature schema, thresholds, training
summary, and the SHA-256 of every forest file) and the forest's own files written by
:meth:`CompiledForest.save`. :meth:`Model.load` refuses anything that does not verify:
nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import ModelError
from detector.features import FEATURE_NAMES, FEATURE_SCHEMA
from detector.policy import Policy
from detector.scoring import CompiledForest

__all__ = ["MODEL_FORMAT", "Model", "fit_model"]

MODEL_FORMAT = 1
_MANIFEST = "model.json"
_FOREST = "forest"


@dataclass(frozen=True)
class Model:
    version: str
    forest: CompiledForest
    policy: Policy
    ordinary: tuple[float, ...]  # per-feature training median: "not elevated" below it
    training: dict[str, Any] = field(default_factory=dict)
    feature_names: tuple[str, ...] = FEATURE_NAMES

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.forest.save(directory / _FOREST)
        manifest = {
            "format": MODEL_FORMAT,
            "version": self.version,
            "feature_schema": FEATURE_SCHEMA,
            "feature_names": list(self.feature_names),
            "policy": self.policy.to_json(),
            "ordinary": list(self.ordinary),
            "training": self.training,
            "files": _digests(directory),
        }
        (directory / _MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Model:
        path = directory / _MANIFEST
        try:
            manifest = json.loads(path.read_text())
        except FileNotFoundError:
            raise ModelError(
                f"no model at {directory}: {path} is missing (train one with `detector train`)"
            ) from None
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path} is unreadable: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != MODEL_FORMAT:
            raise ModelError(
                f"{path}: unsupported model format {manifest.get('format')!r}"
                if isinstance(manifest, dict)
                else f"{path}: not a manifest"
            )
        if (
            manifest.get("feature_schema") != FEATURE_SCHEMA
            or tuple(manifest.get("feature_names", ())) != FEATURE_NAMES
        ):
            raise ModelError(
                f"{path}: model was trained on features "
                f"{manifest.get('feature_schema')!r}, this build computes "
                f"{FEATURE_SCHEMA!r}; retrain it"
            )
        expected = manifest.get("files")
        actual = _digests(directory)
        if expected != actual:
            raise ModelError(
                f"{directory}: forest files do not match the manifest's SHA-256 "
                "(corrupted or tampered); refusing to load"
            )
        try:
            forest = CompiledForest.load(directory / _FOREST)
            policy = Policy(**manifest["policy"])
            ordinary = tuple(float(x) for x in manifest["ordinary"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{path}: malformed manifest: {exc}") from None
        if forest.n_features != len(FEATURE_NAMES) or len(ordinary) != len(FEATURE_NAMES):
            raise ModelError(
                f"{directory}: forest has {forest.n_features} features, "
                f"expected {len(FEATURE_NAMES)}"
            )
        return cls(
            str(manifest["version"]), forest, policy, ordinary, dict(manifest.get("training", {}))
        )


def fit_model(
    rows: np.ndarray,
    *,
    delay_rate: float,
    refuse_rate: float,
    n_estimators: int = 100,
    max_samples: int = 2048,
    random_state: int = 0,
    training: dict[str, Any] | None = None,
) -> tuple[Model, np.ndarray]:
    """Fit an IsolationForest on feature rows and calibrate the policy on them.

    Thresholds are the training-score quantiles that delay ``delay_rate`` and refuse
    ``refuse_rate`` of the training withdrawals. Returns the model and the training scores.
    """
    from sklearn.ensemble import IsolationForest

    if not 0 < refuse_rate <= delay_rate < 1:
        raise ValueError(f"need 0 < refuse_rate ({refuse_rate}) <= delay_rate ({delay_rate}) < 1")
    if len(rows) < 2:
        raise ModelError(f"need at least 2 training withdrawals, got {len(rows)}")
    forest_sk = IsolationForest(
        n_estimators=n_estimators,
        max_samples=min(max_samples, len(rows)),
        random_state=random_state,
    )
    forest_sk.fit(rows)
    reference = rows[np.random.default_rng(random_state).permutation(len(rows))[:20_000]]
    forest = CompiledForest.from_sklearn(forest_sk, X_reference=reference)
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
        "max_samples": forest_sk.max_samples_,
        "random_state": random_state,
        **(training or {}),
    }
    version = f"iforest-{digest[:10]}"
    return Model(version, forest, policy, ordinary, info), scores


def _digests(directory: Path) -> dict[str, str]:
    root = directory / _FOREST
    files = (
        sorted(p for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file())
        if root.exists()
        else []
    )
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files
    }
