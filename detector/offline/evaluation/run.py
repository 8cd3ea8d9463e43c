"""Orchestration of ``detector evaluate``: simulate, train, replay, baselines, write."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from detector.offline import simulate
from detector.offline.dataset import load_events
from detector.offline.evaluation.figures import _save_pr_png, _save_scores_png
from detector.offline.evaluation.measures import (
    _ACCOUNTS_PER_TEST_ATTACK,
    _OURS,
    _RAW,
    _STATIC,
    MAX_SAMPLES,
    MODEL_SEED,
    N_ESTIMATORS,
    TEST_ATTACKS_PER_SCENARIO,
    TRAIN_ATTACKS_PER_SCENARIO,
    _ap_table,
    _matched,
    _missed_analysis,
    _rates,
    _raw_amount_scores,
    _say,
)
from detector.offline.evaluation.report import _markdown, _target
from detector.offline.replay import replay
from detector.offline.training import train
from detector.policy import DEFAULT_DELAY_RATE, DEFAULT_REFUSE_RATE

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def _simulate(
    path: Path,
    *,
    accounts: int,
    days: float,
    seed: int,
    attacks: int,
    progress: Callable[[str], None],
    what: str,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    config = simulate.SimConfig(
        accounts=accounts, days=days, seed=seed, attacks_per_scenario=attacks
    )
    events = simulate.generate(config)
    simulate.write_jsonl(events, path)
    counts = Counter(str(e["metadata"]["label"]) for e in events)
    ordered = {k: counts[k] for k in (simulate.NORMAL_LABEL, *simulate.SCENARIOS)}
    progress(f"{what}: {len(events)} withdrawals -> {path}")
    return events, ordered


def _command(out: Path, work_dir: Path, accounts: int, days: float) -> str:
    return (
        f"detector evaluate --out {out} --work-dir {work_dir} --accounts {accounts} --days {days:g}"
    )


def run_evaluation(
    out: Path,
    work_dir: Path,
    *,
    accounts: int,
    days: float,
    seed_train: int = 1,
    seed_test: int = 2,
    delay_rate: float = DEFAULT_DELAY_RATE,
    refuse_rate: float = DEFAULT_REFUSE_RATE,
    train_attacks_per_scenario: int = TRAIN_ATTACKS_PER_SCENARIO,
    test_attacks_per_scenario: int | None = None,
    progress: Callable[[str], None] = _say,
) -> dict[str, Any]:
    """Simulate, train, replay, compare with baselines; write ``out`` (markdown), its PNGs
    and JSON beside it; return the figures (the JSON's content).

    ``test_attacks_per_scenario`` defaults to :data:`TEST_ATTACKS_PER_SCENARIO`, or fewer
    for small populations (one per ``_ACCOUNTS_PER_TEST_ATTACK`` accounts, at least 1).
    ``progress`` receives one line per stage (default: printed).
    """
    started = time.perf_counter()
    if test_attacks_per_scenario is None:
        test_attacks_per_scenario = min(
            TEST_ATTACKS_PER_SCENARIO, max(1, accounts // _ACCOUNTS_PER_TEST_ATTACK)
        )
    work_dir.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    train_path, test_path = work_dir / "train.jsonl", work_dir / "test.jsonl"

    progress(
        f"simulating {accounts} accounts x {days:g} days (train seed {seed_train}, "
        f"test seed {seed_test})"
    )
    train_events, train_counts = _simulate(
        train_path,
        accounts=accounts,
        days=days,
        seed=seed_train,
        attacks=train_attacks_per_scenario,
        progress=progress,
        what="training history",
    )
    _, test_counts = _simulate(
        test_path,
        accounts=accounts,
        days=days,
        seed=seed_test,
        attacks=test_attacks_per_scenario,
        progress=progress,
        what="test set",
    )

    progress("training our model")
    trained = train(
        train_path,
        work_dir / "model",
        delay_rate=delay_rate,
        refuse_rate=refuse_rate,
        n_estimators=N_ESTIMATORS,
        max_samples=MAX_SAMPLES,
        seed=MODEL_SEED,
        plots=False,
    )
    model = trained.model
    progress(
        f"model {model.version}: delay >= {model.policy.delay_threshold:.4f}, "
        f"refuse >= {model.policy.refuse_threshold:.4f}"
    )

    progress("replaying the test set")
    test = load_events(test_path)
    result = replay(test, model)
    progress(
        f"replayed {len(result.verdicts)} withdrawals at {result.events_per_second:.0f} events/s"
    )
    labels = np.asarray([label or "" for label in result.labels], dtype=np.str_)
    scores = np.asarray(result.scores, dtype=np.float64)
    verdicts = [v["verdict"] for v in result.verdicts]
    flagged = np.asarray([v != "allow" for v in verdicts], dtype=np.bool_)
    refused = np.asarray([v == "refuse" for v in verdicts], dtype=np.bool_)
    ours = _rates(flagged.astype(np.float64), labels)
    ours_refuse = _rates(refused.astype(np.float64), labels)

    progress("baselines: static amount threshold, raw-amount iForest")
    test_usd = np.asarray([e.value for e in test], dtype=np.float64)
    train_usd = np.asarray([float(e["amount_usd"]) for e in train_events], dtype=np.float64)
    raw_scores = _raw_amount_scores(train_usd, test_usd)
    method_scores = {_OURS: scores, _STATIC: test_usd, _RAW: raw_scores}
    rate = ours["normal_flagged_rate"]
    static, static_w = _matched(test_usd, labels, rate)
    raw, raw_w = _matched(raw_scores, labels, rate)
    refuse_rate_test = ours_refuse["normal_flagged_rate"]
    refuse = {
        _OURS: ours_refuse,
        _STATIC: _matched(test_usd, labels, refuse_rate_test)[0],
        _RAW: _matched(raw_scores, labels, refuse_rate_test)[0],
    }
    budget: dict[str, Any] = {"rate": delay_rate}
    for method, values in method_scores.items():
        budget[method] = _matched(values, labels, delay_rate)[0]
    ap = {method: _ap_table(values, labels) for method, values in method_scores.items()}

    baseline_only: dict[str, Any] = {}
    for method, weights in ((_STATIC, static_w), (_RAW, raw_w)):
        per: dict[str, Any] = {}
        for name in simulate.SCENARIOS:
            sel = (labels == name) & (weights > 0) & ~flagged
            per[name] = {
                "events": int(sel.sum()),
                "median_usd": float(np.median(test_usd[sel])) if sel.any() else None,
            }
        baseline_only[method] = per

    stem = out.stem
    figure_names = {"pr": f"{stem}_pr.png", "scores": f"{stem}_scores.png"}
    progress("writing figures")
    positive = np.isin(labels, simulate.SCENARIOS)
    normal_or_attack = positive | (labels == simulate.NORMAL_LABEL)
    _save_pr_png(
        out.parent / figure_names["pr"],
        {m: s[normal_or_attack] for m, s in method_scores.items()},
        {
            _OURS: flagged.astype(np.float64)[normal_or_attack],
            _STATIC: static_w[normal_or_attack],
            _RAW: raw_w[normal_or_attack],
        },
        positive[normal_or_attack],
    )
    _save_scores_png(out.parent / figure_names["scores"], scores, labels, model)

    training_flagged = trained.report["training_flagged"]
    call = (
        f"run_evaluation(Path({str(out)!r}), Path({str(work_dir)!r}), "
        f"accounts={accounts}, days={days!r}, seed_train={seed_train}, "
        f"seed_test={seed_test}, delay_rate={delay_rate!r}, refuse_rate={refuse_rate!r}, "
        f"train_attacks_per_scenario={train_attacks_per_scenario}, "
        f"test_attacks_per_scenario={test_attacks_per_scenario})"
    )
    figures: dict[str, Any] = {
        "command": _command(out, work_dir, accounts, days),
        "call": call,
        "config": {
            "accounts": accounts,
            "days": days,
            "seed_train": seed_train,
            "seed_test": seed_test,
            "delay_rate": delay_rate,
            "refuse_rate": refuse_rate,
            "train_attacks_per_scenario": train_attacks_per_scenario,
            "test_attacks_per_scenario": test_attacks_per_scenario,
            "n_estimators": N_ESTIMATORS,
            "max_samples": MAX_SAMPLES,
            "model_seed": MODEL_SEED,
        },
        "events": {"train": train_counts, "test": test_counts},
        "attack_events": int(positive.sum()),
        "model": {
            "version": model.version,
            "delay_threshold": model.policy.delay_threshold,
            "refuse_threshold": model.policy.refuse_threshold,
            "training_flagged_rate": float(training_flagged["delay"] + training_flagged["refuse"]),
            "training_refused_rate": float(training_flagged["refuse"]),
        },
        _OURS: ours,
        _STATIC: static,
        _RAW: raw,
        "refuse": refuse,
        "equal_budget": budget,
        "average_precision": ap,
        "target": {},
        "missed": _missed_analysis(
            np.asarray(result.rows, dtype=np.float64), flagged, labels, scores, model
        ),
        "baseline_only": baseline_only,
        "replay_events_per_second": result.events_per_second,
        "figures": figure_names,
        "runtime_seconds": 0.0,
    }
    figures["target"] = _target(ours, {_STATIC: static, _RAW: raw})
    figures["runtime_seconds"] = time.perf_counter() - started
    out.write_text(_markdown(figures), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    progress(
        f"wrote {out}, {out.with_suffix('.json')} and 2 PNGs in "
        f"{figures['runtime_seconds']:.1f} s; target met on "
        f"{figures['target']['met']} of {figures['target']['scenarios']} scenarios"
    )
    return figures
