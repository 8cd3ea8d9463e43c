"""Shared fixtures. Broker-tier fixtures import kafka-python lazily so unit tests stay fast.

Broker tests (``@pytest.mark.broker``) talk to ``KAFKA_BOOTSTRAP_SERVERS`` (default
``127.0.0.1:9092``, e.g. from ``detector kafka start``). An unreachable broker FAILS them with
a message saying so: they never skip silently.
"""

from __future__ import annotations

import contextlib
import importlib
import subprocess
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from detector.config import Settings

# No per-example deadline: a shared 2-core CI machine runs examples 2-5x slower at times, and
# speed belongs in bench/, not in tests (Hypothesis' default is 200 ms per example).
hypothesis_settings.register_profile("detector", deadline=None)
hypothesis_settings.load_profile("detector")

_BROKER_WAIT_S = 30.0  # how long the session waits for the broker before failing broker tests
_TOPIC_TIMEOUT_S = 30.0  # topic creation / deletion budget per call

TopicFactory = Callable[..., str]
_BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``bench/bench_throughput.py`` as a module (``bench/`` on the path for this test)."""
    monkeypatch.syspath_prepend(str(_BENCH))
    return importlib.import_module("bench_throughput")


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def bootstrap_servers() -> str:
    """Bootstrap servers of a broker that serves metadata (waits up to 30 s, else fails)."""
    from detector.errors import KafkaSetupError
    from detector.local.broker import wait_ready

    servers = Settings.from_env().bootstrap_servers
    try:
        wait_ready(servers, _BROKER_WAIT_S)
    except KafkaSetupError as exc:
        problem = str(exc)
    else:
        return servers
    pytest.fail(
        f"broker tests need a Kafka broker at {servers} (KAFKA_BOOTSTRAP_SERVERS); {problem}. "
        f"Start one with `detector kafka start`, or deselect this tier with -m 'not broker'.",
        pytrace=False,
    )


@pytest.fixture
def topic_factory(bootstrap_servers: str) -> Iterator[TopicFactory]:
    """``make(partitions=1, config=None, prefix="test") -> name``: a fresh topic, deleted after."""
    from detector.stream.topics import TopicSpec, delete_topics, ensure_topics

    created: list[str] = []

    def make(
        partitions: int = 1, config: Mapping[str, str] | None = None, prefix: str = "test"
    ) -> str:
        name = _unique(prefix)
        spec = TopicSpec(name, partitions, config=dict(config or {}))
        created.append(name)
        ensure_topics(bootstrap_servers, [spec], timeout=_TOPIC_TIMEOUT_S)
        return name

    yield make
    delete_topics(bootstrap_servers, created, timeout=_TOPIC_TIMEOUT_S)


@pytest.fixture
def unique_group() -> str:
    """A consumer group id no other test uses."""
    return _unique("test-group")


@pytest.fixture
def worker_settings(bootstrap_servers: str, tmp_path: Path) -> Callable[..., Settings]:
    """``make(name="worker", partitions=4, **overrides) -> Settings``: a worker of its own
    (app id, topics, data dir under tmp_path, free web port) on the test broker."""
    from kafka_io import isolated_settings

    def make(name: str = "worker", **overrides: Any) -> Settings:
        return isolated_settings(bootstrap_servers, tmp_path / name, **overrides)

    return make


@pytest.fixture
def start_worker() -> Iterator[Callable[[Settings], subprocess.Popen[bytes]]]:
    """``start(settings) -> process``: topics created, a real ``detector worker`` process
    ready (/readyz 200); stopped and its topics deleted when the test ends."""
    from kafka_io import running_worker

    with contextlib.ExitStack() as stack:

        def start(settings: Settings) -> subprocess.Popen[bytes]:
            return stack.enter_context(running_worker(settings))

        yield start
