"""Orchestration of ``detector evaluate``: every world, the targets, the files."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from detector.offline.evaluation.baselines import BASELINES, OURS
from detector.offline.evaluation.figures import save_figures
from detector.offline.evaluation.measures import BUDGET, MAX_SAMPLES, MODEL_SEED, N_ESTIMATORS
from detector.offline.evaluation.report import markdown
from detector.offline.evaluation.simworld import BASE, WORLDS, WorldSetup, run_world
from detector.offline.evaluation.sparkov import FILES, run_sparkov
from detector.policy import DEFAULT_DELAY_RATE, DEFAULT_REFUSE_RATE

__all__ = [
    "DEFAULT_SPARKOV",
    "TARGETS",
    "TEST_ATTACKS_PER_SCENARIO",
    "TRAIN_ATTACKS_PER_SCENARIO",
    "render",
    "run_evaluation",
]

# Where the external benchmark lives, relative to the project root (the command's cwd).
DEFAULT_SPARKOV = Path("../shared/benchmarks/sparkov")
# Attacks per scenario in the training history: real history is mostly normal (count).
TRAIN_ATTACKS_PER_SCENARIO = 2
# Attacks per scenario in the test period: enough withdrawals per scenario for a recall
# that moves in steps of a few percent even for the 1-5-withdrawal scenarios (count) ...
TEST_ATTACKS_PER_SCENARIO = 24
# ... but at most one per this many accounts, so small populations keep enough free
# victims (each single-account attack takes its own account) (accounts per attack).
_ACCOUNTS_PER_TEST_ATTACK = 40

# The targets of issue 8 (shares): Sparkov recall at the 1% budget and average precision;
# our simulator's attack withdrawals held at a 1% normal budget, overall and per scenario;
# the shifted worlds' recall within this many points of the unshifted one.
TARGETS = {
    "sparkov_recall": 0.60,
    "sparkov_average_precision": 0.15,
    "simulator_recall": 0.90,
    "simulator_scenario_recall": 0.80,
    "shifted_points": 0.05,
}
# The best simple baseline on Sparkov when the target was set (its README, 2026-12-01).
SPARKOV_README_BEST_BASELINE = 0.477


def _say(message: str) -> None:
    print(f"[evaluate] {message}", flush=True)


def run_evaluation(
    out: Path,
    work_dir: Path,
    *,
    accounts: int = 1000,
    days: float = 21.0,
    seed: int = 1,
    train_attacks_per_scenario: int = TRAIN_ATTACKS_PER_SCENARIO,
    test_attacks_per_scenario: int | None = None,
    worlds: Sequence[str] | None = None,
    sparkov: Path | None = None,
    delay_rate: float = DEFAULT_DELAY_RATE,
    refuse_rate: float = DEFAULT_REFUSE_RATE,
    combine: str = "evidence",
    progress: Callable[[str], None] = _say,
) -> dict[str, Any]:
    """Run every world, write ``out`` (markdown), its PNGs and ``<out>.json``; return the
    figures (the JSON's content).

    ``worlds``: names of :data:`~detector.offline.evaluation.simworld.WORLDS` (default all;
    the unshifted one always runs, the others are compared with it). ``sparkov``: the
    benchmark's directory (``None``: not run; a directory without its files: reported as
    missing). ``test_attacks_per_scenario`` defaults to :data:`TEST_ATTACKS_PER_SCENARIO`,
    or fewer for small populations (one per 40 accounts, at least 1).
    """
    started = time.perf_counter()
    if test_attacks_per_scenario is None:
        test_attacks_per_scenario = min(
            TEST_ATTACKS_PER_SCENARIO, max(1, accounts // _ACCOUNTS_PER_TEST_ATTACK)
        )
    known = {w.name: w for w in WORLDS}
    wanted = list(known) if worlds is None else [BASE, *(w for w in worlds if w != BASE)]
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise ValueError(f"unknown worlds {unknown}; known: {list(known)}")
    wanted = [w for w in known if w in wanted]  # the canonical order
    setup = WorldSetup(
        accounts=accounts,
        days=days,
        seed=seed,
        train_attacks=train_attacks_per_scenario,
        test_attacks=test_attacks_per_scenario,
        delay_rate=delay_rate,
        refuse_rate=refuse_rate,
        combine=combine,
    )
    work_dir.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)

    sim: dict[str, Any] = {}
    arrays: dict[str, Any] = {}
    for name in wanted:
        sim[name], arrays[name] = run_world(known[name], setup, work_dir, progress)

    spk: dict[str, Any]
    spk_arrays: dict[str, Any] | None = None
    if sparkov is None:
        spk = {"skipped": "not requested (--no-sparkov)"}
    elif not all((sparkov / f).is_file() for f in FILES):
        spk = {"skipped": f"{sparkov} does not hold {', '.join(FILES)}"}
        progress(f"[sparkov] skipped: {spk['skipped']}")
    else:
        spk, spk_arrays = run_sparkov(
            sparkov,
            work_dir,
            delay_rate=delay_rate,
            refuse_rate=refuse_rate,
            progress=progress,
            combine=combine,
        )

    stem = out.stem
    progress("writing figures")
    figure_names = save_figures(out.parent, stem, sim, arrays, spk, spk_arrays)
    figures: dict[str, Any] = {
        "command": _command(out, work_dir, setup, wanted, sparkov),
        "config": {
            "accounts": accounts,
            "days": days,
            "seed": seed,
            "train_attacks_per_scenario": train_attacks_per_scenario,
            "test_attacks_per_scenario": test_attacks_per_scenario,
            "delay_rate": delay_rate,
            "refuse_rate": refuse_rate,
            "combine": combine,
            "budget": BUDGET,
            "model_seed": MODEL_SEED,
            "baseline_forest": {"n_estimators": N_ESTIMATORS, "max_samples": MAX_SAMPLES},
            "worlds": wanted,
            "sparkov": None if sparkov is None else str(sparkov),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "simulator": sim,
        "shifted": _shifted(sim),
        "sparkov": spk,
        "targets": [],
        "figures": figure_names,
        "runtime_seconds": 0.0,
    }
    figures["targets"] = _targets(figures)
    figures["runtime_seconds"] = time.perf_counter() - started
    out.with_suffix(".json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    out.write_text(markdown(figures), encoding="utf-8")
    met = sum(1 for t in figures["targets"] if t["met"])
    measured = sum(1 for t in figures["targets"] if t["met"] is not None)
    progress(
        f"wrote {out}, {out.with_suffix('.json')} and {len(figure_names)} PNGs in "
        f"{figures['runtime_seconds']:.0f} s; targets met: {met} of {measured} measured"
    )
    return figures


def render(json_path: Path, out: Path) -> None:
    """Rewrite the markdown from an existing JSON of :func:`run_evaluation` (no run)."""
    figures = json.loads(json_path.read_text(encoding="utf-8"))
    out.write_text(markdown(figures), encoding="utf-8")


def _command(
    out: Path, work_dir: Path, setup: WorldSetup, worlds: list[str], sparkov: Path | None
) -> str:
    parts = [
        f"detector evaluate --out {out} --work-dir {work_dir}",
        f"--accounts {setup.accounts} --days {setup.days:g} --seed {setup.seed}",
        f"--train-attacks {setup.train_attacks} --test-attacks {setup.test_attacks}",
    ]
    if setup.delay_rate != DEFAULT_DELAY_RATE or setup.refuse_rate != DEFAULT_REFUSE_RATE:
        parts.append(f"--delay-rate {setup.delay_rate:g} --refuse-rate {setup.refuse_rate:g}")
    if setup.combine != "evidence":
        parts.append(f"--combine {setup.combine}")
    if worlds != [w.name for w in WORLDS]:
        parts.append(f"--worlds {','.join(worlds)}")
    parts.append("--no-sparkov" if sparkov is None else f"--sparkov {sparkov}")
    return " ".join(parts)


def _shifted(sim: dict[str, Any]) -> list[dict[str, Any]]:
    """Each world against the unshifted one: overall recall at the budget and at the
    policy, and their differences (points as shares)."""
    base = sim[BASE]["methods"][OURS]
    rows = []
    for name, world in sim.items():
        ours = world["methods"][OURS]
        budget, policy = ours["budget"]["attack_recall"], ours["policy"]["attack_recall"]
        rows.append(
            {
                "world": name,
                "title": world["title"],
                "budget_recall": budget,
                "budget_delta": _delta(budget, base["budget"]["attack_recall"]),
                "policy_recall": policy,
                "policy_delta": _delta(policy, base["policy"]["attack_recall"]),
                "policy_normal_flagged_rate": ours["policy"]["normal_flagged_rate"],
                "average_precision": ours["average_precision"]["all"],
                "baselines_budget_recall": {
                    m: world["methods"][m]["budget"]["attack_recall"] for m in BASELINES
                },
                "feedback_policy_recall": world["feedback"]["policy"]["attack_recall"],
            }
        )
    return rows


def _delta(value: float | None, base: float | None) -> float | None:
    return None if value is None or base is None else value - base


def _targets(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of issue 8 with its figure: met, not met, or not measured (None)."""
    out: list[dict[str, Any]] = []
    spk = figures["sparkov"]
    measured = "methods" in spk
    recall = spk["methods"][OURS]["budget"]["recall"] if measured else None
    ap = spk["methods"][OURS]["average_precision"] if measured else None
    out.append(
        _target(
            "sparkov_recall",
            f"Sparkov: recall @ {BUDGET:.0%} budget >= {TARGETS['sparkov_recall']:.2f}",
            recall,
            TARGETS["sparkov_recall"],
        )
    )
    out.append(
        _target(
            "sparkov_average_precision",
            f"Sparkov: AP >= {TARGETS['sparkov_average_precision']:.2f}",
            ap,
            TARGETS["sparkov_average_precision"],
        )
    )
    base = figures["simulator"][BASE]["methods"][OURS]["budget"]
    out.append(
        _target(
            "simulator_recall",
            f"simulator: >= {TARGETS['simulator_recall']:.0%} of attack withdrawals held at "
            f"{BUDGET:.0%} of normal ones",
            base["attack_recall"],
            TARGETS["simulator_recall"],
        )
    )
    by = {k: v for k, v in base["by_scenario"].items() if v is not None}
    worst = min(by, key=by.__getitem__) if by else None
    target = _target(
        "simulator_scenario_recall",
        f"simulator: every scenario >= {TARGETS['simulator_scenario_recall']:.0%} at "
        f"{BUDGET:.0%} of normal ones",
        by[worst] if worst else None,
        TARGETS["simulator_scenario_recall"],
    )
    target["worst"] = worst
    target["below"] = sorted(k for k, v in by.items() if v < TARGETS["simulator_scenario_recall"])
    out.append(target)
    for row in figures["shifted"]:
        if row["world"] == BASE:
            continue
        delta = row["budget_delta"]
        item = _target(
            f"shifted_{row['world']}",
            f"{row['title']}: recall @ {BUDGET:.0%} normal within "
            f"{100 * TARGETS['shifted_points']:.0f} points of the unshifted world",
            delta,
            TARGETS["shifted_points"],
        )
        item["met"] = None if delta is None else abs(delta) <= TARGETS["shifted_points"]
        out.append(item)
    return out


def _target(key: str, text: str, figure: float | None, threshold: float) -> dict[str, Any]:
    return {
        "id": key,
        "text": text,
        "figure": figure,
        "threshold": threshold,
        "met": None if figure is None else figure >= threshold,
    }
