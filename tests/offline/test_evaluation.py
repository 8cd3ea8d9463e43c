"""Tests of ``detector evaluate`` (detector.offline.evaluation): one tiny end-to-end run over
every world (a tiny fake Sparkov directory written here in the benchmark's format), the
markdown/JSON/PNG outputs, and the budget helpers."""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.cli import main
from detector.offline.evaluation import (
    BUDGET,
    TARGETS,
    WORLDS,
    MatchedThreshold,
    match_threshold,
    render,
    run_evaluation,
    top_budget,
)
from detector.offline.evaluation.baselines import BASELINES, OURS, TITLES, baseline_scores
from detector.offline.evaluation.history import history
from detector.offline.evaluation.report import (
    FEEDBACK_HEADER,
    SHIFTED_HEADER,
    SPARKOV_HEADER,
    SUMMARY_HEADER,
    TARGETS_HEADER,
    budget_header,
    num,
    pct,
    policy_header,
    pts,
)
from detector.offline.simulate import NORMAL_LABEL, SCENARIOS

# Tiny worlds: the whole run (five simulated worlds + a fake benchmark) takes seconds.
_ACCOUNTS = 120
_DAYS = 4.0
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# The benchmark's own baselines script, when this machine has it (compared with ours).
_SPARKOV_BASELINES = Path(__file__).resolve().parents[3] / "shared/benchmarks/sparkov/baselines.py"
# Figures that legitimately differ between two identical runs (timing, machine).
_UNSTABLE = ("timings", "replay_events_per_second")


def write_fake_sparkov(directory: Path, rows: int = 420, seed: int = 5) -> dict[str, Any]:
    """A few hundred card payments in the benchmark's format: 40 cards, 30 merchants, a
    train part then a test part, frauds (large amounts) with 7-day-late reports."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    start = datetime(2019, 1, 1, tzinfo=UTC)
    docs = []
    for i in range(rows):
        fraud = i > 60 and rng.random() < 0.05
        amount = round(rng.uniform(300, 1200) if fraud else rng.lognormvariate(3.5, 0.8), 2)
        moment = start + timedelta(minutes=29 * i)
        docs.append(
            {
                "withdrawal_id": f"spk-{i:05d}",
                "account_id": f"cc-{rng.randrange(40)}",
                "asset": "USD",
                "amount": f"{amount:.2f}",
                "amount_usd": amount,
                "destination": f"m-{rng.randrange(30)}",
                "requested_at": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "metadata": {
                    "label": "fraud" if fraud else "normal",
                    "category": rng.choice(("shopping_net", "grocery_pos", "misc_net")),
                },
            }
        )
    cut = (rows * 2) // 3
    reports = [
        {
            "withdrawal_id": d["withdrawal_id"],
            "account_id": d["account_id"],
            "destination": d["destination"],
            "label": "fraud",
            "reported_at": (
                datetime.strptime(d["requested_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
                + timedelta(days=7)
            ).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        for d in docs
        if d["metadata"]["label"] == "fraud"
    ]
    for name, part in (
        ("train.jsonl.gz", docs[:cut]),
        ("test.jsonl.gz", docs[cut:]),
        ("labels.jsonl.gz", reports),
    ):
        with gzip.open(directory / name, "wt", encoding="utf-8") as out:
            out.writelines(json.dumps(d) + "\n" for d in part)
    return {"train": docs[:cut], "test": docs[cut:], "labels": reports}


class Run:
    def __init__(self, out: Path, figures: dict[str, Any], progress: list[str], fake: Any) -> None:
        self.out = out
        self.figures = figures
        self.progress = progress
        self.fake = fake
        self.markdown = out.read_text(encoding="utf-8")
        self.json = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("evaluation")
    fake = write_fake_sparkov(root / "sparkov")
    out = root / "docs" / "evaluation.md"
    lines: list[str] = []
    figures = run_evaluation(
        out,
        root / "work",
        accounts=_ACCOUNTS,
        days=_DAYS,
        sparkov=root / "sparkov",
        progress=lines.append,
    )
    return Run(out, figures, lines, fake)


def _table(markdown: str, header: str) -> dict[str, list[str]]:
    """Rows of the (first) markdown table starting at ``header``: first cell -> the rest."""
    lines = markdown.splitlines()
    start = lines.index(header)
    rows: dict[str, list[str]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def _section(markdown: str, title: str) -> str:
    """The markdown from heading ``title`` to the next heading of the same level."""
    level = title.split(" ", 1)[0]
    body = markdown.split(title + "\n", 1)[1]
    ends = [i for i in (body.find("\n" + level + " "),) if i >= 0]
    return body[: ends[0]] if ends else body


# --------------------------------------------------------------------------------------
# The document
# --------------------------------------------------------------------------------------


def test_every_world_and_section_is_in_the_report(run: Run) -> None:
    md = run.markdown
    for heading in (
        "## Summary",
        "## Targets",
        "## How it was generated",
        "## (a) Our simulator, every scenario",
        "### At the model's own policy",
        "### At a 1% review budget (1% of normal withdrawals)",
        "### Feedback",
        "### What the misses look like",
        "## (b) Shifted worlds",
        "## (c) Sparkov",
        "### By merchant category",
        "## Figures",
    ):
        assert f"\n{heading}\n" in md, heading
    for world in WORLDS[1:]:
        assert f"### What the misses look like: {world.title}\n" in md
    assert list(run.json["simulator"]) == [w.name for w in WORLDS]
    assert "methods" in run.json["sparkov"]
    sparkov = _section(md, "## (c) Sparkov")
    assert "### Feedback" in sparkov and "### What the misses look like" in sparkov


def test_json_file_is_the_returned_figures_and_rerenders_to_the_same_markdown(
    run: Run, tmp_path: Path
) -> None:
    assert run.json == json.loads(json.dumps(run.figures))
    again = tmp_path / "again.md"
    render(run.out.with_suffix(".json"), again)
    assert again.read_text(encoding="utf-8") == run.markdown


def test_summary_numbers_are_the_json_numbers(run: Run) -> None:
    rows = _table(run.markdown, SUMMARY_HEADER)
    for world in run.json["simulator"].values():
        ours = world["methods"][OURS]
        test = world["events"]["test"]
        fb = world["feedback"]["policy"]
        cells = rows[f"simulator, {world['title']}"]
        assert cells[0] == str(sum(test.values()))
        assert cells[1] == str(sum(test[s] for s in SCENARIOS))
        assert cells[2] == pct(ours["budget"]["attack_recall"])
        assert cells[3] == num(ours["average_precision"]["all"], 3)
        best = max(BASELINES, key=lambda m: world["methods"][m]["budget"]["attack_recall"] or 0)
        assert cells[4] == f"{pct(world['methods'][best]['budget']['attack_recall'])} ({best})"
        assert cells[5:] == [
            pct(ours["policy"]["attack_recall"]),
            pct(ours["policy"]["normal_flagged_rate"], 2),
            pct(fb["attack_recall"]),
            pct(fb["normal_flagged_rate"], 2),
        ]
    spk = run.json["sparkov"]
    cells = rows["Sparkov, test part"]
    assert cells[:4] == [
        str(spk["rows"]["test"]),
        str(spk["frauds"]["test"]),
        pct(spk["methods"][OURS]["budget"]["recall"]),
        num(spk["methods"][OURS]["average_precision"], 3),
    ]
    assert cells[5:] == [
        pct(spk["ours_policy"]["recall"]),
        pct(spk["ours_policy"]["normal_flagged_rate"], 2),
        pct(spk["feedback"]["policy"]["recall"]),
        pct(spk["feedback"]["policy"]["normal_flagged_rate"], 2),
    ]


def test_simulator_tables_are_the_json_numbers(run: Run) -> None:
    base = run.json["simulator"]["base"]
    section = _section(run.markdown, "## (a) Our simulator, every scenario")
    policy = _table(section, policy_header())
    budget = _table(section, budget_header())
    feedback = _table(section, FEEDBACK_HEADER)
    methods = (OURS, *BASELINES)
    for name in SCENARIOS:
        count = str(base["events"]["test"][name])
        expected = [pct(base["methods"][m]["policy"]["by_scenario"][name]) for m in methods]
        assert policy[name] == [count, *expected]
        recall = [pct(base["methods"][m]["budget"]["by_scenario"][name]) for m in methods]
        ap = [num(base["methods"][m]["average_precision"][name], 3) for m in methods]
        assert budget[name] == recall + ap
        fb = base["feedback"]
        assert feedback[name] == [
            count,
            pct(base["methods"][OURS]["policy"]["by_scenario"][name]),
            pct(fb["policy"]["by_scenario"][name]),
            pct(base["methods"][OURS]["budget"]["by_scenario"][name]),
            pct(fb["budget"]["by_scenario"][name]),
        ]
    assert policy["normal flagged rate"][1:] == [
        pct(base["methods"][m]["policy"]["normal_flagged_rate"], 2) for m in methods
    ]


def test_shifted_and_sparkov_tables_are_the_json_numbers(run: Run) -> None:
    rows = _table(run.markdown, SHIFTED_HEADER)
    for row in run.json["shifted"]:
        assert rows[row["title"]][:6] == [
            pct(row["budget_recall"]),
            pts(row["budget_delta"]),
            pct(row["policy_recall"]),
            pts(row["policy_delta"]),
            pct(row["policy_normal_flagged_rate"], 2),
            num(row["average_precision"], 3),
        ]
    base = run.json["simulator"]["base"]["methods"][OURS]["budget"]["attack_recall"]
    for row in run.json["shifted"]:
        world = run.json["simulator"][row["world"]]["methods"][OURS]["budget"]["attack_recall"]
        assert row["budget_delta"] == pytest.approx(world - base)
    spk = run.json["sparkov"]
    table = _table(run.markdown, SPARKOV_HEADER)
    for method in (OURS, *BASELINES):
        entry = spk["methods"][method]
        assert table[TITLES[method]][:5] == [
            num(entry["roc_auc"], 3),
            num(entry["average_precision"], 3),
            num(entry["budget"]["recall"], 3),
            num(entry["budget"]["precision"], 3),
            pct(entry["budget"]["normal_flagged_rate"], 2),
        ]


def test_targets_are_each_stated_with_their_figure(run: Run) -> None:
    rows = _table(run.markdown, TARGETS_HEADER)
    targets = run.json["targets"]
    assert len(targets) == 4 + len(WORLDS) - 1
    for target in targets:
        status = {True: "**met**", False: "**not met**", None: "not measured"}[target["met"]]
        assert rows[target["text"]][-1] == status
    by_id = {t["id"]: t for t in targets}
    spk = run.json["sparkov"]["methods"][OURS]
    assert by_id["sparkov_recall"]["figure"] == spk["budget"]["recall"]
    assert by_id["sparkov_recall"]["met"] == (spk["budget"]["recall"] >= TARGETS["sparkov_recall"])
    scenario = by_id["simulator_scenario_recall"]
    by = run.json["simulator"]["base"]["methods"][OURS]["budget"]["by_scenario"]
    assert scenario["figure"] == min(v for v in by.values() if v is not None)
    for world in WORLDS[1:]:
        shifted = by_id[f"shifted_{world.name}"]
        assert shifted["met"] == (abs(shifted["figure"]) <= TARGETS["shifted_points"])
    met = sum(1 for t in targets if t["met"])
    assert f"**{met} of {len(targets)} measured targets met.**" in run.markdown


def test_command_seeds_and_timings_are_recorded(run: Run) -> None:
    fig = run.json
    assert fig["command"].startswith("detector evaluate --out ")
    assert f"--accounts {_ACCOUNTS} --days {_DAYS:g} --seed 1" in fig["command"]
    assert f"`{fig['command']}`" in run.markdown
    assert fig["config"]["seed"] == 1 and fig["config"]["model_seed"] == 0
    for world in fig["simulator"].values():
        assert set(world["timings"]) >= {"simulate_s", "train_s", "replay_s", "total_s"}
    assert fig["sparkov"]["timings"]["total_s"] > 0


# --------------------------------------------------------------------------------------
# The measures behind the numbers
# --------------------------------------------------------------------------------------


def test_baselines_spend_the_same_false_positive_budget(run: Run) -> None:
    for world in run.json["simulator"].values():
        ours = world["methods"][OURS]["policy"]["normal_flagged_rate"]
        for method in BASELINES:
            entry = world["methods"][method]
            assert entry["policy"]["normal_flagged_rate"] == pytest.approx(ours, abs=1e-9)
        for method in (OURS, *BASELINES):
            rate = world["methods"][method]["budget"]["normal_flagged_rate"]
            assert rate == pytest.approx(BUDGET, abs=1e-9)
    spk = run.json["sparkov"]
    flagged = round(BUDGET * spk["rows"]["test"])
    for method in (OURS, *BASELINES):
        assert spk["methods"][method]["budget"]["flagged"] == flagged


def test_every_test_withdrawal_is_decided_and_counted(run: Run) -> None:
    for world in run.json["simulator"].values():
        counts = world["events"]["test"]
        ours = world["methods"][OURS]["policy"]
        for name in SCENARIOS:
            recall = ours["by_scenario"][name]
            if counts[name]:  # our flags are whole withdrawals
                assert recall * counts[name] == pytest.approx(round(recall * counts[name]))
        assert counts[NORMAL_LABEL] > 0
        assert sum(world["events"]["train"][s] for s in SCENARIOS) > 0  # few, not none


def test_feedback_only_adds_flags_and_catches_scam_payments(run: Run) -> None:
    for world in run.json["simulator"].values():
        ours = world["methods"][OURS]
        fb = world["feedback"]
        assert fb["labels"] > 0
        for key in ("policy", "budget"):
            assert fb[key]["normal_flagged_rate"] >= ours[key]["normal_flagged_rate"] - 1e-12
            for name in SCENARIOS:
                with_fb, without = fb[key]["by_scenario"][name], ours[key]["by_scenario"][name]
                if without is not None:
                    assert with_fb >= without - 1e-12
    base = run.json["simulator"]["base"]
    scam_with = base["feedback"]["policy"]["by_scenario"]["scam_address"]
    assert scam_with > base["methods"][OURS]["policy"]["by_scenario"]["scam_address"]
    spk = run.json["sparkov"]
    assert spk["feedback"]["labels"] == len(run.fake["labels"])
    assert spk["feedback"]["policy"]["recall"] >= spk["ours_policy"]["recall"]


def test_misses_are_described_for_every_world(run: Run) -> None:
    for world in run.json["simulator"].values():
        for name in SCENARIOS:
            info = world["misses"]["by_scenario"][name]
            caught = info["caught_describe"]["n"]
            assert info["missed"] + caught == info["events"] == world["events"]["test"][name]
    misses = run.json["sparkov"]["misses"]
    assert misses["caught"]["n"] + misses["missed"]["n"] == run.json["sparkov"]["frauds"]["test"]


def test_pngs_are_written_beside_the_markdown_and_embedded(run: Run) -> None:
    names = run.json["figures"]
    assert set(names) == {"pr", "scores", "worlds", "sparkov_pr"}
    for name in names.values():
        path = run.out.parent / name
        assert path.read_bytes()[:8] == _PNG_MAGIC
        assert path.stat().st_size > 10_000
        assert f"]({name})" in run.markdown


def test_progress_lines_cover_every_stage(run: Run) -> None:
    text = "\n".join(run.progress)
    for world in WORLDS:
        for stage in ("simulating", "training", "replaying", "done in"):
            assert f"[{world.name}] {stage}" in text, (world.name, stage)
    for stage in ("[sparkov] training", "[sparkov] replaying", "[sparkov] done", "wrote"):
        assert stage in text


def test_same_configuration_gives_the_same_figures(run: Run, tmp_path: Path) -> None:
    again = run_evaluation(
        tmp_path / "evaluation.md",
        tmp_path / "work",
        accounts=_ACCOUNTS,
        days=_DAYS,
        worlds=["base"],
        sparkov=None,
        progress=lambda _line: None,
    )

    def stable(world: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in world.items() if k not in _UNSTABLE}

    first = stable(run.json["simulator"]["base"])
    assert stable(json.loads(json.dumps(again))["simulator"]["base"]) == first
    assert again["sparkov"] == {"skipped": "not requested (--no-sparkov)"}
    assert "Not run: not requested" in (tmp_path / "evaluation.md").read_text(encoding="utf-8")


def test_unknown_world_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown worlds"):
        run_evaluation(tmp_path / "e.md", tmp_path / "w", worlds=["mars"], sparkov=None)


def test_cli_runs_a_quick_evaluation_and_rerenders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "docs" / "evaluation.md"
    args = ["evaluate", "--out", str(out), "--work-dir", str(tmp_path / "work")]
    quick = ["--accounts", str(_ACCOUNTS), "--days", "3", "--worlds", "base"]
    assert main([*args, *quick, "--sparkov", str(tmp_path / "absent")]) == 0
    text = out.read_text(encoding="utf-8")
    assert "Not run:" in text and "absent does not hold train.jsonl.gz" in text
    assert "[evaluate]" in capsys.readouterr().out
    assert "--accounts 120 --days 3 --seed 1" in text
    out.write_text("stale", encoding="utf-8")
    assert main(["evaluate", "--out", str(out), "--from-json", str(out.with_suffix(".json"))]) == 0
    assert out.read_text(encoding="utf-8") == text


# --------------------------------------------------------------------------------------
# Against the benchmark's own script (when this machine has it)
# --------------------------------------------------------------------------------------


def _benchmark_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sparkov_baselines", _SPARKOV_BASELINES)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not _SPARKOV_BASELINES.is_file(), reason="no Sparkov benchmark here")
def test_history_and_baselines_reproduce_the_benchmark_script(tmp_path: Path) -> None:
    bench = _benchmark_script()
    write_fake_sparkov(tmp_path, rows=600, seed=11)
    tr, te = (
        bench.load(str(tmp_path / "train.jsonl.gz")),
        bench.load(str(tmp_path / "test.jsonl.gz")),
    )
    acc, n_train = tr[1] + te[1], len(tr[0])
    ts, amt = np.concatenate([tr[2], te[2]]), np.concatenate([tr[3], te[3]])
    med30, c1h, c24h = bench.history_features(acc, ts, amt)
    ours = history(acc, ts, amt, tr[6] + te[6])
    np.testing.assert_array_equal(ours.median_30d, med30)
    np.testing.assert_array_equal(ours.count_1h, c1h)
    np.testing.assert_array_equal(ours.count_24h, c24h)
    ratio = ours.ratio_of(amt)
    scores = baseline_scores(amt[:n_train], amt[n_train:], ratio[:n_train], ratio[n_train:])
    la = np.log(amt)
    np.testing.assert_allclose(
        scores["iforest_amount"], bench.forest(la[:n_train, None], la[n_train:, None])
    )
    expected = np.maximum(
        bench.pct_rank(amt[:n_train], amt[n_train:]),
        bench.pct_rank(ratio[:n_train], ratio[n_train:]),
    )
    np.testing.assert_array_equal(scores["max_pct_rank"], expected)
    for values in scores.values():
        mask, ties = top_budget(values)
        theirs, their_ties = bench.top_budget(values)
        np.testing.assert_array_equal(mask, theirs)
        assert ties == their_ties


# --------------------------------------------------------------------------------------
# top_budget
# --------------------------------------------------------------------------------------


def test_top_budget_flags_round_budget_times_n_with_seeded_ties() -> None:
    scores = np.array([5.0] * 50 + [1.0] * 150)
    mask, ties = top_budget(scores, 0.1)
    assert mask.sum() == 20 and ties == 50
    assert np.all(scores[mask] == 5.0)
    again, _ = top_budget(scores, 0.1)
    np.testing.assert_array_equal(mask, again)
    other, _ = top_budget(scores, 0.1, seed=1)
    assert not np.array_equal(mask, other)
    assert top_budget(np.array([1.0, 2.0]), 0.01)[0].sum() == 0  # round(0.02) = 0


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
