"""The evaluation's markdown, written only from the figures' JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from detector.features import FEATURE_NAMES
from detector.offline import simulate
from detector.offline.evaluation.measures import (
    _METHOD_TITLES,
    _ORDINARY_EPS,
    _OURS,
    _RAW,
    _STATIC,
    TARGET_NORMAL_FLAGGED_RATE,
    TARGET_RECALL,
)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def _target(ours: dict[str, Any], baselines: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """Per scenario: met, and every reason it is not."""
    rate = ours["normal_flagged_rate"]
    by: dict[str, Any] = {}
    for name in simulate.SCENARIOS:
        recall = ours["by_scenario"][name]
        failures: list[dict[str, Any]] = []
        if recall is None:
            failures.append({"kind": "no_events"})
        else:
            if recall < TARGET_RECALL:
                failures.append({"kind": "recall", "recall": recall})
            if rate > TARGET_NORMAL_FLAGGED_RATE:
                failures.append({"kind": "normal_flagged_rate", "rate": rate})
            for method, result in baselines.items():
                other = result["by_scenario"][name]
                if other is not None and other > recall:
                    failures.append({"kind": "baseline", "method": method, "recall": other})
        by[name] = {"met": not failures, "failures": failures}
    return {
        "recall": TARGET_RECALL,
        "normal_flagged_rate": TARGET_NORMAL_FLAGGED_RATE,
        "by_scenario": by,
        "met": sum(1 for v in by.values() if v["met"]),
        "scenarios": len(by),
    }


# ---------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------


def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100.0 * value:.{digits}f}%"


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _counts_text(counts: Mapping[str, int]) -> str:
    parts = [f"{counts.get(simulate.NORMAL_LABEL, 0)} normal"]
    parts += [f"{counts.get(name, 0)} {name}" for name in simulate.SCENARIOS]
    return ", ".join(parts)


def _failure_text(failure: Mapping[str, Any], ours: Mapping[str, Any], name: str) -> str:
    kind = failure["kind"]
    if kind == "no_events":
        return "no test withdrawals of this scenario"
    if kind == "recall":
        return f"recall {_pct(failure['recall'])} < {_pct(TARGET_RECALL, 0)}"
    if kind == "normal_flagged_rate":
        return (
            f"normal flagged rate {_pct(failure['rate'], 2)} > "
            f"{_pct(TARGET_NORMAL_FLAGGED_RATE, 0)}"
        )
    return (
        f"{_METHOD_TITLES[failure['method']]} recall {_pct(failure['recall'])} > ours "
        f"{_pct(ours['by_scenario'][name])}"
    )


def _why_paragraph(name: str, figures: Mapping[str, Any]) -> list[str]:
    info = figures["missed"][name]
    ours = figures[_OURS]
    target = figures["target"]["by_scenario"][name]
    policy = figures["model"]
    lines = [f"### {name}", ""]
    kinds = {f["kind"] for f in target["failures"]}
    if info["missed"]:
        lines.append(
            f"{info['missed']} of {info['events']} {name} withdrawals were allowed. Their "
            f"median score is {_num(info['median_score_missed'], 3)} against a delay "
            f"threshold of {_num(policy['delay_threshold'], 3)} (caught ones: median "
            f"{_num(info['median_score_caught'], 3)})."
        )
        missed = info["median_features_missed"]
        caught = info["median_features_caught"]
        ordinary = info["ordinary"]
        at_ordinary = [f for f in FEATURE_NAMES if missed[f] <= ordinary[f] + _ORDINARY_EPS]
        elevated = [f for f in FEATURE_NAMES if f not in at_ordinary]
        lines.append("")
        lines.append(
            "In the median missed withdrawal these features are at their ordinary value "
            "(at or below the training median, so they add no evidence): "
            + (", ".join(f"`{f}`" for f in at_ordinary) or "none")
            + "."
        )
        lines.append(
            "Elevated in the missed withdrawals: "
            + (
                ", ".join(
                    f"`{f}` ({_num(missed[f])} vs ordinary {_num(ordinary[f])})" for f in elevated
                )
                or "none"
            )
            + "."
        )
        if caught is not None:
            higher = sorted(
                (f for f in FEATURE_NAMES if caught[f] > missed[f]),
                key=lambda f: caught[f] - missed[f],
                reverse=True,
            )
            lines.append(
                "Higher in the caught than in the missed ones (where they differ): "
                + (
                    ", ".join(f"`{f}` ({_num(caught[f])} vs {_num(missed[f])})" for f in higher)
                    or "none"
                )
                + "."
            )
        lines += [
            "",
            "| feature | ordinary (training median) | caught median | missed median |",
            "|---|---:|---:|---:|",
        ]
        for f in FEATURE_NAMES:
            lines.append(
                f"| `{f}` | {_num(ordinary[f])} | "
                f"{_num(None if caught is None else caught[f])} | {_num(missed[f])} |"
            )
    if "baseline" in kinds:
        for failure in target["failures"]:
            if failure["kind"] == "baseline":
                extra = figures["baseline_only"][failure["method"]][name]
                lines += [
                    "",
                    f"The {_METHOD_TITLES[failure['method']]} flags "
                    f"{_pct(failure['recall'])} of {name} against ours "
                    f"{_pct(ours['by_scenario'][name])}: it flags (weight > 0) "
                    f"{extra['events']} withdrawals that ours allows, median amount "
                    f"${_num(extra['median_usd'])}.",
                ]
    if "normal_flagged_rate" in kinds:
        lines += [
            "",
            f"Our normal flagged rate on the test set is "
            f"{_pct(ours['normal_flagged_rate'], 2)}, above the "
            f"{_pct(TARGET_NORMAL_FLAGGED_RATE, 0)} budget: the thresholds calibrated on "
            f"the training scores (training flagged rate "
            f"{_pct(policy['training_flagged_rate'], 2)}) do not transfer exactly.",
        ]
    lines.append("")
    return lines


def _markdown(figures: Mapping[str, Any]) -> str:
    cfg = figures["config"]
    ours, static, raw = figures[_OURS], figures[_STATIC], figures[_RAW]
    model = figures["model"]
    budget = figures["equal_budget"]
    ap = figures["average_precision"]
    test_counts = figures["events"]["test"]
    train_counts = figures["events"]["train"]
    lines = [
        "# Evaluation: our detector vs baselines",
        "",
        "Generated by one command; do not edit by hand. Every number below was computed by "
        "that run (the events/s and the runtime depend on the machine; everything else is "
        "seeded and reproducible).",
        "",
        "## How it was generated",
        "",
        f"- Command: `{figures['command']}`",
        f"- Equivalent call: `{figures['call']}`",
        f"- Training history: simulated, {cfg['accounts']} accounts x {cfg['days']:g} days, "
        f"seed {cfg['seed_train']}, attacks per scenario: {cfg['train_attacks_per_scenario']} "
        f"(real history is mostly normal): {sum(train_counts.values())} withdrawals "
        f"({_counts_text(train_counts)}).",
        f"- Test set: a separate simulation, seed {cfg['seed_test']}, same size, "
        f"attacks per scenario: {cfg['test_attacks_per_scenario']}: "
        f"{sum(test_counts.values())} withdrawals ({_counts_text(test_counts)}).",
        f"- Our model: `train()` (isolation forest over our {len(FEATURE_NAMES)} features, "
        f"{cfg['n_estimators']} trees, max_samples {cfg['max_samples']}, seed "
        f"{cfg['model_seed']}), thresholds calibrated on the *training* scores to delay "
        f"{_pct(cfg['delay_rate'], 2)} and refuse {_pct(cfg['refuse_rate'], 2)}: delay >= "
        f"{_num(model['delay_threshold'], 4)}, refuse >= {_num(model['refuse_threshold'], 4)} "
        f"(model `{model['version']}`).",
        f"- Test replay: `replay()`, the worker's decision logic, at "
        f"{figures['replay_events_per_second']:.0f} events/s on this machine. Flagged = "
        "delay or refuse.",
        "- Static threshold baseline: flag when `amount_usd` >= T, "
        + (
            f"T = ${_num(static['threshold'])}, chosen so that its flagged rate on the test "
            if static["threshold"] is not None
            else "T above every amount (flags nothing), so that its flagged rate on the test "
        )
        + f"set's normal withdrawals equals ours ({_pct(ours['normal_flagged_rate'], 2)}).",
        "- Raw-amount iForest baseline: sklearn `IsolationForest` on ln(`amount_usd`) alone "
        "(1 feature, same trees and max_samples as ours), fit on the training withdrawals, "
        "thresholded at our normal flagged rate on the test set.",
        "- The baselines' thresholds are set on the *test* normals (an advantage they would "
        "not have in production; ours only saw training data). Withdrawals tied exactly at a "
        "baseline's threshold count as flagged with the weight that makes the normal rate "
        f"exact (static: {_num(static['tie_fraction'], 3)}, raw-amount iForest: "
        f"{_num(raw['tie_fraction'], 3)}; 1 = every tied withdrawal flagged).",
        "",
        "## Results at the configured policy (same normal flagged rate for every method)",
        "",
        "| scenario | events | ours recall | static threshold recall | raw-amount iForest recall |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in simulate.SCENARIOS:
        lines.append(
            f"| {name} | {test_counts.get(name, 0)} | "
            f"{_pct(ours['by_scenario'][name])} | {_pct(static['by_scenario'][name])} | "
            f"{_pct(raw['by_scenario'][name])} |"
        )
    lines.append(
        f"| overall recall | {figures['attack_events']} | "
        f"{_pct(ours['attack_recall'])} | {_pct(static['attack_recall'])} | "
        f"{_pct(raw['attack_recall'])} |"
    )
    lines.append(
        f"| normal flagged rate | {test_counts.get(simulate.NORMAL_LABEL, 0)} | "
        f"{_pct(ours['normal_flagged_rate'], 2)} | "
        f"{_pct(static['normal_flagged_rate'], 2)} | "
        f"{_pct(raw['normal_flagged_rate'], 2)} |"
    )
    target = figures["target"]
    lines += [
        "",
        "## Target",
        "",
        f"Target: >= {_pct(TARGET_RECALL, 0)} of attack withdrawals flagged while <= "
        f"{_pct(TARGET_NORMAL_FLAGGED_RATE, 0)} of normal ones are, and at least the recall "
        "of every baseline, on every scenario. "
        f"**Met on {target['met']} of {target['scenarios']} scenarios.**",
        "",
    ]
    for name in simulate.SCENARIOS:
        verdict = target["by_scenario"][name]
        if verdict["met"]:
            lines.append(f"- {name}: **met** (recall {_pct(ours['by_scenario'][name])}).")
        else:
            reasons = "; ".join(_failure_text(f, ours, name) for f in verdict["failures"])
            lines.append(f"- {name}: **not met**: {reasons}.")
    missing = [n for n in simulate.SCENARIOS if not target["by_scenario"][n]["met"]]
    if missing:
        lines += [
            "",
            "## Why the missed scenarios miss",
            "",
            "Medians over the test withdrawals of the scenario, from the feature rows "
            'the replay scored; "ordinary" is the training median the model stores '
            "for each feature.",
            "",
        ]
        for name in missing:
            lines += _why_paragraph(name, figures)
    refuse = figures["refuse"]
    lines += [
        "## Refuse only",
        "",
        f"Refused withdrawals only (score >= {_num(model['refuse_threshold'], 4)}); the "
        "baselines are thresholded at our normal *refused* rate on the test set.",
        "",
        "| scenario | events | ours refused | static threshold | raw-amount iForest |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in simulate.SCENARIOS:
        lines.append(
            f"| {name} | {test_counts.get(name, 0)} | "
            f"{_pct(refuse[_OURS]['by_scenario'][name])} | "
            f"{_pct(refuse[_STATIC]['by_scenario'][name])} | "
            f"{_pct(refuse[_RAW]['by_scenario'][name])} |"
        )
    lines.append(
        f"| overall | {figures['attack_events']} | "
        f"{_pct(refuse[_OURS]['attack_recall'])} | "
        f"{_pct(refuse[_STATIC]['attack_recall'])} | "
        f"{_pct(refuse[_RAW]['attack_recall'])} |"
    )
    lines.append(
        f"| normal refused rate | {test_counts.get(simulate.NORMAL_LABEL, 0)} | "
        f"{_pct(refuse[_OURS]['normal_flagged_rate'], 3)} | "
        f"{_pct(refuse[_STATIC]['normal_flagged_rate'], 3)} | "
        f"{_pct(refuse[_RAW]['normal_flagged_rate'], 3)} |"
    )
    lines += [
        "",
        "## Ranking quality with calibration removed",
        "",
        f"Every method thresholded at exactly {_pct(budget['rate'], 2)} of the test set's "
        "normal withdrawals (the configured delay rate), so differences are ranking, not "
        "calibration; AP = average precision (area under the precision-recall curve) of "
        "the scenario's withdrawals against the normal ones (it depends on how many attacks "
        "the test set holds).",
        "",
        "| scenario | ours recall | static recall | raw-amount iForest recall | ours AP | "
        "static AP | raw-amount iForest AP |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in [*simulate.SCENARIOS, "all"]:
        label = "overall" if name == "all" else name

        def rec(method: str, scenario: str = name) -> str:
            result = budget[method]
            return _pct(
                result["attack_recall"] if scenario == "all" else result["by_scenario"][scenario]
            )

        lines.append(
            f"| {label} | {rec(_OURS)} | {rec(_STATIC)} | {rec(_RAW)} | "
            f"{_num(ap[_OURS][name], 3)} | {_num(ap[_STATIC][name], 3)} | "
            f"{_num(ap[_RAW][name], 3)} |"
        )
    lines += [
        "",
        "## Figures",
        "",
        f"![Precision-recall curves of ours and both baselines]({figures['figures']['pr']})",
        "",
        f"![Our score histogram, normal vs attack]({figures['figures']['scores']})",
        "",
        f"Whole evaluation: {figures['runtime_seconds']:.1f} s on this machine.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------
