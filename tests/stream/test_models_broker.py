"""Changing models without stopping: promote under traffic, shadow, roll back (real broker).

A worker serves model A. While withdrawals stream in, `detector models promote B` switches
every verdict to B without a restart; `detector models shadow A` makes A score the same
withdrawals into decisions-shadow; `detector models rollback` returns to A. No withdrawal
is left without a verdict, the worker process is the same one throughout, and
`detector shadow-report` prints the comparison.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka_io import DEFAULT_MODEL, consume_until, produce

from detector.cli import main
from detector.config import Settings
from detector.model import Model, ModelStore
from detector.policy import Policy

pytestmark = pytest.mark.broker


def _other_model(tmp: Path) -> Path:
    """Model B: A's forests with a lower delay threshold (holds more), a version of its own."""
    a = Model.load(DEFAULT_MODEL)
    b = dataclasses.replace(
        a,
        version="iforest-test-b",
        policy=Policy(
            delay_threshold=a.policy.delay_threshold - 0.05,
            refuse_threshold=a.policy.refuse_threshold,
        ),
    )
    out = tmp / "model-b"
    b.save(out)
    return out


def _withdrawal(i: int) -> dict[str, Any]:
    return {
        "withdrawal_id": f"sw-{i}",
        "account_id": f"acct-{i % 40}",
        "asset": "USDT",
        "amount": str(100 + i % 900),
        "amount_usd": float(100 + i % 900),
        "destination": f"T-dest-{i % 25}",
        "requested_at": "2026-11-24T10:00:00Z",
    }


def _stream(settings: Settings, total: int, rate: float) -> None:
    """``total`` withdrawals at ``rate`` per second, each flushed (traffic, not a preload)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_list, acks="all", linger_ms=0)
    began = time.monotonic()
    for i in range(total):
        pause = began + i / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        w = _withdrawal(i)
        producer.send(
            settings.topic_withdrawals, key=w["account_id"].encode(), value=json.dumps(w).encode()
        )
    producer.flush()
    producer.close()


def _first_at(records: list[Any], version: str) -> float | None:
    stamps = [
        r.timestamp / 1000.0 for r in records if json.loads(r.value)["model_version"] == version
    ]
    return min(stamps) if stamps else None


def test_promote_under_traffic_then_shadow_then_roll_back(
    worker_settings: Callable[..., Settings],
    start_worker: Callable[[Settings], Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = ModelStore(tmp_path / "store")
    version_a = store.add(DEFAULT_MODEL)
    version_b = store.add(_other_model(tmp_path))
    settings = worker_settings(model_store=store.root)
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)  # the CLI below reads its settings from here
    proc = start_worker(settings)

    total, rate = 3000, 150.0
    sender = threading.Thread(target=_stream, args=(settings, total, rate), daemon=True)
    sender.start()
    time.sleep(4.0)
    promoted_at = time.time()
    assert main(["models", "promote", version_b, "--by", "test"]) == 0
    time.sleep(4.0)
    assert main(["models", "shadow", version_a, "--by", "test"]) == 0
    time.sleep(4.0)
    rolled_back_at = time.time()
    assert main(["models", "rollback", "--by", "test"]) == 0
    sender.join(timeout=120)

    got = consume_until(settings, [settings.topic_decisions], lambda r: len(r) >= total)
    decided = {json.loads(r.value)["withdrawal_id"] for r in got}
    assert decided == {f"sw-{i}" for i in range(total)}  # nothing left without a verdict
    assert proc.poll() is None  # the same worker process throughout: no restart

    first_b = _first_at(got, version_b)
    assert first_b is not None and first_b >= promoted_at
    switch_s = first_b - promoted_at
    assert switch_s < 10.0, f"promote took {switch_s:.1f} s to reach the verdicts"
    back = [
        json.loads(r.value)["model_version"]
        for r in got
        if r.timestamp / 1000.0 > rolled_back_at + 5.0
    ]
    assert back and set(back) == {version_a}  # rolled back: A decides again

    shadow = consume_until(settings, [settings.topic_decisions_shadow], lambda r: len(r) >= 50)
    shadow_versions = {json.loads(r.value)["model_version"] for r in shadow}
    assert shadow_versions == {version_a}  # the shadow (A) scored while B was active
    print(f"switch time (promote -> first verdict of B): {switch_s:.2f} s")


def test_the_shadow_report_prints_the_comparison(
    worker_settings: Callable[..., Settings],
    start_worker: Callable[[Settings], Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = ModelStore(tmp_path / "store")
    store.add(DEFAULT_MODEL)
    version_b = store.add(_other_model(tmp_path))
    settings = worker_settings(model_store=store.root)
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    start_worker(settings)
    assert main(["models", "shadow", version_b, "--by", "test"]) == 0
    time.sleep(3.0)
    heavy = [{**_withdrawal(i), "amount_usd": 5000.0 * (1 + i % 7)} for i in range(200)]
    produce(settings, [(w["account_id"].encode(), json.dumps(w).encode()) for w in heavy])
    consume_until(settings, [settings.topic_decisions_shadow], lambda r: len(r) >= 200)
    capsys.readouterr()
    assert main(["shadow-report", "--show", "3"]) == 0
    out = capsys.readouterr().out
    assert "compared 200 withdrawals" in out and "agreement:" in out
