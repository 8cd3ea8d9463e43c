"""The served model: compiled forests, how their scores combine, the policy, all verified.

A model directory (an immutable artifact)::

    model.json          the manifest: format, version, feature schema and names, the learned
                        feature parameters, each family's forest file and calibration, how
                        family scores combine, the policy thresholds, the training summary,
                        the SHA-256 of every other file, and ``digest``: the SHA-256 of the
                        manifest itself (canonical JSON without ``digest``)
    forests/<family>.npz one compiled isolation forest per feature family
    signature.json      optional: an Ed25519 or HMAC-SHA256 signature of ``digest``
    ...                 reports and figures written by training (covered by ``files`` too)

One integrity layer: :meth:`Model.load` recomputes ``digest`` (so a threshold edited by hand
is refused), checks every file against the manifest (a changed, missing or added file is
refused), and, when a verification key is configured, requires a valid signature (so a
tampered artifact re-saved without the key is refused). Nothing is ever unpickled.

Scores: each family's forest scores the columns it owns (floored at their training medians);
``combine`` turns the family scores into one anomaly score in [0, 1), on which the policy's
thresholds were calibrated:

* ``evidence`` (the default): each family score becomes evidence ``L = -ln p``, ``p`` its
  training tail probability, empirical up to the family's 95th training percentile
  (``tail_to``; 98th in models saved before it was stored) and, beyond it, an exponential
  tail whose slope is fitted to the bulk (80th to 95th percentile). The
  training data holds unlabelled attacks, which set the empirical ranks at the very top;
  extrapolating from the bulk lets a family whose top lies far beyond its bulk (large amounts
  on card data, bursts) speak louder than one whose top is more of the same (busy merchants).
  The families combine as a soft maximum, ``L(1) + alpha L(2) + alpha^2 L(3)`` over the
  weighted evidence sorted in decreasing order, and the score is ``1 - exp(-scale x that)``,
  with ``scale`` set at training so that the delay threshold sits near 0.5.
* ``max_percentile``: each family score becomes its training percentile, and the largest
  one is the score (the alternative measured against it: docs/evaluation.md).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import math
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from detector.errors import ModelError
from detector.features import FEATURE_NAMES, FEATURE_SCHEMA, FeatureParams
from detector.policy import Policy
from detector.scoring import CompiledForest

__all__ = [
    "CALIBRATION_LEVELS",
    "COMBINE_METHODS",
    "DEFAULT_ALPHA",
    "MODEL_FORMAT",
    "READABLE_FORMATS",
    "Family",
    "Model",
    "ModelStore",
    "Signer",
    "Verifier",
    "generate_ed25519",
    "load_signer",
    "load_verifier",
    "manifest_digest",
    "read_manifest",
    "sign_artifact",
]

MODEL_FORMAT = 4  # bump when the manifest or the files change meaning; load refuses others
# Formats this build reads: 3 lacks each family's ``tail_to`` (its evidence ends the empirical
# part at LEGACY_TAIL_TO); 4 saves it, so a build that reads only 3 refuses a 4 rather than
# scoring it with the wrong tail.
READABLE_FORMATS = (3, 4)
COMBINE_METHODS = ("evidence", "max_percentile")
DEFAULT_ALPHA = 0.35
# Training-score quantiles each family keeps (levels 0, 0.001, ..., 1) and where its
# exponential tail's slope starts being fitted (TAIL_FROM). Where a family's empirical
# evidence ends is its ``tail_to``, saved with it; training chooses it per family
# (``detector.offline.training.FAMILY_TAIL_TO``). Models saved before ``tail_to`` existed
# end it at 0.98 (LEGACY_TAIL_TO).
CALIBRATION_LEVELS = np.linspace(0.0, 1.0, 1001)
TAIL_FROM = 0.80
LEGACY_TAIL_TO = 0.98
# Reasons name a second family when its evidence is within this many nats of the first's.
EXPLAIN_WITHIN = 2.0
MANIFEST = "model.json"
SIGNATURE = "signature.json"
_FORESTS = "forests"
_FAMILY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# What a signature signs: a domain prefix (so the bytes mean nothing elsewhere) + the digest.
_SIGNED_PREFIX = b"withdrawal-detector model digest v2\0"

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Family:
    """One feature family: a forest over some columns of the model row, and its calibration.

    ``floors``: each input's training median; inputs are floored there before the forest
    sees them (less than usual is never suspicious). ``notable``: each input's training 90th
    percentile (reasons name inputs above it). ``calibration``: the family's training scores
    at :data:`CALIBRATION_LEVELS` (ascending); ``slope``: the tail of the evidence beyond the
    ``tail_to`` training percentile (see the module docstring). ``weight`` multiplies the
    evidence.
    """

    name: str
    columns: tuple[int, ...]
    forest: CompiledForest
    floors: tuple[float, ...]
    notable: tuple[float, ...]
    calibration: tuple[float, ...]
    slope: float
    weight: float = 1.0
    tail_to: float = LEGACY_TAIL_TO

    @functools.cached_property
    def _tail_index(self) -> int:
        return round(self.tail_to * (CALIBRATION_LEVELS.size - 1))

    @functools.cached_property
    def _floor_array(self) -> FloatArray:
        return np.asarray(self.floors, dtype=np.float64)

    @functools.cached_property
    def _table(self) -> FloatArray:
        # Made once: converting the 1,001 calibration scores on every call cost ~20 us per
        # family, a third of scoring one withdrawal (bench/bench_decide.py).
        return np.asarray(self.calibration, dtype=np.float64)

    def inputs(self, rows: FloatArray) -> FloatArray:
        """The family's columns of ``rows``, floored at their training medians."""
        result: FloatArray = np.maximum(rows[:, self.columns], self._floor_array)
        return result

    def score(self, rows: FloatArray) -> FloatArray:
        return self.forest.score(self.inputs(rows))

    def percentile(self, scores: FloatArray) -> FloatArray:
        """Share of training withdrawals of this family scoring at or below each score."""
        result: FloatArray = np.interp(scores, self._table, CALIBRATION_LEVELS, left=0.0, right=1.0)
        return result

    def evidence(self, scores: FloatArray) -> FloatArray:
        """``-ln p`` of each score, ``p`` its training tail probability: empirical up to the
        ``tail_to`` percentile, an exponential tail fitted to the bulk beyond it."""
        table = self._table
        index = self._tail_index
        top = table[index]
        level = np.interp(scores, table[: index + 1], CALIBRATION_LEVELS[: index + 1])
        out: FloatArray = -np.log1p(-level)
        beyond = scores > top
        out[beyond] = (
            -math.log1p(-float(CALIBRATION_LEVELS[index])) + (scores[beyond] - top) * self.slope
        )
        return out


@dataclass(frozen=True)
class Model:
    version: str
    families: tuple[Family, ...]
    policy: Policy
    params: FeatureParams  # the learned scales the features measure against
    combine: str = "evidence"
    alpha: float = DEFAULT_ALPHA  # evidence: weight of the 2nd family (alpha ** 2: the 3rd)
    scale: float = 1.0  # evidence: score = 1 - exp(-scale * statistic)
    training: dict[str, Any] = field(default_factory=dict)
    feature_names: tuple[str, ...] = FEATURE_NAMES

    def __post_init__(self) -> None:
        if self.combine not in COMBINE_METHODS:
            raise ModelError(f"unknown combine method {self.combine!r}; known {COMBINE_METHODS}")
        if not (0.0 <= self.alpha <= 1.0 and self.scale > 0 and math.isfinite(self.scale)):
            raise ModelError(f"need 0 <= alpha <= 1 and scale > 0 ({self.alpha}, {self.scale})")
        if not self.families:
            raise ModelError("a model needs at least one family")
        width = len(self.feature_names)
        for family in self.families:
            if not _FAMILY_NAME.match(family.name):
                raise ModelError(f"bad family name {family.name!r}")
            if any(not 0 <= c < width for c in family.columns) or not family.columns:
                raise ModelError(f"family {family.name!r} has columns outside the feature row")
            k = len(family.columns)
            if family.forest.n_features != k:
                raise ModelError(
                    f"family {family.name!r}: forest has {family.forest.n_features} features, "
                    f"expected {k}"
                )
            if len(family.floors) != k or len(family.notable) != k:
                raise ModelError(f"family {family.name!r}: need one floor and notable per input")
            table = np.asarray(family.calibration, dtype=np.float64)
            if table.size != CALIBRATION_LEVELS.size or np.any(np.diff(table) < 0):
                raise ModelError(
                    f"family {family.name!r}: calibration must hold "
                    f"{CALIBRATION_LEVELS.size} ascending scores"
                )
            values = (*family.floors, *family.notable, *family.calibration)
            if not all(math.isfinite(v) for v in (*values, family.slope, family.weight)):
                raise ModelError(f"family {family.name!r}: calibration has NaN/inf")
            if family.slope <= 0 or family.weight <= 0:
                raise ModelError(f"family {family.name!r}: slope and weight must be > 0")
            if not 0.5 <= family.tail_to < 1.0:
                raise ModelError(f"family {family.name!r}: tail_to must be in [0.5, 1)")

    @property
    def ordinary(self) -> tuple[float, ...]:
        """Each input's training median, in row order ("not elevated" at or below it)."""
        out = [0.0] * len(self.feature_names)
        for family in self.families:
            for column, floor in zip(family.columns, family.floors, strict=True):
                out[column] = floor
        return tuple(out)

    # ------------------------------------------------------------------ scoring

    def evidence(self, rows: FloatArray) -> FloatArray:
        """``(n, n_families)``: each family's weighted evidence ``-ln p`` (see Family)."""
        if not len(rows):
            return np.empty((0, len(self.families)))
        return np.column_stack(
            [family.evidence(family.score(rows)) * family.weight for family in self.families]
        )

    def statistic(self, evidence: FloatArray) -> FloatArray:
        """The combined evidence: the largest family's, plus ``alpha`` x the second's, plus
        ``alpha ** 2`` x the third's (one strong deviation is enough; a second adds a little)."""
        ordered = -np.sort(-evidence, axis=1)
        weights = self.alpha ** np.arange(ordered.shape[1])
        result: FloatArray = ordered @ weights
        return result

    def score(self, rows: FloatArray) -> FloatArray:
        """The combined anomaly score of each row, in [0, 1)."""
        return self.score_with_evidence(rows)[0]

    def score_with_evidence(self, rows: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Scores and the per-family evidence behind them (reasons read it)."""
        if not len(rows):
            return np.empty(0), np.empty((0, len(self.families)))
        if self.combine == "max_percentile":
            pct = np.column_stack([f.percentile(f.score(rows)) for f in self.families])
            return pct.max(axis=1), -np.log1p(-np.minimum(pct, 1 - 1e-12))
        evidence = self.evidence(rows)
        result: FloatArray = -np.expm1(-self.scale * self.statistic(evidence))
        return result, evidence

    def excess_contributions(self, family: Family, rows: FloatArray) -> FloatArray:
        """``(n, len(family.columns))``: how much more each input of ``family`` isolated each
        row than it isolates a normal withdrawal (path-depth credit minus the training mean)."""
        got = family.forest.contributions(family.inputs(rows))
        result: FloatArray = got - family.forest.expected_contributions
        return result

    def explain(
        self, rows: FloatArray, evidence: FloatArray, *, limit: int = 3
    ) -> list[list[tuple[str, int]]]:
        """What drove each row's score, as ``(family, column)`` pairs, strongest first.

        The family with the most evidence, and the second when it is within
        :data:`EXPLAIN_WITHIN` nats of the first; in each, the inputs above their training
        90th percentile (else above their median, else the one that isolated the row most),
        ranked by how much more they isolated this row than a normal one. At most ``limit``.
        """
        out: list[list[tuple[str, int]]] = [[] for _ in range(len(rows))]
        if not len(rows):
            return out
        # The families each row names (the strongest, and the second when close), then each
        # family's contributions for the rows that name it only: a row's contributions do not
        # depend on the other rows, and most rows name one family.
        named: list[list[int]] = []
        strongest = np.argsort(-evidence, axis=1, kind="stable")[:, :2].tolist()
        for i, order in enumerate(strongest):
            top = evidence[i, order[0]]
            named.append(
                [
                    j
                    for rank, j in enumerate(order)
                    if not rank or evidence[i, j] >= top - EXPLAIN_WITHIN
                ]
            )
        gains: dict[tuple[int, int], FloatArray] = {}
        for j, family in enumerate(self.families):
            which = [i for i in range(len(rows)) if j in named[i]]
            if which:
                got = self.excess_contributions(family, rows[which])
                gains.update(((i, j), got[k]) for k, i in enumerate(which))
        for i in range(len(rows)):
            for j in named[i]:
                family = self.families[j]
                values = rows[i, family.columns]
                gain = gains[i, j]
                picked = [
                    k
                    for k, v in enumerate(values)
                    if v > family.notable[k] and v > family.floors[k]
                ] or [k for k, v in enumerate(values) if v > family.floors[k]]
                if not picked:
                    picked = [int(np.argmax(gain))]
                picked.sort(key=lambda k: -gain[k])
                out[i].extend((family.name, family.columns[k]) for k in picked[:2])
            del out[i][limit:]
        return out

    # ------------------------------------------------------------------ persistence

    def save(self, directory: Path, *, signer: Signer | None = None) -> None:
        """Write the artifact (forests, then the manifest over every file, then a signature).

        Files already in ``directory`` (training reports, figures) are covered by the
        manifest too; write them before saving.
        """
        directory.mkdir(parents=True, exist_ok=True)
        (directory / SIGNATURE).unlink(missing_ok=True)
        (directory / _FORESTS).mkdir(exist_ok=True)
        families = []
        for family in self.families:
            rel = f"{_FORESTS}/{family.name}.npz"
            family.forest.save(directory / rel)
            families.append(
                {
                    "name": family.name,
                    "columns": list(family.columns),
                    "file": rel,
                    "floors": list(family.floors),
                    "notable": list(family.notable),
                    "calibration": list(family.calibration),
                    "slope": family.slope,
                    "weight": family.weight,
                    "tail_to": family.tail_to,
                }
            )
        manifest: dict[str, Any] = {
            "format": MODEL_FORMAT,
            "version": self.version,
            "feature_schema": FEATURE_SCHEMA,
            "feature_names": list(self.feature_names),
            "params": self.params.to_json(),
            "families": families,
            "combine": self.combine,
            "alpha": self.alpha,
            "scale": self.scale,
            "policy": self.policy.to_json(),
            "training": self.training,
            "files": _file_digests(directory),
        }
        manifest["digest"] = manifest_digest(manifest)
        _write_atomic(directory / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if signer is not None:
            sign_artifact(directory, signer)

    @classmethod
    def load(cls, directory: Path, *, verifier: Verifier | None = None) -> Model:
        """Read and verify an artifact; :class:`ModelError` says what does not verify."""
        manifest = read_manifest(directory, verifier=verifier)
        legacy = manifest["format"] == 3
        try:
            families = tuple(
                Family(
                    str(f["name"]),
                    tuple(int(c) for c in f["columns"]),
                    CompiledForest.load(directory / _safe_relative(str(f["file"]))),
                    tuple(float(x) for x in f["floors"]),
                    tuple(float(x) for x in f["notable"]),
                    tuple(float(x) for x in f["calibration"]),
                    float(f["slope"]),
                    float(f["weight"]),
                    LEGACY_TAIL_TO if legacy else float(f["tail_to"]),
                )
                for f in manifest["families"]
            )
            return cls(
                version=str(manifest["version"]),
                families=families,
                policy=Policy(**manifest["policy"]),
                params=FeatureParams.from_json(manifest["params"]),
                combine=str(manifest["combine"]),
                alpha=float(manifest["alpha"]),
                scale=float(manifest["scale"]),
                training=dict(manifest.get("training", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{directory / MANIFEST}: malformed manifest: {exc}") from None


# ---------------------------------------------------------------------- the store


_VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ModelStore:
    """A directory of immutable, verified artifacts, one per version: ``<root>/<version>/``.

    (Any path works, so an object store mounted as a file system, e.g. s3fs or gcsfuse, can
    be the store.) :meth:`add` verifies an artifact before copying it in, and never
    replaces a version by different content.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if (p / MANIFEST).is_file() and not p.name.startswith(".")
        )

    def path_of(self, version: str) -> Path:
        if not _VERSION_NAME.match(version):
            raise ModelError(f"bad model version name {version!r}")
        return self.root / version

    def add(self, artifact: Path, *, verifier: Verifier | None = None) -> str:
        """Verify ``artifact`` and copy it in as its version; returns the version."""
        model = Model.load(artifact, verifier=verifier)
        target = self.path_of(model.version)
        digest = read_manifest(artifact, verifier=verifier)["digest"]
        if target.exists():
            if read_manifest(target)["digest"] != digest:
                raise ModelError(
                    f"{target} already holds a different artifact named {model.version}; "
                    "versions are immutable"
                )
            return model.version
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".{model.version}.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(artifact, staging)
        os.replace(staging, target)
        return model.version


# ---------------------------------------------------------------------- verification


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """SHA-256 of the manifest's canonical JSON without its ``digest`` field."""
    body = {k: v for k, v in manifest.items() if k != "digest"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def read_manifest(directory: Path, *, verifier: Verifier | None = None) -> dict[str, Any]:
    """The verified manifest of the artifact in ``directory`` (see the module docstring)."""
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(
            f"no model at {directory}: {path} is missing (train one with `detector train`)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is unreadable: {exc}") from None
    if not isinstance(manifest, dict):
        raise ModelError(f"{path}: not a manifest")
    if manifest.get("format") not in READABLE_FORMATS:
        raise ModelError(
            f"{path}: unsupported model format {manifest.get('format')!r} "
            f"(this build reads formats {READABLE_FORMATS}; retrain with `detector train`)"
        )
    try:
        actual = manifest_digest(manifest)
    except ValueError as exc:
        raise ModelError(f"{path}: manifest is not strict JSON: {exc}") from None
    if not hmac.compare_digest(str(manifest.get("digest", "")), actual):
        raise ModelError(
            f"{path}: the manifest was modified after it was written (digest mismatch); "
            "refusing to load"
        )
    if (
        manifest.get("feature_schema") != FEATURE_SCHEMA
        or tuple(manifest.get("feature_names", ())) != FEATURE_NAMES
    ):
        raise ModelError(
            f"{path}: model was trained on features {manifest.get('feature_schema')!r}, "
            f"this build computes {FEATURE_SCHEMA!r}; retrain it"
        )
    expected = manifest.get("files")
    actual_files = _file_digests(directory)
    if expected != actual_files:
        diff = sorted(
            name
            for name in set(expected or {}) | set(actual_files)
            if (expected or {}).get(name) != actual_files.get(name)
        )
        raise ModelError(
            f"{directory}: files do not match the manifest's SHA-256 ({', '.join(diff)}): "
            "corrupted or tampered; refusing to load"
        )
    signed = directory / SIGNATURE
    if verifier is not None:
        if not signed.is_file():
            raise ModelError(
                f"{directory}: unsigned, and a verification key is configured; refusing to load"
            )
        verifier.verify(actual, _read_signature(signed))
    return manifest


def _read_signature(path: Path) -> dict[str, str]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is unreadable: {exc}") from None
    if not isinstance(doc, dict) or not all(
        isinstance(doc.get(k), str) for k in ("algorithm", "key_id", "signature")
    ):
        raise ModelError(f"{path}: malformed signature file")
    return doc


def sign_artifact(directory: Path, signer: Signer) -> None:
    """Sign an artifact's (verified) manifest digest: writes ``signature.json``."""
    manifest = read_manifest(directory)
    doc = signer.sign(str(manifest["digest"]))
    _write_atomic(directory / SIGNATURE, json.dumps(doc, indent=2, sort_keys=True) + "\n")


class Signer(Protocol):
    def sign(self, digest: str) -> dict[str, str]: ...


class Verifier(Protocol):
    def verify(self, digest: str, signature: Mapping[str, str]) -> None: ...


@dataclass(frozen=True)
class _Hmac:
    """HMAC-SHA256 with a shared secret (whoever verifies can also sign)."""

    secret: bytes

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"key id\0" + self.secret).hexdigest()[:16]

    def sign(self, digest: str) -> dict[str, str]:
        mac = hmac.new(self.secret, _SIGNED_PREFIX + digest.encode(), hashlib.sha256).digest()
        return {
            "algorithm": "hmac-sha256",
            "key_id": self.key_id,
            "signature": base64.b64encode(mac).decode(),
        }

    def verify(self, digest: str, signature: Mapping[str, str]) -> None:
        _check_header(signature, "hmac-sha256", self.key_id)
        expected = self.sign(digest)["signature"]
        if not hmac.compare_digest(expected, signature["signature"]):
            raise ModelError("the model's signature does not verify: refusing to load")


@dataclass(frozen=True)
class _Ed25519:
    """Ed25519: training signs with the private key; workers hold only the public key."""

    private: Any | None
    public: Any

    @property
    def key_id(self) -> str:
        from cryptography.hazmat.primitives import serialization

        raw = self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return hashlib.sha256(raw).hexdigest()[:16]

    def sign(self, digest: str) -> dict[str, str]:
        if self.private is None:
            raise ModelError("signing needs the Ed25519 private key, not the public one")
        sig = self.private.sign(_SIGNED_PREFIX + digest.encode())
        return {
            "algorithm": "ed25519",
            "key_id": self.key_id,
            "signature": base64.b64encode(sig).decode(),
        }

    def verify(self, digest: str, signature: Mapping[str, str]) -> None:
        from cryptography.exceptions import InvalidSignature

        _check_header(signature, "ed25519", self.key_id)
        try:
            raw = base64.b64decode(signature["signature"], validate=True)
            self.public.verify(raw, _SIGNED_PREFIX + digest.encode())
        except (InvalidSignature, ValueError):
            raise ModelError("the model's signature does not verify: refusing to load") from None


def _check_header(signature: Mapping[str, str], algorithm: str, key_id: str) -> None:
    if signature.get("algorithm") != algorithm:
        raise ModelError(
            f"the model is signed with {signature.get('algorithm')!r}, the configured key is "
            f"{algorithm}: refusing to load"
        )
    if signature.get("key_id") != key_id:
        raise ModelError(
            f"the model is signed by key {signature.get('key_id')!r}, not by the configured "
            f"key {key_id}: refusing to load"
        )


# Shortest HMAC secret accepted (bytes): 256 bits, the size of the hash.
_MIN_SECRET_BYTES = 32


def _read_key(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read key file {path}: {exc.strerror}") from None
    return data


def load_signer(path: Path) -> Signer:
    """A signer from a key file: an Ed25519 private key (PEM) or an HMAC secret."""
    data = _read_key(path)
    if b"-----BEGIN" in data:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ModelError(f"{path}: not an unencrypted PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ModelError(f"{path}: only Ed25519 private keys are supported")
        return _Ed25519(key, key.public_key())
    return _Hmac(_secret(path, data))


def load_verifier(path: Path) -> Verifier:
    """A verifier from a key file: an Ed25519 public key (PEM) or the HMAC secret."""
    data = _read_key(path)
    if b"-----BEGIN" in data:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise ModelError(f"{path}: not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ModelError(f"{path}: only Ed25519 public keys are supported")
        return _Ed25519(None, key)
    return _Hmac(_secret(path, data))


def _secret(path: Path, data: bytes) -> bytes:
    secret = data.strip()
    if len(secret) < _MIN_SECRET_BYTES:
        raise ModelError(
            f"{path}: an HMAC secret must be at least {_MIN_SECRET_BYTES} bytes "
            f"(got {len(secret)}); e.g. `head -c 32 /dev/urandom | base64 > {path.name}`"
        )
    return secret


def generate_ed25519(private_path: Path, public_path: Path) -> None:
    """Write a new Ed25519 key pair (PEM): the private key for training, mode 0600."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private)
    public_path.write_bytes(public)


# ---------------------------------------------------------------------- files


def _file_digests(directory: Path) -> dict[str, str]:
    """SHA-256 of every file under ``directory`` but the manifest and the signature."""
    out = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel in (MANIFEST, SIGNATURE):
            continue
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _safe_relative(rel: str) -> str:
    """A manifest path that stays inside the artifact directory."""
    parts = Path(rel).parts
    if Path(rel).is_absolute() or ".." in parts or not parts:
        raise ModelError(f"manifest names a file outside the artifact: {rel!r}")
    return rel


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
