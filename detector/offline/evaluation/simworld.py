"""One simulated world: simulate (cached), train, replay warm with and without feedback,
baselines, measures.

The world is one population over two periods (``SimConfig.test_days``): a training history
with few attacks (real history is mostly normal) and a test period with many, the same
accounts continuing into it. Our model is trained on the history by ``train()``; then
``replay()`` runs over history + test with ``score_from`` = the test's start, so every
account's state is warm when the test starts, and only test withdrawals are decided.
Once without labels, once with the simulator's fraud reports applied at their
``reported_at`` (:func:`detector.offline.simulate.attack_labels`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from detector.events import Withdrawal
from detector.model import Model
from detector.offline import simulate
from detector.offline.dataset import load_events, load_labels
from detector.offline.evaluation.baselines import BASELINES, OURS, baseline_scores
from detector.offline.evaluation.history import history
from detector.offline.evaluation.measures import (
    BUDGET,
    MODEL_SEED,
    average_precision,
    match_threshold,
    rates,
)
from detector.offline.quality import NORMAL_LABEL
from detector.offline.replay import ReplayResult, replay
from detector.offline.training import train
from detector.pipeline import Feedback

__all__ = ["WORLDS", "WorldSpec", "newly_flagged", "run_world", "summarize_features"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
StrArray = npt.NDArray[np.str_]


@dataclass(frozen=True)
class WorldSpec:
    """A simulated world: the unshifted one, or one with shifted habits."""

    name: str
    title: str
    amount_scale: float = 1.0
    activity_scale: float = 1.0


WORLDS: tuple[WorldSpec, ...] = (
    WorldSpec("base", "unshifted"),
    WorldSpec("amount_x0.01", "amounts x0.01", amount_scale=0.01),
    WorldSpec("amount_x100", "amounts x100", amount_scale=100.0),
    WorldSpec("activity_x0.2", "activity x0.2", activity_scale=0.2),
    WorldSpec("activity_x5", "activity x5", activity_scale=5.0),
)
BASE = WORLDS[0].name


@dataclass(frozen=True)
class WorldSetup:
    """What every simulated world shares."""

    accounts: int
    days: float  # each of the two periods (days)
    seed: int
    train_attacks: int  # per scenario, in the history
    test_attacks: int  # per scenario, in the test period
    delay_rate: float
    refuse_rate: float
    combine: str = "evidence"  # how the families' scores combine (model.COMBINE_METHODS)


def _sim_config(setup: WorldSetup, spec: WorldSpec) -> simulate.SimConfig:
    return simulate.SimConfig(
        accounts=setup.accounts,
        days=2 * setup.days,
        test_days=setup.days,
        seed=setup.seed,
        attacks_per_scenario=setup.train_attacks,
        test_attacks_per_scenario=setup.test_attacks,
        amount_scale=spec.amount_scale,
        activity_scale=spec.activity_scale,
    )


def _simulator_digest() -> str:
    """Of the simulator's source: a cached simulation is stale when the simulator changed."""
    digest = hashlib.sha256()
    for path in sorted(Path(simulate.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _simulated(
    config: simulate.SimConfig, directory: Path, progress: Callable[[str], None]
) -> tuple[Path, Path, Path, dict[str, Any]]:
    """The world's history, test and labels files, simulated once per configuration and
    simulator version (``directory/<key>/``), and their counts."""
    key = hashlib.sha256(f"{config!r}/{_simulator_digest()}".encode()).hexdigest()[:12]
    folder = directory / key
    train_path, test_path = folder / "train.jsonl", folder / "test.jsonl"
    labels_path, info_path = folder / "labels.jsonl", folder / "counts.json"
    if info_path.is_file():
        info: dict[str, Any] = json.loads(info_path.read_text(encoding="utf-8"))
        progress(f"  simulation cached in {folder}")
        return train_path, test_path, labels_path, {**info, "cached": True}
    folder.mkdir(parents=True, exist_ok=True)
    events = simulate.generate(config)
    cut = config.test_start.timestamp()
    split = np.searchsorted(
        np.asarray([_epoch(e["requested_at"]) for e in events], dtype=np.float64), cut
    )
    history_part, test_part = events[:split], events[split:]
    simulate.write_jsonl(history_part, train_path)
    simulate.write_jsonl(test_part, test_path)
    labels = simulate.attack_labels(events, config)
    simulate.write_labels(labels, labels_path)
    info = {
        "config": repr(config),
        "test_start": config.test_start.isoformat().replace("+00:00", "Z"),
        "train": _label_counts(history_part),
        "test": _label_counts(test_part),
        "labels": len(labels),
        "labels_by_source": dict(sorted(Counter(x.source for x in labels).items())),
    }
    info_path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    progress(f"  simulated {len(events)} withdrawals and {len(labels)} labels -> {folder}")
    return train_path, test_path, labels_path, {**info, "cached": False}


def _epoch(stamp: str) -> float:
    from detector.events import parse_rfc3339

    return parse_rfc3339(stamp)


def _label_counts(events: list[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(str(e["metadata"]["label"]) for e in events)
    return {k: counts[k] for k in (NORMAL_LABEL, *simulate.SCENARIOS)}


def run_world(
    spec: WorldSpec,
    setup: WorldSetup,
    work_dir: Path,
    progress: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Figures of one world (JSON-able), and arrays the figures module draws from."""
    timings: dict[str, float] = {}
    began = time.perf_counter()
    cpu = time.process_time()
    config = _sim_config(setup, spec)
    progress(
        f"[{spec.name}] simulating {setup.accounts} accounts x {2 * setup.days:g} days "
        f"(amounts x{spec.amount_scale:g}, activity x{spec.activity_scale:g}, seed {setup.seed})"
    )
    train_path, test_path, labels_path, info = _simulated(
        config, work_dir / "simulations", progress
    )
    timings["simulate_s"] = time.perf_counter() - began

    mark = time.perf_counter()
    progress(f"[{spec.name}] training on the history ({sum(info['train'].values())} withdrawals)")
    trained = train(
        train_path,
        work_dir / "models" / spec.name,
        fit_from=config.warmup_end.timestamp(),  # state over all of it, fit after warm-up
        combine=setup.combine,
        delay_rate=setup.delay_rate,
        refuse_rate=setup.refuse_rate,
        seed=MODEL_SEED,
        plots=False,
    )
    model = trained.model
    timings["train_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    events = sorted(
        [*load_events(train_path), *load_events(test_path)], key=lambda e: e.requested_at
    )
    start = config.test_start.timestamp()
    n_train = int(np.searchsorted(np.asarray([e.requested_at for e in events]), start))
    labels = load_labels(labels_path)
    progress(
        f"[{spec.name}] replaying {len(events)} withdrawals warm (test from "
        f"{info['test_start']}), without and with {len(labels)} labels"
    )
    plain = replay(events, model, score_from=start)
    timings["replay_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    fed = replay(events, model, score_from=start, reports=labels, feedback=Feedback())
    timings["replay_feedback_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    test = events[n_train:]
    _check_aligned(test, plain, fed)
    figures, arrays = _measure(spec, setup, events, n_train, model, plain, fed, info, labels)
    timings["measure_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - began
    timings["cpu_s"] = time.process_time() - cpu
    figures["timings"] = timings
    figures["simulation_cached"] = info["cached"]
    # withdrawals replayed per second, the warm-up (history) included
    figures["replay_events_per_second"] = len(events) / plain.seconds if plain.seconds else 0.0
    ours = figures["methods"][OURS]
    progress(
        f"[{spec.name}] done in {timings['total_s']:.1f} s: recall @ {BUDGET:.0%} normal "
        f"{_pct(ours['budget']['attack_recall'])}, at the policy "
        f"{_pct(ours['policy']['attack_recall'])} (normal flagged "
        f"{_pct(ours['policy']['normal_flagged_rate'], 2)})"
    )
    return figures, arrays


def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100.0 * value:.{digits}f}%"


def _check_aligned(test: list[Withdrawal], *results: ReplayResult) -> None:
    ids = [e.withdrawal_id for e in test]
    for result in results:
        if [v["withdrawal_id"] for v in result.verdicts] != ids:
            raise RuntimeError("replay did not decide exactly the test withdrawals in order")


def _measure(
    spec: WorldSpec,
    setup: WorldSetup,
    events: list[Withdrawal],
    n_train: int,
    model: Model,
    plain: ReplayResult,
    fed: ReplayResult,
    info: dict[str, Any],
    labels: list[Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    scenarios = simulate.SCENARIOS
    test = events[n_train:]
    label = np.asarray([e.label or "" for e in test], dtype=np.str_)
    normal = label == NORMAL_LABEL
    scores = np.asarray(plain.scores, dtype=np.float64)
    verdict = np.asarray([v["verdict"] for v in plain.verdicts], dtype=np.str_)
    verdict_fb = np.asarray([v["verdict"] for v in fed.verdicts], dtype=np.str_)
    flagged = verdict != "allow"
    flagged_fb = verdict_fb != "allow"

    amounts = np.asarray([e.value for e in events], dtype=np.float64)
    hist = history(
        [e.account_id for e in events],
        np.asarray([e.requested_at for e in events], dtype=np.float64),
        amounts,
        [e.destination for e in events],
    )
    ratio = hist.ratio_of(amounts)
    method_scores: dict[str, FloatArray] = {OURS: scores}
    method_scores.update(
        baseline_scores(amounts[:n_train], amounts[n_train:], ratio[:n_train], ratio[n_train:])
    )

    ours_policy = rates(flagged.astype(np.float64), label, scenarios)
    policy_rate = ours_policy["normal_flagged_rate"]
    methods: dict[str, Any] = {}
    budget_weights: dict[str, FloatArray] = {}
    for method, values in method_scores.items():
        at_budget = match_threshold(values[normal], BUDGET)
        weights = at_budget.weights(values)
        budget_weights[method] = weights
        entry: dict[str, Any] = {
            "budget": {
                "threshold": _finite(at_budget.threshold),
                "tie_fraction": at_budget.tie_fraction,
                **rates(weights, label, scenarios),
            },
            "average_precision": _ap_table(values, label),
        }
        if method == OURS:
            entry["policy"] = ours_policy
        else:
            at_ours = match_threshold(values[normal], policy_rate)
            entry["policy"] = {
                "threshold": _finite(at_ours.threshold),
                "tie_fraction": at_ours.tie_fraction,
                **rates(at_ours.weights(values), label, scenarios),
            }
        methods[method] = entry

    # Feedback: the model's policy as the worker applies it with labels; at the budget,
    # the budget's flags plus whatever feedback held or refused that the policy allowed.
    extra = (flagged_fb & ~flagged).astype(np.float64)
    budget_fb = np.maximum(budget_weights[OURS], extra)
    first_codes = newly_flagged(fed.verdicts, flagged, label != NORMAL_LABEL)
    last_time = test[-1].requested_at if test else 0.0
    start = test[0].requested_at if test else 0.0
    feedback = {
        "settings": asdict(Feedback()),
        "labels": len(labels),
        "labels_before_test": sum(1 for x in labels if x.reported_at < start),
        "labels_in_test": sum(1 for x in labels if start <= x.reported_at <= last_time),
        "labels_by_source": info.get("labels_by_source", {}),
        "policy": rates(flagged_fb.astype(np.float64), label, scenarios),
        "budget": rates(budget_fb, label, scenarios),
        "verdicts_changed": int(np.sum(verdict != verdict_fb)),
        "newly_flagged_by_reason": first_codes,
    }

    test_hist = {
        "ratio": ratio[n_train:],
        "count_24h": hist.count_24h[n_train:],
        "new_destination": hist.new_destination[n_train:],
        "amount": amounts[n_train:],
    }
    misses = _misses(label, flagged, scores, test_hist, model, plain.rows, scenarios)
    figures: dict[str, Any] = {
        "name": spec.name,
        "title": spec.title,
        "amount_scale": spec.amount_scale,
        "activity_scale": spec.activity_scale,
        "config": info["config"],
        "test_start": info["test_start"],
        "events": {"train": info["train"], "test": info["test"]},
        "model": _model_info(model),
        "methods": methods,
        "feedback": feedback,
        "misses": misses,
    }
    arrays = {
        "labels": label,
        "scores": method_scores,
        "policy_weights": {
            OURS: flagged.astype(np.float64),
            **{
                m: match_threshold(method_scores[m][normal], policy_rate).weights(method_scores[m])
                for m in BASELINES
            },
        },
        "model": model,
    }
    return figures, arrays


def newly_flagged(
    verdicts: list[dict[str, Any]], flagged_before: BoolArray, attack: BoolArray
) -> dict[str, dict[str, int]]:
    """Withdrawals the policy allowed but feedback held or refused, by the verdict's first
    reason (the feedback rule's code), split into attack and normal ones."""
    counts: dict[str, dict[str, int]] = {}
    for verdict, was, bad in zip(verdicts, flagged_before.tolist(), attack.tolist(), strict=True):
        if verdict["verdict"] == "allow" or was or not verdict["reasons"]:
            continue
        code = str(verdict["reasons"][0]["code"])
        entry = counts.setdefault(code, {"attack": 0, "normal": 0})
        entry["attack" if bad else "normal"] += 1
    return dict(sorted(counts.items(), key=lambda kv: -sum(kv[1].values())))


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


def _ap_table(scores: FloatArray, label: StrArray) -> dict[str, float | None]:
    normal = label == NORMAL_LABEL
    attack = np.isin(label, simulate.SCENARIOS)
    keep = normal | attack
    out: dict[str, float | None] = {"all": average_precision(scores[keep], attack[keep])}
    for name in simulate.SCENARIOS:
        mask = normal | (label == name)
        out[name] = average_precision(scores[mask], (label == name)[mask])
    return out


def _model_info(model: Model) -> dict[str, Any]:
    return {
        "version": model.version,
        "delay_threshold": model.policy.delay_threshold,
        "refuse_threshold": model.policy.refuse_threshold,
        "combine": model.combine,
        "families": [f.name for f in model.families],
        "features": list(model.feature_names),
    }


def summarize_features(
    rows: FloatArray, sel: BoolArray, names: tuple[str, ...]
) -> dict[str, float] | None:
    """Median of each model feature over the selected rows (None: no row)."""
    if not sel.any() or rows.shape[0] != sel.shape[0]:
        return None
    med = np.median(rows[sel], axis=0)
    return {f: float(v) for f, v in zip(names, med.tolist(), strict=True)}


def _misses(
    label: StrArray,
    flagged: BoolArray,
    scores: FloatArray,
    test_hist: dict[str, Any],
    model: Model,
    rows: FloatArray,
    scenarios: tuple[str, ...],
) -> dict[str, Any]:
    """Per scenario, what the attack withdrawals the policy allowed look like next to the
    ones it flagged: from the contract's fields (history) and from the model's features."""
    names = tuple(model.feature_names)
    out: dict[str, Any] = {
        "ordinary": {f: float(v) for f, v in zip(names, model.ordinary, strict=True)},
        "by_scenario": {},
    }
    for name in scenarios:
        mask = label == name
        missed, caught = mask & ~flagged, mask & flagged
        out["by_scenario"][name] = {
            "events": int(mask.sum()),
            "missed": int(missed.sum()),
            "missed_describe": _describe(missed, scores, test_hist),
            "caught_describe": _describe(caught, scores, test_hist),
            "features_missed": summarize_features(rows, missed, names),
            "features_caught": summarize_features(rows, caught, names),
        }
    return out


def _describe(sel: BoolArray, scores: FloatArray, test_hist: dict[str, Any]) -> dict[str, Any]:
    if not sel.any():
        return {"n": 0}
    return {
        "n": int(sel.sum()),
        "score_median": float(np.median(scores[sel])),
        "amount_median": float(np.median(test_hist["amount"][sel])),
        "ratio_median": float(np.median(test_hist["ratio"][sel])),
        "count_24h_median": float(np.median(test_hist["count_24h"][sel])),
        "new_destination_share": float(np.mean(test_hist["new_destination"][sel])),
    }
