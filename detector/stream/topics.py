"""Explicit topic creation: every topic exists, with its partition count, before anything uses it.

The broker runs with ``auto.create.topics.enable=false`` and Faust must never create topics by
itself (traps: a table's changelog needs exactly the partition count of its source topic, and a
broker's default count differs). :func:`ensure_topics` creates what is missing and refuses to go
on when an existing topic has the wrong partition count, naming the topic and both counts.

Also here, shared with :mod:`detector.local.broker`: :func:`admin_client`, a kafka-python
``KafkaAdminClient`` that checks TCP reachability first and never leaks its I/O thread when the
cluster is unreachable, and :func:`quiet_kafka_logging` for polling loops.

Written against kafka-python 3.x; the few result fields read here also accept 2.x key names.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from detector.config import parse_bootstrap
from detector.errors import ConfigError, KafkaSetupError
from detector.stream.compat import import_kafka, new_admin_client

__all__ = [
    "TopicSpec",
    "admin_client",
    "delete_topics",
    "ensure_topics",
    "partition_counts",
    "quiet_kafka_logging",
]

_TCP_PROBE_TIMEOUT_S = 2.0  # longest wait for one TCP connect before asking kafka-python
_LEADER_POLL_INTERVAL_S = 0.1  # pause between metadata polls while new partitions elect leaders
_MIN_REQUEST_TIMEOUT_MS = 1000  # kafka-python rejects/mishandles tiny request timeouts
_CLIENT_ID = "detector-admin"  # shows up in broker request logs


@dataclass(frozen=True)
class TopicSpec:
    """A topic as the detector needs it: name, partition count, replication, topic configs.

    ``config`` holds topic-level overrides, e.g. ``{"cleanup.policy": "compact"}`` for
    changelogs (never time-retained: faust-streaming#597).
    """

    name: str
    partitions: int
    replication: int = 1
    config: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ConfigError("topic name is empty")
        if self.partitions < 1:
            raise ConfigError(
                f"topic {self.name!r}: partitions must be >= 1, got {self.partitions}"
            )
        if self.replication < 1:
            raise ConfigError(
                f"topic {self.name!r}: replication must be >= 1, got {self.replication}"
            )


def _tcp_reachable(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def quiet_kafka_logging(level: int = logging.CRITICAL) -> Iterator[None]:
    """Silence kafka-python's loggers (connection-refused warnings) inside the block."""
    logger = logging.getLogger("kafka")
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


@contextlib.contextmanager
def admin_client(
    bootstrap_servers: str, *, timeout: float = 30.0, security: Mapping[str, Any] | None = None
) -> Iterator[Any]:
    """A connected ``KafkaAdminClient``, closed on exit; ``security`` is
    :meth:`Settings.kafka_python_config` (TLS, SASL).

    Unreachable clusters raise :class:`KafkaSetupError` (``retriable=True``) after a plain TCP
    probe, before kafka-python is involved: kafka-python 3.0 leaks a socket per refused
    connection and its I/O thread when bootstrap fails in ``__init__``.
    """
    import_kafka()
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    probe_timeout = min(timeout, _TCP_PROBE_TIMEOUT_S)
    reachable = [
        f"[{h}]:{p}" if ":" in h else f"{h}:{p}"
        for h, p in parse_bootstrap(bootstrap_servers)
        if _tcp_reachable(h, p, probe_timeout)
    ]
    if not reachable:
        raise KafkaSetupError(
            f"cannot connect to Kafka at {bootstrap_servers} (connection refused or timed out)",
            retriable=True,
        )
    timeout_ms = max(int(timeout * 1000), _MIN_REQUEST_TIMEOUT_MS)
    configs: dict[str, Any] = {
        "bootstrap_servers": reachable,
        "client_id": _CLIENT_ID,
        "request_timeout_ms": timeout_ms,
        **(security or {}),
    }
    if "bootstrap_timeout_ms" in KafkaAdminClient.DEFAULT_CONFIG:  # kafka-python >= 3
        configs["bootstrap_timeout_ms"] = timeout_ms
    else:  # kafka-python 2.x
        configs["api_version_auto_timeout_ms"] = timeout_ms
    try:
        admin = new_admin_client(configs)
    except (KafkaError, OSError) as exc:
        raise KafkaSetupError(
            f"cannot fetch metadata from Kafka at {bootstrap_servers}: {type(exc).__name__}: {exc}",
            retriable=True,
        ) from exc
    try:
        yield admin
    finally:
        admin.close()


def _topic_name(info: Mapping[str, Any]) -> str:
    return str(info.get("name", info.get("topic", "")))


def _leader(partition: Mapping[str, Any]) -> int:
    return int(partition.get("leader_id", partition.get("leader", -1)))


def _describe(admin: Any, names: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    if not names:
        return {}
    return {_topic_name(t): t for t in admin.describe_topics(list(names))}


def _check_partitions(admin: Any, specs: Sequence[TopicSpec]) -> None:
    """Raise KafkaSetupError naming every existing topic whose partition count is wrong."""
    described = _describe(admin, [s.name for s in specs])
    problems: list[str] = []
    for spec in specs:
        info = described.get(spec.name)
        if info is None or info.get("error_code", 0) != 0:
            code = None if info is None else info.get("error_code")
            problems.append(f"topic {spec.name!r} cannot be described (error code {code})")
            continue
        actual = len(info.get("partitions") or [])
        if actual != spec.partitions:
            problems.append(
                f"topic {spec.name!r} has {actual} partitions, expected {spec.partitions}"
            )
    if problems:
        raise KafkaSetupError(
            "existing topics do not match the detector's topic specs: "
            + "; ".join(problems)
            + ". A table's changelog needs exactly its source topic's partition count: delete "
            "and recreate the topics (and wipe the local Faust store), or change "
            "DETECTOR_PARTITIONS to match."
        )


def _not_ready_reason(info: Mapping[str, Any] | None, expected: int) -> str | None:
    if info is None:
        return "missing from metadata"
    if info.get("error_code", 0) != 0:
        return f"error code {info.get('error_code')}"
    partitions = info.get("partitions") or []
    if len(partitions) != expected:
        return f"{len(partitions)}/{expected} partitions in metadata"
    leaderless = [p for p in partitions if _leader(p) < 0 or p.get("error_code", 0) != 0]
    if leaderless:
        return f"{len(leaderless)} partitions without a leader"
    return None


def _wait_for_leaders(admin: Any, specs: Sequence[TopicSpec], deadline: float) -> None:
    pending: dict[str, str] = {}
    while True:
        try:
            described = _describe(admin, [s.name for s in specs])
        except Exception as exc:  # transient metadata errors: retry until the deadline
            described = {}
            pending = {s.name: f"{type(exc).__name__}: {exc}" for s in specs}
        else:
            pending = {}
            for spec in specs:
                reason = _not_ready_reason(described.get(spec.name), spec.partitions)
                if reason is not None:
                    pending[spec.name] = reason
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise KafkaSetupError(
                f"created topics are not ready (every partition with a leader): {pending}",
                retriable=True,
            )
        time.sleep(_LEADER_POLL_INTERVAL_S)


def ensure_topics(
    bootstrap_servers: str,
    specs: Sequence[TopicSpec],
    *,
    timeout: float = 30.0,
    security: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create the missing topics of ``specs``; verify the partition counts of existing ones.

    Returns the names this call created (empty when everything already existed). Waits until
    every created topic is in the metadata with a leader for every partition. Raises
    :class:`KafkaSetupError` when an existing topic (or one another process created
    concurrently) has a different partition count, or when creation fails.
    """
    import_kafka()
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    by_name: dict[str, TopicSpec] = {}
    for spec in specs:
        if by_name.setdefault(spec.name, spec) != spec:
            raise ConfigError(f"topic {spec.name!r} is specified twice, differently")
    if not by_name:
        return []
    deadline = time.monotonic() + timeout
    with admin_client(bootstrap_servers, timeout=timeout, security=security) as admin:
        existing = set(admin.list_topics())
        _check_partitions(admin, [s for s in by_name.values() if s.name in existing])
        created: list[TopicSpec] = []
        raced: list[TopicSpec] = []
        timeout_ms = max(int(timeout * 1000), _MIN_REQUEST_TIMEOUT_MS)
        # One request per topic: an error names its topic and does not hide the others' fate.
        for spec in (s for s in by_name.values() if s.name not in existing):
            new_topic = NewTopic(
                name=spec.name,
                num_partitions=spec.partitions,
                replication_factor=spec.replication,
                topic_configs=dict(spec.config),
            )
            try:
                admin.create_topics([new_topic], timeout_ms=timeout_ms)
            except TopicAlreadyExistsError:
                raced.append(spec)  # created concurrently by someone else: verify it instead
            except KafkaError as exc:
                raise KafkaSetupError(
                    f"cannot create topic {spec.name!r} ({spec.partitions} partitions, "
                    f"replication {spec.replication}, config {dict(spec.config)}): "
                    f"{type(exc).__name__}: {exc}",
                    retriable=getattr(exc, "retriable", False),
                ) from exc
            else:
                created.append(spec)
        _check_partitions(admin, raced)
        _wait_for_leaders(admin, created + raced, deadline)
    return [s.name for s in created]


def partition_counts(
    bootstrap_servers: str,
    names: Sequence[str],
    *,
    timeout: float = 30.0,
    security: Mapping[str, Any] | None = None,
) -> dict[str, int]:
    """``{name: partition count}`` of the named topics that exist (missing ones are left out),
    for readers that assign themselves every partition of a topic."""
    if not names:
        return {}
    with admin_client(bootstrap_servers, timeout=timeout, security=security) as admin:
        existing = set(admin.list_topics())
        described = _describe(admin, [n for n in dict.fromkeys(names) if n in existing])
    return {
        name: len(info.get("partitions") or [])
        for name, info in described.items()
        if info.get("error_code", 0) == 0 and info.get("partitions")
    }


def delete_topics(
    bootstrap_servers: str,
    names: Sequence[str],
    *,
    timeout: float = 30.0,
    security: Mapping[str, Any] | None = None,
) -> None:
    """Delete the named topics that exist (missing ones are ignored). Meant for test cleanup.

    Returns once the controller accepted the deletion; the names may take a moment to vanish
    from every broker's metadata.
    """
    import_kafka()
    from kafka.errors import UnknownTopicOrPartitionError

    if not names:
        return
    with admin_client(bootstrap_servers, timeout=timeout, security=security) as admin:
        existing = set(admin.list_topics())
        doomed = [n for n in dict.fromkeys(names) if n in existing]
        if not doomed:
            return
        with contextlib.suppress(UnknownTopicOrPartitionError):  # deleted concurrently
            admin.delete_topics(
                doomed, timeout_ms=max(int(timeout * 1000), _MIN_REQUEST_TIMEOUT_MS)
            )
