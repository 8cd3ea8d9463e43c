"""The model artifact: one integrity layer over every file, optional signatures, combining."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from kafka_io import DEFAULT_MODEL
from samples import withdrawal

from detector.errors import ModelError
from detector.model import (
    CALIBRATION_LEVELS,
    EXPLAIN_WITHIN,
    MANIFEST,
    SIGNATURE,
    Family,
    Model,
    generate_ed25519,
    load_signer,
    load_verifier,
    manifest_digest,
    sign_artifact,
)
from detector.pipeline import FeatureState
from detector.policy import Policy

SECRET = b"0123456789abcdef0123456789abcdef-test-secret"


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, copy)
    return copy


def _edit_manifest(directory: Path, *, redigest: bool, **changes: object) -> None:
    path = directory / MANIFEST
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    if redigest:  # what someone re-saving the artifact without the key would do
        manifest["digest"] = manifest_digest(manifest)
    path.write_text(json.dumps(manifest))


def test_the_shipped_model_verifies_and_scores(artifact: Path) -> None:
    model = Model.load(artifact)
    rows = np.zeros((3, len(model.feature_names)))
    scores = model.score(rows)
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))
    assert [f.name for f in model.families] == ["amount", "frequency", "destination"]
    for family in model.families:
        assert model.excess_contributions(family, rows).shape == (3, len(family.columns))
    assert model.params.unit_s > 0 and model.training["fit_from"]


@pytest.mark.parametrize(
    "change",
    [
        {"policy": {"delay_threshold": 1.0, "refuse_threshold": 1.0}},  # never hold anything
        {"alpha": 0.0},
        {"params": {}},
        {"training": {"source": "elsewhere"}},
        {"version": "iforest-0000000000"},
    ],
)
def test_a_hand_edited_manifest_is_refused(artifact: Path, change: dict[str, object]) -> None:
    _edit_manifest(artifact, redigest=False, **change)
    with pytest.raises(ModelError, match="modified after it was written"):
        Model.load(artifact)


def test_every_file_is_covered(artifact: Path) -> None:
    report = artifact / "training_report.json"
    report.write_text(report.read_text().replace("0", "1", 1))
    with pytest.raises(ModelError, match=r"training_report\.json"):
        Model.load(artifact)


def test_an_added_or_missing_file_is_refused(artifact: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(artifact, other)
    (artifact / "forests" / "extra.npz").write_bytes(b"x")
    with pytest.raises(ModelError, match=r"extra\.npz"):
        Model.load(artifact)
    (other / "score_histogram.png").unlink()
    with pytest.raises(ModelError, match=r"score_histogram\.png"):
        Model.load(other)


def test_a_manifest_cannot_point_outside_the_artifact(artifact: Path) -> None:
    manifest = json.loads((artifact / MANIFEST).read_text())
    manifest["families"][0]["file"] = "../../etc/passwd"
    _edit_manifest(artifact, redigest=True, families=manifest["families"])
    with pytest.raises(ModelError, match="outside the artifact"):
        Model.load(artifact)


def test_an_older_format_is_refused_with_a_hint(artifact: Path) -> None:
    _edit_manifest(artifact, redigest=True, format=1)
    with pytest.raises(ModelError, match=r"unsupported model format 1.*retrain"):
        Model.load(artifact)


# ----------------------------------------------------------------------- signatures


def _hmac_key(tmp_path: Path, secret: bytes = SECRET) -> Path:
    key = tmp_path / "model.key"
    key.write_bytes(secret)
    return key


def test_hmac_signed_artifact_loads_with_its_key_only(artifact: Path, tmp_path: Path) -> None:
    key = _hmac_key(tmp_path)
    sign_artifact(artifact, load_signer(key))
    assert Model.load(artifact, verifier=load_verifier(key)).version
    other = _hmac_key(tmp_path / "..", SECRET[::-1])
    with pytest.raises(ModelError, match="not by the configured key"):
        Model.load(artifact, verifier=load_verifier(other))


def test_a_resaved_artifact_without_the_key_is_refused(artifact: Path, tmp_path: Path) -> None:
    key = _hmac_key(tmp_path)
    sign_artifact(artifact, load_signer(key))
    # The attacker lowers the thresholds and recomputes the digest (not the signature).
    _edit_manifest(
        artifact, redigest=True, policy={"delay_threshold": 1.0, "refuse_threshold": 1.0}
    )
    assert Model.load(artifact).policy.delay_threshold == 1.0  # no key configured: digest only
    with pytest.raises(ModelError, match="does not verify"):
        Model.load(artifact, verifier=load_verifier(key))


def test_an_unsigned_artifact_is_refused_when_a_key_is_configured(
    artifact: Path, tmp_path: Path
) -> None:
    with pytest.raises(ModelError, match="unsigned"):
        Model.load(artifact, verifier=load_verifier(_hmac_key(tmp_path)))


def test_ed25519_signing_needs_the_private_key_and_verifies_with_the_public(
    artifact: Path, tmp_path: Path
) -> None:
    private, public = tmp_path / "ed.pem", tmp_path / "ed.pub"
    generate_ed25519(private, public)
    assert private.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ModelError, match="private key"):
        sign_artifact(artifact, load_signer(public))  # a public PEM is not a signing key
    sign_artifact(artifact, load_signer(private))
    assert json.loads((artifact / SIGNATURE).read_text())["algorithm"] == "ed25519"
    Model.load(artifact, verifier=load_verifier(public))
    with pytest.raises(ModelError, match="signed with 'ed25519'"):
        Model.load(artifact, verifier=load_verifier(_hmac_key(tmp_path)))
    sig = json.loads((artifact / SIGNATURE).read_text())
    sig["signature"] = sig["signature"][::-1]
    (artifact / SIGNATURE).write_text(json.dumps(sig))
    with pytest.raises(ModelError, match="does not verify"):
        Model.load(artifact, verifier=load_verifier(public))


def test_short_hmac_secrets_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="at least 32 bytes"):
        load_verifier(_hmac_key(tmp_path, b"short"))


# ----------------------------------------------------------------------- combining


def _family(base: Family, name: str, calibration: np.ndarray, weight: float = 1.0) -> Family:
    return dataclasses.replace(
        base, name=name, calibration=tuple(float(x) for x in calibration), weight=weight
    )


def test_evidence_is_empirical_to_the_98th_percentile_then_an_exponential_tail(
    artifact: Path,
) -> None:
    base = Model.load(artifact).families[0]
    family = _family(base, "f", np.linspace(0.3, 0.7, CALIBRATION_LEVELS.size))
    family = dataclasses.replace(family, slope=10.0, tail_to=0.98)
    q98 = 0.3 + 0.4 * 0.98
    got = family.evidence(np.array([0.2, 0.3, 0.5, q98, q98 + 0.1]))
    np.testing.assert_allclose(
        got, [0.0, 0.0, -math.log(0.5), -math.log(0.02), -math.log(0.02) + 1.0], atol=1e-9
    )
    np.testing.assert_allclose(
        family.percentile(np.array([0.2, 0.5, 0.9])), [0.0, 0.5, 1.0], atol=1e-9
    )


def test_tail_to_is_saved_with_each_family_and_older_models_keep_the_98th(
    artifact: Path, tmp_path: Path
) -> None:
    model = Model.load(artifact)
    if json.loads((artifact / MANIFEST).read_text())["format"] == 3:  # before tail_to
        assert all(f.tail_to == 0.98 for f in model.families)
    base = _family(model.families[0], "f", np.linspace(0.3, 0.7, CALIBRATION_LEVELS.size))
    family = dataclasses.replace(base, slope=10.0, tail_to=0.95)
    q95 = 0.3 + 0.4 * 0.95
    got = family.evidence(np.array([0.5, q95, q95 + 0.1]))
    np.testing.assert_allclose(
        got, [-math.log(0.5), -math.log(0.05), -math.log(0.05) + 1.0], atol=1e-9
    )
    edited = dataclasses.replace(
        model, families=tuple(dataclasses.replace(f, tail_to=0.95) for f in model.families)
    )
    edited.save(tmp_path / "m")
    again = Model.load(tmp_path / "m")
    assert json.loads((tmp_path / "m" / MANIFEST).read_text())["format"] == 4
    assert [f.tail_to for f in again.families] == [0.95] * len(model.families)
    rows = np.random.default_rng(0).random((50, len(model.feature_names))) * 3
    np.testing.assert_allclose(again.score(rows), edited.score(rows))
    with pytest.raises(ModelError, match="tail_to"):
        dataclasses.replace(model, families=(dataclasses.replace(base, tail_to=1.0),))


def test_one_strong_family_is_enough_and_a_second_adds_a_little(artifact: Path) -> None:
    model = Model.load(artifact)
    evidence = np.array([[6.0, 0.0, 0.0], [6.0, 6.0, 0.0], [2.0, 2.0, 2.0], [0.0, 0.0, 6.0]])
    stat = model.statistic(evidence)
    a = model.alpha
    np.testing.assert_allclose(stat, [6.0, 6 + 6 * a, 2 + 2 * a + 2 * a * a, 6.0])
    assert stat[0] == stat[3] > stat[2]  # one strong family beats three weak ones


def test_the_delay_threshold_sits_near_one_half(artifact: Path) -> None:
    model = Model.load(artifact)
    assert 0.45 < model.policy.delay_threshold < 0.55 < model.policy.refuse_threshold < 1


def test_max_percentile_takes_the_strongest_family(artifact: Path) -> None:
    base = Model.load(artifact)
    model = dataclasses.replace(base, combine="max_percentile")
    rows = np.zeros((4, len(base.feature_names)))
    rows[1, base.families[1].columns[0]] = 50.0  # frequency far out
    scores, evidence = model.score_with_evidence(rows)
    pct = np.column_stack([f.percentile(f.score(rows)) for f in base.families])
    np.testing.assert_allclose(scores, pct.max(axis=1))
    assert evidence.shape == (4, 3) and np.argmax(evidence[1]) == 1


def test_a_family_needs_a_full_ascending_calibration(artifact: Path) -> None:
    base = Model.load(artifact)
    bad = _family(base.families[0], "amount", np.linspace(0.7, 0.3, CALIBRATION_LEVELS.size))
    with pytest.raises(ModelError, match="calibration"):
        dataclasses.replace(base, families=(bad, *base.families[1:]))
    short = _family(base.families[0], "amount", np.linspace(0.3, 0.7, 11))
    with pytest.raises(ModelError, match="calibration"):
        dataclasses.replace(base, families=(short, *base.families[1:]))


def test_reasons_name_the_driving_family_and_its_elevated_inputs(artifact: Path) -> None:
    model = Model.load(artifact)
    state = FeatureState(model.params)
    typical = math.exp(model.params.acct_log_median)
    t0, gap = 1_790_000_000.0, model.params.acct_gap_s
    for i in range(30):
        for account in ("victim", "other"):
            value = typical * (1 + 0.1 * (i % 3))
            state.step(withdrawal(t0 + i * gap, value, account=account, wid=f"{account}{i}"))
    drain = state.step(
        withdrawal(t0 + 30 * gap, typical * 200, account="victim", dest="thief", wid="drain")
    )
    usual = state.step(withdrawal(t0 + 30 * gap, typical, account="other", wid="usual"))
    rows = np.array([drain.row, usual.row])
    scores, evidence = model.score_with_evidence(rows)
    assert scores[0] >= model.policy.delay_threshold > scores[1]
    drivers = model.explain(rows, evidence)
    names = [(family, model.feature_names[column]) for family, column in drivers[0]]
    assert names[0] in {
        ("amount", "amount_vs_history"),
        ("destination", "amount_to_new_destination"),
    }
    assert all(len(d) <= 3 for d in drivers)


def test_a_rows_reasons_do_not_depend_on_its_batch(artifact: Path) -> None:
    """``explain`` computes a family's contributions only for the rows that name it; a row's
    reasons are the same alone, in any batch, and as with every family's contributions."""
    model = Model.load(artifact)
    rng = np.random.default_rng(3)
    ordinary = np.asarray(model.ordinary)
    # Ordinary rows with one or two families pushed into their tails, and a few untouched.
    rows = np.repeat(ordinary[None, :], 60, axis=0)
    for i in range(50):
        for family in rng.choice(model.families, size=1 + i % 2, replace=False):
            column = int(rng.choice(family.columns))
            rows[i, column] += float(rng.uniform(0.5, 6.0))
    _, evidence = model.score_with_evidence(rows)
    batch = model.explain(rows, evidence)
    alone = [model.explain(rows[i : i + 1], evidence[i : i + 1])[0] for i in range(len(rows))]
    assert batch == alone
    assert any(len({f for f, _ in d}) == 2 for d in batch)  # some rows name two families

    assert batch == _explain_with_every_family(model, rows, evidence)


def _explain_with_every_family(
    model: Model, rows: np.ndarray, evidence: np.ndarray, limit: int = 3
) -> list[list[tuple[str, int]]]:
    """``Model.explain`` as it was written first: every family's contributions for every
    row, then the same choice (the top family, the second within ``EXPLAIN_WITHIN``)."""
    gains = {f.name: model.excess_contributions(f, rows) for f in model.families}
    out: list[list[tuple[str, int]]] = []
    for i in range(len(rows)):
        order = np.argsort(-evidence[i], kind="stable")
        drivers: list[tuple[str, int]] = []
        for rank, j in enumerate(order[:2]):
            if rank and evidence[i, j] < evidence[i, order[0]] - EXPLAIN_WITHIN:
                break
            family = model.families[int(j)]
            values, gain = rows[i, family.columns], gains[family.name][i]
            picked = [
                k for k, v in enumerate(values) if v > family.notable[k] and v > family.floors[k]
            ] or [k for k, v in enumerate(values) if v > family.floors[k]]
            picked = picked or [int(np.argmax(gain))]
            picked.sort(key=lambda k: -gain[k])
            drivers.extend((family.name, family.columns[k]) for k in picked[:2])
        out.append(drivers[:limit])
    return out


def test_policy_verdicts_of_a_batch_equal_one_by_one() -> None:
    policy = Policy(delay_threshold=0.5, refuse_threshold=0.6)
    scores = np.array([0.0, 0.4999999999, 0.5, 0.55, 0.6, 0.6000001, 1.0, np.nextafter(0.5, 0)])
    assert policy.verdicts(scores) == [policy.verdict(float(s)) for s in scores]
    same = Policy(delay_threshold=0.5, refuse_threshold=0.5)
    assert same.verdicts(scores) == [same.verdict(float(s)) for s in scores]
    assert policy.verdicts(np.empty(0)) == []
