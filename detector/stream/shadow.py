"""``detector shadow-report``: how the shadow model compares with the active one.

Reads ``decisions`` and ``decisions-shadow`` (from a start time, or everything), pairs the
verdicts by withdrawal_id and summarises: how many were scored by both, how often the two
verdicts agree, the confusion of verdict kinds, and the withdrawals they disagree on with
both models' scores and reasons (largest score difference first).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from detector.config import Settings
from detector.policy import VERDICTS
from detector.stream.compat import import_kafka

__all__ = ["compare", "format_report", "read_verdicts", "shadow_report"]


def compare(
    active: Mapping[str, Mapping[str, Any]], shadow: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The comparison of the verdicts both models gave (by withdrawal_id)."""
    both = sorted(set(active) & set(shadow))
    confusion: Counter[tuple[str, str]] = Counter()
    fields = ("verdict", "score", "reasons", "model_version")
    disagreements: list[dict[str, Any]] = []
    for wid in both:
        a, s = active[wid], shadow[wid]
        confusion[(a["verdict"], s["verdict"])] += 1
        if a["verdict"] != s["verdict"]:
            disagreements.append(
                {
                    "withdrawal_id": wid,
                    "account_id": a.get("account_id"),
                    "active": {k: a.get(k) for k in fields},
                    "shadow": {k: s.get(k) for k in fields},
                }
            )
    disagreements.sort(
        key=lambda d: -abs(float(d["active"]["score"] or 0) - float(d["shadow"]["score"] or 0))
    )
    agree = sum(n for (a, s), n in confusion.items() if a == s)
    return {
        "compared": len(both),
        "only_active": len(set(active) - set(shadow)),
        "agreement": agree / len(both) if both else None,
        "confusion": {f"{a}->{s}": n for (a, s), n in sorted(confusion.items())},
        "active_models": sorted({str(active[w].get("model_version")) for w in both}),
        "shadow_models": sorted({str(shadow[w].get("model_version")) for w in both}),
        "disagreements": disagreements,
    }


def format_report(result: Mapping[str, Any], *, show: int = 10) -> str:
    lines = [
        f"compared {result['compared']} withdrawals scored by both models "
        f"(active {', '.join(result['active_models']) or '-'}; "
        f"shadow {', '.join(result['shadow_models']) or '-'}); "
        f"{result['only_active']} only by the active one",
    ]
    if result["agreement"] is not None:
        lines.append(f"agreement: {result['agreement']:.2%}")
        header = "active \\ shadow " + " ".join(f"{v:>8s}" for v in VERDICTS)
        lines.append(header)
        for a in VERDICTS:
            row = " ".join(f"{result['confusion'].get(f'{a}->{s}', 0):8d}" for s in VERDICTS)
            lines.append(f"{a:16s}{row}")
    for d in result["disagreements"][:show]:
        a, s = d["active"], d["shadow"]
        lines.append(
            f"  {d['withdrawal_id']} ({d['account_id']}): active {a['verdict']} {a['score']:.3f} "
            f"[{_codes(a['reasons'])}] vs shadow {s['verdict']} {s['score']:.3f} "
            f"[{_codes(s['reasons'])}]"
        )
    return "\n".join(lines)


def _codes(reasons: Iterable[Mapping[str, str]] | None) -> str:
    return ", ".join(r["code"] for r in reasons or []) or "-"


def read_verdicts(
    settings: Settings, topic: str, *, since: float | None = None, timeout: float = 5.0
) -> dict[str, dict[str, Any]]:
    """Every verdict on ``topic`` (from ``since``, epoch s), first one per withdrawal_id."""
    import_kafka()
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_list,
        enable_auto_commit=False,
        **settings.kafka_python_config(),
    )
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        if since is None:
            consumer.seek_to_beginning(*tps)
        else:
            starts = consumer.offsets_for_times({tp: int(since * 1000) for tp in tps})
            for tp in tps:
                found = starts.get(tp)
                consumer.seek(tp, found.offset if found is not None else ends[tp])
        out: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                break
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    doc = json.loads(record.value)
                    out.setdefault(str(doc["withdrawal_id"]), doc)
            deadline = time.monotonic() + timeout
        return out
    finally:
        consumer.close()


def shadow_report(settings: Settings, *, since: float | None = None) -> dict[str, Any]:
    active = read_verdicts(settings, settings.topic_decisions, since=since)
    shadow = read_verdicts(settings, settings.topic_decisions_shadow, since=since)
    return compare(active, shadow)
