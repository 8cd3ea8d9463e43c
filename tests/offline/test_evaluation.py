"""Tests of ``detector evaluate`` (detector.offline.evaluation): one tiny end-to-end run, the
markdown/JSON/PNG outputs it writes, and the false-positive-budget matching helper."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.cli import main
from detector.offline.evaluation import (
    TARGET_NORMAL_FLAGGED_RATE,
    TARGET_RECALL,
    MatchedThreshold,
    match_threshold,
    run_evaluation,
)
from detector.offline.simulate import NORMAL_LABEL, SCENARIOS

# Tiny population: the whole run takes a couple of seconds (accounts, days).
_ACCOUNTS = 120
_DAYS = 6.0
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_MAIN_HEADER = (
    "| scenario | events | ours recall | static threshold recall | raw-amount iForest recall |"
)
# Figures that legitimately differ between two identical runs (timing, output paths).
_UNSTABLE = ("replay_events_per_second", "runtime_seconds", "command", "call")


class Run:
    def __init__(self, out: Path, figures: dict[str, Any], progress: list[str]) -> None:
        self.out = out
        self.figures = figures
        self.progress = progress
        self.markdown = out.read_text(encoding="utf-8")
        self.json = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("evaluation")
    out = root / "evaluation.md"
    lines: list[str] = []
    figures = run_evaluation(
        out, root / "work", accounts=_ACCOUNTS, days=_DAYS, progress=lines.append
    )
    return Run(out, figures, lines)


def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100.0 * value:.{digits}f}%"


def _table(markdown: str, header: str) -> dict[str, list[str]]:
    """Rows of the markdown table starting at ``header``: first cell -> the other cells."""
    lines = markdown.splitlines()
    start = lines.index(header)
    rows: dict[str, list[str]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


# --------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------


def test_main_table_has_every_scenario_and_both_baselines(run: Run) -> None:
    assert _MAIN_HEADER in run.markdown.splitlines()
    rows = _table(run.markdown, _MAIN_HEADER)
    assert list(rows) == [*SCENARIOS, "overall recall", "normal flagged rate"]
    assert all(len(cells) == 4 for cells in rows.values())


def test_json_file_is_the_returned_figures(run: Run) -> None:
    assert run.json == json.loads(json.dumps(run.figures))


def test_table_numbers_are_the_json_numbers(run: Run) -> None:
    fig = run.json
    rows = _table(run.markdown, _MAIN_HEADER)
    test_counts = fig["events"]["test"]
    for name in SCENARIOS:
        assert rows[name] == [
            str(test_counts[name]),
            _pct(fig["ours"]["by_scenario"][name]),
            _pct(fig["static_threshold"]["by_scenario"][name]),
            _pct(fig["raw_amount_iforest"]["by_scenario"][name]),
        ]
    assert rows["overall recall"] == [
        str(sum(test_counts[name] for name in SCENARIOS)),
        *(
            _pct(fig[m]["attack_recall"])
            for m in ("ours", "static_threshold", "raw_amount_iforest")
        ),
    ]
    assert rows["normal flagged rate"] == [
        str(test_counts[NORMAL_LABEL]),
        *(
            _pct(fig[m]["normal_flagged_rate"], 2)
            for m in ("ours", "static_threshold", "raw_amount_iforest")
        ),
    ]
    assert f"{sum(fig['events']['train'].values())} withdrawals" in run.markdown
    assert f"{sum(test_counts.values())} withdrawals" in run.markdown
    assert fig["model"]["version"] in run.markdown


def test_ours_matches_the_replayed_verdict_counts(run: Run) -> None:
    fig = run.json
    counts = fig["events"]["test"]
    assert fig["attack_events"] == sum(counts[name] for name in SCENARIOS)
    for name in SCENARIOS:
        recall = fig["ours"]["by_scenario"][name]
        if counts[name]:
            # Our flags are whole withdrawals: recall * events is an integer.
            assert recall * counts[name] == pytest.approx(round(recall * counts[name]))
    assert fig["config"]["test_attacks_per_scenario"] >= 1
    assert fig["config"]["train_attacks_per_scenario"] >= 1


def test_baselines_spend_the_same_false_positive_budget(run: Run) -> None:
    fig = run.json
    ours = fig["ours"]["normal_flagged_rate"]
    for method in ("static_threshold", "raw_amount_iforest"):
        assert fig[method]["normal_flagged_rate"] == pytest.approx(ours, abs=1e-9)
        refused = fig["refuse"][method]["normal_flagged_rate"]
        assert refused == pytest.approx(fig["refuse"]["ours"]["normal_flagged_rate"], abs=1e-9)
    for method in ("ours", "static_threshold", "raw_amount_iforest"):
        budget = fig["equal_budget"][method]["normal_flagged_rate"]
        assert budget == pytest.approx(fig["config"]["delay_rate"], abs=1e-9)
    threshold = fig["static_threshold"]["threshold"]
    if threshold is not None:
        assert f"${threshold:.2f}" in run.markdown


def test_target_is_stated_for_every_scenario_with_a_why_for_each_miss(run: Run) -> None:
    fig = run.json
    target = fig["target"]
    assert target["recall"] == TARGET_RECALL
    assert target["normal_flagged_rate"] == TARGET_NORMAL_FLAGGED_RATE
    assert f"**Met on {target['met']} of {len(SCENARIOS)} scenarios.**" in run.markdown
    for name in SCENARIOS:
        verdict = target["by_scenario"][name]
        recall = fig["ours"]["by_scenario"][name]
        expected = (
            recall is not None
            and recall >= TARGET_RECALL
            and fig["ours"]["normal_flagged_rate"] <= TARGET_NORMAL_FLAGGED_RATE
            and all(
                (fig[m]["by_scenario"][name] or 0.0) <= recall
                for m in ("static_threshold", "raw_amount_iforest")
            )
        )
        assert verdict["met"] is expected
        if verdict["met"]:
            assert f"- {name}: **met**" in run.markdown
        else:
            assert f"- {name}: **not met**" in run.markdown
            assert f"### {name}" in run.markdown


def test_why_sections_report_the_computed_feature_medians(run: Run) -> None:
    fig = run.json
    for name in SCENARIOS:
        info = fig["missed"][name]
        assert info["missed"] + info["caught"] == info["events"]
        if fig["target"]["by_scenario"][name]["met"] or not info["missed"]:
            continue
        section = run.markdown.split(f"### {name}\n", 1)[1].split("\n### ", 1)[0]
        assert f"{info['missed']} of {info['events']} {name} withdrawals were allowed" in section
        rows = _table(
            section, "| feature | ordinary (training median) | caught median | missed median |"
        )
        caught = info["median_features_caught"]
        for feature, missed in info["median_features_missed"].items():
            cells = rows[f"`{feature}`"]
            assert cells[0] == f"{info['ordinary'][feature]:.2f}"
            assert cells[1] == ("n/a" if caught is None else f"{caught[feature]:.2f}")
            assert cells[2] == f"{missed:.2f}"


def test_pngs_are_written_beside_the_markdown_and_embedded(run: Run) -> None:
    for key, name in (("pr", "evaluation_pr.png"), ("scores", "evaluation_scores.png")):
        assert run.json["figures"][key] == name
        path = run.out.parent / name
        assert path.read_bytes()[:8] == _PNG_MAGIC
        assert path.stat().st_size > 10_000
        assert f"]({name})" in run.markdown


def test_progress_lines_cover_every_stage(run: Run) -> None:
    text = "\n".join(run.progress)
    for stage in (
        "training history",
        "test set",
        "training our model",
        "replayed",
        "baselines",
        "wrote",
    ):
        assert stage in text


def test_same_configuration_gives_the_same_figures(run: Run, tmp_path: Path) -> None:
    again = run_evaluation(
        tmp_path / "evaluation.md",
        tmp_path / "work",
        accounts=_ACCOUNTS,
        days=_DAYS,
        progress=lambda _line: None,
    )
    first = {k: v for k, v in run.json.items() if k not in _UNSTABLE}
    second = {k: v for k, v in json.loads(json.dumps(again)).items() if k not in _UNSTABLE}
    assert first == second


def test_cli_writes_the_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "docs" / "evaluation.md"
    code = main(
        [
            "evaluate",
            "--out",
            str(out),
            "--work-dir",
            str(tmp_path / "work"),
            "--accounts",
            str(_ACCOUNTS),
            "--days",
            "4",
        ]
    )
    assert code == 0
    assert out.is_file() and out.with_suffix(".json").is_file()
    assert (out.parent / "evaluation_pr.png").is_file()
    assert "[evaluate]" in capsys.readouterr().out
    assert f"--accounts {_ACCOUNTS} --days 4`" in out.read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------
# match_threshold
# --------------------------------------------------------------------------------------


def test_distinct_scores_flag_exactly_the_rate() -> None:
    scores = np.arange(1.0, 101.0)
    matched = match_threshold(scores, 0.05)
    assert matched == MatchedThreshold(96.0, 1.0)
    weights = matched.weights(scores)
    assert weights.sum() == 5.0
    assert set(np.flatnonzero(weights).tolist()) == {95, 96, 97, 98, 99}


def test_ties_at_the_threshold_are_split_by_weight() -> None:
    scores = np.array([1.0, 2.0, 2.0, 2.0, 3.0])
    matched = match_threshold(scores, 0.4)  # 2 of 5: the 3, and 1 of the three 2s
    assert matched.threshold == 2.0
    assert matched.tie_fraction == pytest.approx(1.0 / 3.0)
    weights = matched.weights(scores)
    assert weights.tolist() == pytest.approx([0.0, 1 / 3, 1 / 3, 1 / 3, 1.0])
    assert weights.sum() == pytest.approx(2.0)


def test_all_tied_scores_are_flagged_with_the_rate_as_weight() -> None:
    scores = np.full(200, 7.0)
    matched = match_threshold(scores, 0.01)
    assert matched.threshold == 7.0
    assert matched.tie_fraction == pytest.approx(0.01)
    assert matched.weights(scores).sum() == pytest.approx(2.0)


def test_rate_zero_flags_nothing_and_rate_one_everything() -> None:
    scores = np.array([0.3, 0.1, 0.2, 0.2])
    nothing = match_threshold(scores, 0.0)
    assert math.isinf(nothing.threshold)
    assert nothing.weights(scores).sum() == 0.0
    assert nothing.weights(np.array([1e300])).sum() == 0.0
    assert match_threshold(scores, 1.0).weights(scores).tolist() == [1.0, 1.0, 1.0, 1.0]


def test_a_count_as_rate_survives_float_rounding() -> None:
    # Our normal flagged rate is count / n; rate * n must land back on the count.
    n, count = 65_775, 529
    scores = np.random.default_rng(0).permutation(n).astype(np.float64)
    matched = match_threshold(scores, count / n)
    assert matched.tie_fraction == 1.0
    assert matched.weights(scores).sum() == count


def test_weights_apply_to_other_scores_with_the_same_rule() -> None:
    matched = match_threshold(np.array([1.0, 2.0, 3.0, 4.0]), 0.5)
    assert matched.weights(np.array([2.5, 3.0, 3.5, 10.0])).tolist() == [0.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("scores", "rate"),
    [([], 0.1), ([1.0, 2.0], -0.1), ([1.0, 2.0], 1.5), ([1.0, float("nan")], 0.5)],
)
def test_invalid_inputs_are_refused(scores: list[float], rate: float) -> None:
    with pytest.raises(ValueError):
        match_threshold(scores, rate)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=60),
    data=st.data(),
)
def test_flagged_weight_is_exactly_the_rate_and_monotone(
    values: list[int], data: st.DataObject
) -> None:
    scores = np.asarray(values, dtype=np.float64)
    count = data.draw(st.integers(min_value=0, max_value=scores.size))
    weights = match_threshold(scores, count / scores.size).weights(scores)
    assert weights.sum() == pytest.approx(count, abs=1e-9)
    assert np.all((weights >= 0.0) & (weights <= 1.0))
    order = np.argsort(scores, kind="stable")
    assert np.all(np.diff(weights[order]) >= -1e-12)  # a higher score never weighs less
