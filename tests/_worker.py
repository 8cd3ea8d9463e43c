"""Run a real ``detector worker`` process against the test broker, on topics of its own."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from detector.app import topic_specs
from detector.config import Settings
from detector.topics import delete_topics, ensure_topics

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "models" / "default"
_READY_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def isolated_settings(
    bootstrap_servers: str,
    tmp: Path,
    *,
    partitions: int = 4,
    model_dir: Path = DEFAULT_MODEL,
    **overrides: Any,
) -> Settings:
    run = uuid.uuid4().hex[:10]
    return replace(
        Settings(),
        bootstrap_servers=bootstrap_servers,
        app_id=f"test-detector-{run}",
        topic_withdrawals=f"t-{run}-withdrawals",
        topic_decisions=f"t-{run}-decisions",
        topic_dlq=f"t-{run}-withdrawals-dlq",
        partitions=partitions,
        model_dir=model_dir,
        data_dir=tmp / "data",
        web_port=free_port(),
        **overrides,
    )


def worker_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "DETECTOR_APP_ID": settings.app_id,
            "DETECTOR_TOPIC_WITHDRAWALS": settings.topic_withdrawals,
            "DETECTOR_TOPIC_DECISIONS": settings.topic_decisions,
            "DETECTOR_TOPIC_DLQ": settings.topic_dlq,
            "DETECTOR_PARTITIONS": str(settings.partitions),
            "DETECTOR_MODEL_DIR": str(settings.model_dir),
            "DETECTOR_DATA_DIR": str(settings.data_dir),
            "DETECTOR_WEB_PORT": str(settings.web_port),
            "DETECTOR_STUCK_AFTER_S": str(settings.stuck_after_s),
            "DETECTOR_LOG_LEVEL": "warning",
        }
    )
    return env


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


@contextlib.contextmanager
def running_worker(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """Create the topics, start the worker, wait for /readyz; stop and clean up after."""
    ensure_topics(settings.bootstrap_servers, topic_specs(settings))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.data_dir / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "detector", "worker"],
            env=worker_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        url = f"http://127.0.0.1:{settings.web_port}/readyz"
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"worker exited {proc.returncode}:\n{log_tail(log_path)}")
            with contextlib.suppress(OSError):
                if get(url)[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"worker not ready in {_READY_TIMEOUT_S}s:\n{log_tail(log_path)}"
                )
            time.sleep(0.25)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(Exception):
            delete_topics(settings.bootstrap_servers, [s.name for s in topic_specs(settings)])


def log_tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def produce(
    settings: Settings, records: list[tuple[bytes | None, bytes]], topic: str | None = None
) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_list, acks="all", linger_ms=5)
    try:
        for key, value in records:
            producer.send(topic or settings.topic_withdrawals, key=key, value=value)
        producer.flush(60)
    finally:
        producer.close()


def consume_until(
    settings: Settings, topics: list[str], done: Any, *, timeout: float = 120.0
) -> list[Any]:
    """Read ``topics`` from the beginning until ``done(records)`` or the timeout."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        *topics,
        bootstrap_servers=settings.bootstrap_list,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=500,
    )
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not done(records):
            records.extend(consumer)
        # Keep reading briefly: anything extra (duplicates) must be seen too.
        settle = time.monotonic() + 3.0
        while time.monotonic() < settle:
            records.extend(consumer)
    finally:
        consumer.close()
    return records


def verdicts_of(records: list[Any], topic: str) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records if r.topic == topic]
