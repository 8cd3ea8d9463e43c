"""kafka-python behind the wallet client: the withdrawal producer and the verdict reader.

Only this module talks to kafka-python; :mod:`detector.client.wallet` sees two small
protocols (``WithdrawalSink``, ``DecisionSource``) that unit tests fake.

* :class:`KafkaWithdrawals` publishes with ``acks=all`` and an idempotent producer, keyed by
  ``account_id`` through kafka-python's default partitioner: murmur2 of the key, like the
  Java client and aiokafka (the contract's partitioning).
* :class:`KafkaDecisions` reads ``decisions`` without a consumer group: it assigns itself
  only the partitions it is asked for (the one an account hashes to) and starts each at the
  end offset taken at that moment, so nothing older is read and nothing newer is missed.
  Not thread-safe (kafka-python consumers are not): the wallet client calls it from its one
  reader thread.
"""

from __future__ import annotations

import socket
import warnings
from collections.abc import Sequence
from typing import Any

__all__ = ["KafkaDecisions", "KafkaWithdrawals", "decisions_partition", "murmur2_partition"]

# kafka-python 3.0.x reads bundled data with deprecated importlib APIs at import time.
_KAFKA_IMPORT_WARNINGS = r"(read|open)_text is deprecated"
_TCP_PROBE_TIMEOUT_S = 2.0  # one TCP connect before kafka-python bootstraps
# Longest time a producer call blocks for metadata (ms): the wallet client runs sends on its
# own threads and never waits past a deadline, but a send must not hang a thread for minutes.
_MAX_BLOCK_MS = 5000
_REQUEST_TIMEOUT_MS = 10000
# A fetch waits at most this long for data (ms): a partition assigned while a fetch is in
# flight joins the next one, so this bounds the extra latency of an account's first verdict.
_FETCH_MAX_WAIT_MS = 50


def _kafka() -> Any:
    """Import kafka-python, hiding its import-time DeprecationWarnings."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=_KAFKA_IMPORT_WARNINGS, category=DeprecationWarning
        )
        import kafka
        import kafka.partitioner.default
        import kafka.structs

    return kafka


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` among ``partitions``:
    ``(murmur2(key) & 0x7fffffff) % partitions`` (kafka-python's implementation of the Java
    client's hash, the same one the detector's producers use)."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, got {partitions}")
    murmur2 = _kafka().partitioner.default.murmur2
    return (int(murmur2(key)) & 0x7FFFFFFF) % partitions


def decisions_partition(account_id: str, partitions: int) -> int:
    """The ``decisions`` partition of an account's verdicts (keyed by account_id)."""
    return murmur2_partition(account_id.encode("utf-8"), partitions)


def _reachable(bootstrap: Sequence[str]) -> list[str]:
    """The bootstrap entries that accept a TCP connection. kafka-python 3.0 leaks a socket per
    refused connection and its I/O thread when bootstrap fails inside a client's __init__."""
    out = []
    for entry in bootstrap:
        host, _, port = entry.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), _TCP_PROBE_TIMEOUT_S):
                out.append(entry)
        except (OSError, ValueError):
            continue
    if not out:
        raise ConnectionError(f"cannot connect to Kafka at {','.join(bootstrap)}")
    return out


class KafkaWithdrawals:
    """The withdrawal producer: acks=all, idempotent, murmur2 on the account_id key.

    kafka-python's ``KafkaProducer`` is thread-safe: every ``decide`` thread publishes
    through this one instance.
    """

    def __init__(self, bootstrap: Sequence[str], topic: str, *, client_id: str) -> None:
        kafka = _kafka()
        self.topic = topic
        self._producer = kafka.KafkaProducer(
            bootstrap_servers=_reachable(bootstrap),
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=0,  # one withdrawal at a time: latency over batching
            max_block_ms=_MAX_BLOCK_MS,
            request_timeout_ms=_REQUEST_TIMEOUT_MS,
        )
        try:
            # Fetch the topic's metadata now: a missing topic fails the connection, not a
            # withdrawal, and sends never block on metadata afterwards.
            if not self._producer.partitions_for(topic):
                raise ConnectionError(f"topic {topic!r} has no partitions")
        except BaseException:
            self._producer.close(timeout=1)
            raise

    def publish(self, key: bytes, value: bytes, timeout_s: float) -> None:
        """Send one record and wait until Kafka acknowledged it (all in-sync replicas)."""
        self._producer.send(self.topic, key=key, value=value).get(timeout=timeout_s)

    def close(self, timeout_s: float) -> None:
        self._producer.close(timeout=timeout_s)


class KafkaDecisions:
    """Reads verdicts from the partitions of ``decisions`` it is asked to watch."""

    def __init__(self, bootstrap: Sequence[str], topic: str, *, client_id: str) -> None:
        kafka = _kafka()
        self.topic = topic
        self._tp = kafka.structs.TopicPartition
        self._consumer = kafka.KafkaConsumer(
            bootstrap_servers=_reachable(bootstrap),
            client_id=client_id,
            group_id=None,  # no group: no rebalances, no commits; positions are ours
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=_FETCH_MAX_WAIT_MS,
            request_timeout_ms=_REQUEST_TIMEOUT_MS,
        )
        self._assigned: list[Any] = []

    def partition_count(self) -> int:
        """Partitions of the decisions topic (0 when it does not exist)."""
        return len(self._consumer.partitions_for_topic(self.topic) or ())

    def start_at_end(self, partition: int) -> None:
        """Watch ``partition`` from its current end offset (taken now, before the caller
        publishes). Partitions already watched keep their positions."""
        tp = self._tp(self.topic, partition)
        if tp in self._assigned:
            return
        end = self._consumer.end_offsets([tp], timeout_ms=_REQUEST_TIMEOUT_MS)[tp]
        self._consumer.assign([*self._assigned, tp])
        self._consumer.seek(tp, end)
        self._assigned.append(tp)

    def poll(self, timeout_s: float) -> list[bytes]:
        """Values of the records that arrived on the watched partitions."""
        if not self._assigned:
            return []
        batches = self._consumer.poll(timeout_ms=max(int(timeout_s * 1000), 0))
        return [r.value for records in batches.values() for r in records if r.value is not None]

    def close(self) -> None:
        self._consumer.close(autocommit=False)
