"""The external benchmark (Sparkov card transactions as withdrawals), by its README's protocol.

Fit on ``train`` (``train()``, unlabelled use), replay train + test in time order with
``score_from`` = the first test withdrawal (every account warm), score the test part only.
Headline: recall at a 1% review budget (the top 1% of test withdrawals by score, ties broken
by a seeded random order, as the benchmark's ``baselines.py``), with ROC AUC and average
precision; the baselines of :mod:`~detector.offline.evaluation.baselines` in the same run.
Then once more with the benchmark's fraud reports (``labels.jsonl.gz``, each 7 days after
the fraud) applied at their ``reported_at``.

The benchmark's files are read as they are (gzip JSONL). ``train()`` reads a plain JSONL
file, so the train part is decompressed once into the work directory (kept while the source
file is unchanged); so are the labels, for :func:`detector.offline.dataset.load_labels`
(which gives them the ``label_id`` and ``source`` the contract requires).
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from detector.errors import InputFileError, InvalidEvent
from detector.events import Withdrawal, validate_withdrawal
from detector.offline.dataset import load_labels
from detector.offline.evaluation.baselines import OURS, baseline_scores
from detector.offline.evaluation.history import history
from detector.offline.evaluation.measures import (
    BUDGET,
    MODEL_SEED,
    average_precision,
    match_threshold,
    roc_auc,
    top_budget,
)
from detector.offline.evaluation.simworld import _model_info, newly_flagged, summarize_features
from detector.offline.replay import replay
from detector.offline.training import train
from detector.pipeline import Feedback

__all__ = ["FILES", "run_sparkov"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

FILES = ("train.jsonl.gz", "test.jsonl.gz", "labels.jsonl.gz")
FRAUD = "fraud"
_DAY_S = 86_400.0
_HOUR_S = 3_600.0
# "Night" in the benchmark's description of its frauds (UTC hours [22, 24) and [0, 4)).
_NIGHT_UTC = (22, 4)
# Missed frauds shown as examples (the largest amounts, one per account) (count).
_EXAMPLES = 6


def _decompressed(source: Path, target: Path) -> Path:
    """``source`` (gzip) decompressed to ``target``, redone only when ``source`` changed."""
    stamp = target.with_suffix(target.suffix + ".source")
    stat = source.stat()
    mark = f"{source.resolve()} {stat.st_size} {stat.st_mtime_ns}"
    if target.is_file() and stamp.is_file() and stamp.read_text(encoding="utf-8") == mark:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(source, "rb") as src, target.open("wb") as out:
        shutil.copyfileobj(src, out, length=1 << 20)
    stamp.write_text(mark, encoding="utf-8")
    return target


def _load(path: Path) -> list[Withdrawal]:
    """Every withdrawal of a gzip JSONL file, validated, in file order (strings interned:
    1.7M withdrawals share a thousand accounts and merchants)."""
    out: list[Withdrawal] = []
    intern = sys.intern
    shared: dict[tuple[str, str], dict[str, Any]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                doc["account_id"] = intern(doc["account_id"])
                doc["destination"] = intern(doc["destination"])
                meta = doc.get("metadata")
                if isinstance(meta, dict):
                    key = (str(meta.get("label")), str(meta.get("category", "")))
                    doc["metadata"] = shared.setdefault(key, meta)
                out.append(validate_withdrawal(doc))
            except (InvalidEvent, json.JSONDecodeError, KeyError, TypeError) as exc:
                raise InputFileError(str(path), number, str(exc)) from None
    return out


def run_sparkov(
    directory: Path,
    work_dir: Path,
    *,
    delay_rate: float,
    refuse_rate: float,
    progress: Callable[[str], None],
    combine: str = "evidence",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Figures of the benchmark (JSON-able) and the arrays its figure is drawn from."""
    timings: dict[str, float] = {}
    began = time.perf_counter()
    cpu = time.process_time()
    folder = work_dir / "sparkov"
    progress(f"[sparkov] decompressing the train part and the labels into {folder}")
    train_path = _decompressed(directory / "train.jsonl.gz", folder / "train.jsonl")
    labels_path = _decompressed(directory / "labels.jsonl.gz", folder / "labels.jsonl")
    timings["prepare_s"] = time.perf_counter() - began

    mark = time.perf_counter()
    progress("[sparkov] training on the train part")
    trained = train(
        train_path,
        folder / "model",
        combine=combine,
        delay_rate=delay_rate,
        refuse_rate=refuse_rate,
        seed=MODEL_SEED,
        plots=False,
    )
    model = trained.model
    timings["train_s"] = time.perf_counter() - mark
    progress(f"[sparkov] trained {model.version} in {timings['train_s']:.0f} s")

    mark = time.perf_counter()
    train_events = _load(directory / "train.jsonl.gz")
    test_events = _load(directory / "test.jsonl.gz")
    n_train = len(train_events)
    events = train_events + test_events
    del train_events, test_events
    times = np.asarray([e.requested_at for e in events], dtype=np.float64)
    if np.any(np.diff(times) < 0):
        raise InputFileError(str(directory), 0, "train + test must be in time order")
    labels = load_labels(labels_path)
    timings["load_s"] = time.perf_counter() - mark

    start = float(times[n_train]) if len(events) > n_train else float("inf")
    mark = time.perf_counter()
    progress(f"[sparkov] replaying {len(events)} withdrawals warm, the test part scored")
    plain = replay(events, model, score_from=start)
    timings["replay_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    progress(f"[sparkov] replaying again with {len(labels)} fraud reports (feedback)")
    fed = replay(events, model, score_from=start, reports=labels, feedback=Feedback())
    timings["replay_feedback_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    progress("[sparkov] history features and baselines")
    test = events[n_train:]
    ids = [e.withdrawal_id for e in test]
    for result in (plain, fed):
        if [v["withdrawal_id"] for v in result.verdicts] != ids:
            raise RuntimeError("replay did not decide exactly the test withdrawals in order")
    amounts = np.asarray([e.value for e in events], dtype=np.float64)
    hist = history([e.account_id for e in events], times, amounts, [e.destination for e in events])
    ratio = hist.ratio_of(amounts)
    scores: dict[str, FloatArray] = {OURS: np.asarray(plain.scores, dtype=np.float64)}
    scores.update(
        baseline_scores(amounts[:n_train], amounts[n_train:], ratio[:n_train], ratio[n_train:])
    )
    timings["baselines_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    fraud = np.asarray([e.label == FRAUD for e in test], dtype=np.bool_)
    verdict = np.asarray([v["verdict"] for v in plain.verdicts], dtype=np.str_)
    verdict_fb = np.asarray([v["verdict"] for v in fed.verdicts], dtype=np.str_)
    flagged, flagged_fb = verdict != "allow", verdict_fb != "allow"
    policy = _flag_metrics(fraud, flagged)
    policy["verdicts"] = dict(sorted(Counter(verdict.tolist()).items()))
    policy["refuse_recall"] = float(np.mean((verdict == "refuse")[fraud])) if fraud.any() else None

    methods: dict[str, Any] = {}
    masks: dict[str, BoolArray] = {}
    for method, values in scores.items():
        mask, ties = top_budget(values)
        masks[method] = mask
        entry: dict[str, Any] = {
            "roc_auc": roc_auc(values, fraud),
            "average_precision": average_precision(values, fraud),
            "budget": {**_flag_metrics(fraud, mask), "ties_at_cut": ties},
        }
        if method != OURS:
            at_ours = match_threshold(values[~fraud], policy["normal_flagged_rate"])
            weights = at_ours.weights(values)
            entry["at_our_policy_rate"] = {
                "recall": float(weights[fraud].mean()) if fraud.any() else None,
                "normal_flagged_rate": float(weights[~fraud].mean()),
            }
        methods[method] = entry

    budget_fb = masks[OURS] | (flagged_fb & ~flagged)
    newly = newly_flagged(fed.verdicts, flagged, fraud)
    feedback = {
        "settings": asdict(Feedback()),
        "labels": len(labels),
        "labels_before_test": sum(1 for x in labels if x.reported_at < start),
        "policy": _flag_metrics(fraud, flagged_fb),
        "budget": _flag_metrics(fraud, budget_fb),
        "verdicts_changed": int(np.sum(verdict != verdict_fb)),
        "newly_flagged_by_reason": newly,
    }

    categories = np.asarray(
        [str((e.metadata or {}).get("category", "")) for e in test], dtype=np.str_
    )
    best = max(
        (m for m in methods if m != OURS),
        key=lambda m: methods[m]["budget"]["recall"] or 0.0,
    )
    per_category: dict[str, Any] = {}
    for cat in sorted(set(categories[fraud].tolist())):
        sel = fraud & (categories == cat)
        per_category[cat] = {
            "frauds": int(sel.sum()),
            "normals": int((~fraud & (categories == cat)).sum()),
            OURS: float(masks[OURS][sel].mean()),
            best: float(masks[best][sel].mean()),
        }

    test_times = times[n_train:]
    hour = ((test_times % _DAY_S) // _HOUR_S).astype(np.int64)
    night = (hour >= _NIGHT_UTC[0]) | (hour < _NIGHT_UTC[1])
    test_amounts = amounts[n_train:]
    test_ratio = ratio[n_train:]

    def describe(sel: BoolArray) -> dict[str, Any]:
        if not sel.any():
            return {"n": 0}
        return {
            "n": int(sel.sum()),
            "score_median": float(np.median(scores[OURS][sel])),
            "amount_median": float(np.median(test_amounts[sel])),
            "ratio_median": float(np.median(test_ratio[sel])),
            "count_24h_median": float(np.median(hist.count_24h[n_train:][sel])),
            "new_destination_share": float(np.mean(hist.new_destination[n_train:][sel])),
            "night_share": float(np.mean(night[sel])),
        }

    caught, missed = fraud & masks[OURS], fraud & ~masks[OURS]
    names = tuple(model.feature_names)
    rows = np.asarray(plain.rows, dtype=np.float64)
    misses = {
        "caught": describe(caught),
        "missed": describe(missed),
        "normal": describe(~fraud),
        "missed_caught_by_best_baseline": int((missed & masks[best]).sum()),
        "ordinary": {f: float(v) for f, v in zip(names, model.ordinary, strict=True)},
        "features_missed": summarize_features(rows, missed, names),
        "features_caught": summarize_features(rows, caught, names),
        "examples": _examples(
            test, missed & (verdict == "allow"), test_amounts, hist, n_train, scores[OURS]
        ),
    }
    timings["measure_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - began
    timings["cpu_s"] = time.process_time() - cpu
    figures: dict[str, Any] = {
        "directory": str(directory),
        "rows": {"train": n_train, "test": len(test)},
        "frauds": {
            "train": int(sum(1 for e in events[:n_train] if e.label == FRAUD)),
            "test": int(fraud.sum()),
        },
        "test_start": _stamp(start),
        "model": _model_info(model),
        "budget": BUDGET,
        "methods": methods,
        "best_baseline": best,
        "ours_policy": policy,
        "feedback": feedback,
        "per_category": per_category,
        "misses": misses,
        "replay_events_per_second": len(events) / plain.seconds if plain.seconds else 0.0,
        "timings": timings,
    }
    progress(
        f"[sparkov] done in {timings['total_s']:.0f} s: recall @ {BUDGET:.0%} "
        f"{methods[OURS]['budget']['recall']:.3f}, AP {methods[OURS]['average_precision']:.3f}"
    )
    return figures, {"fraud": fraud, "scores": scores, "masks": masks}


def _stamp(epoch: float) -> str | None:
    if not np.isfinite(epoch):
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _flag_metrics(fraud: BoolArray, flagged: BoolArray) -> dict[str, Any]:
    tp = int(np.sum(flagged & fraud))
    fp = int(np.sum(flagged & ~fraud))
    normals = int(np.sum(~fraud))
    return {
        "recall": tp / int(fraud.sum()) if fraud.any() else None,
        "precision": tp / (tp + fp) if tp + fp else None,
        "normal_flagged_rate": fp / normals if normals else 0.0,
        "flagged": tp + fp,
        "frauds_flagged": tp,
    }


def _examples(
    test: list[Withdrawal],
    allowed_missed: BoolArray,
    amounts: FloatArray,
    hist: Any,
    n_train: int,
    ours: FloatArray,
) -> list[dict[str, Any]]:
    """The largest missed frauds the policy allowed, one per account."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i in np.argsort(-amounts * allowed_missed, kind="stable").tolist():
        if not allowed_missed[i] or len(out) >= _EXAMPLES:
            break
        event = test[i]
        if event.account_id in seen:
            continue
        seen.add(event.account_id)
        median = hist.median_30d[n_train + i]
        out.append(
            {
                "withdrawal_id": event.withdrawal_id,
                "requested_at": event.requested_at_text,
                "category": str((event.metadata or {}).get("category", "")),
                "amount": float(amounts[i]),
                "median_30d": None if np.isnan(median) else float(median),
                "count_1h": int(hist.count_1h[n_train + i]),
                "count_24h": int(hist.count_24h[n_train + i]),
                "score": float(ours[i]),
                "rank_pct": float(np.mean(ours > ours[i])),
            }
        )
    return out
