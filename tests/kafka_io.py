"""Run a real ``detector worker`` process against the test broker, on topics of its own."""

from __future__ import annotations

import contextlib
import json
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

from detector.config import Settings, child_environment
from detector.local.process import worker_process
from detector.stream.app import topic_specs
from detector.stream.topics import delete_topics, ensure_topics

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
    # Broker tests replay simulated history (event times in the past): no age limit.
    overrides.setdefault("max_event_age_s", 0.0)
    # Every topic the worker creates (and deletes after the test) is this run's own: the
    # defaults ("labels", "decisions-shadow", ...) would be shared by every test on the
    # broker, created with this test's partition count and deleted under the others.
    overrides.setdefault("topic_labels", f"t-{run}-labels")
    overrides.setdefault("topic_decisions_shadow", f"t-{run}-decisions-shadow")
    overrides.setdefault("topic_review_decisions", f"t-{run}-review-decisions")
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


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


@contextlib.contextmanager
def running_worker(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """Create the topics, start the worker, wait for /readyz; stop and clean up after."""
    security = settings.kafka_python_config()
    ensure_topics(settings.bootstrap_servers, topic_specs(settings), security=security)
    try:
        with worker_process(settings, log_path=settings.data_dir / "worker.log", cwd=REPO) as proc:
            yield proc
    finally:
        with contextlib.suppress(Exception):
            names = [s.name for s in topic_specs(settings)]
            delete_topics(settings.bootstrap_servers, names, security=security)


@contextlib.contextmanager
def running_review(settings: Settings, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``detector review`` (the CLI, a child process), ready: /readyz 200, its queue caught up
    with Kafka; SIGTERM (then SIGKILL) after. ``settings`` name the worker's topics and a users
    file; the service creates its own two topics (the caller deletes them: see
    ``detector.review.service.review_topic_specs``)."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "detector", "review"],
            cwd=REPO,
            env=child_environment(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://{settings.review_host}:{settings.review_port}/readyz"
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while get_or_none(url) != 200:
            assert proc.poll() is None, f"detector review exited: {log_path.read_text()}"
            assert time.monotonic() < deadline, f"review not ready: {log_path.read_text()}"
            time.sleep(0.2)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def get_or_none(url: str) -> int | None:
    """The status of GET ``url``, None when nothing answers."""
    try:
        return get(url)[0]
    except OSError:
        return None


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


def records_of(settings: Settings, topic: str, wid: str) -> list[Any]:
    """Every record of ``topic`` whose JSON names withdrawal ``wid`` (read from the start)."""
    found = consume_until(
        settings,
        [topic],
        lambda rs: any(json.loads(r.value).get("withdrawal_id") == wid for r in rs),
        timeout=30,
    )
    return [r for r in found if json.loads(r.value).get("withdrawal_id") == wid]


def verdicts_of(records: list[Any], topic: str) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records if r.topic == topic]
