"""State the worker keeps: Faust tables' local stores, with changelog writes we control.

Faust tables give us recovery: at startup (or when partitions move) Faust reads each
table's compacted changelog topic back into the table's local store (memory, or RocksDB).
Writes go the other way through :class:`TableStore`, not through Faust's
``table[key] = value`` (which encodes and sends the whole value on every set, to the
partition of whatever event is *current*):

* a key written several times in one micro-batch is encoded and sent once;
* values are compact JSON (orjson), keys the UTF-8 of the account id / destination /
  withdrawal id (``raw`` serializers on both sides);
* the changelog partition is explicit: the partition of the input record that owns the key;
* the caller decides *when* the changelog records are produced and awaits them, so the
  worker can make state durable before the outputs that depend on it (``stream.app``);
* keys can be deleted (tombstones): idle accounts and destinations, and old dedupe entries,
  expire (:meth:`TableStore.expired`).

:class:`PartitionView` is what :class:`detector.pipeline.Stages` sees: a mapping whose writes
go to the partition of the record being processed.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from detector.stream.compat import StoreAccess

__all__ = ["PartitionView", "TableStore", "decode", "encode"]


def encode(value: Any) -> bytes:
    return orjson.dumps(value)


def decode(data: bytes) -> Any:
    return orjson.loads(data)


# One changelog record to produce: (partition, key, value or None for a tombstone).
ChangelogRecord = tuple[int, bytes, bytes | None]


class TableStore:
    """One table's state for the partitions this worker owns.

    Decoded values are cached (a hot key is decoded once); ``expiry(value)`` gives the time
    after which a value may be deleted (``None``: never).
    """

    def __init__(
        self,
        name: str,
        changelog_topic: str,
        access: StoreAccess,
        *,
        expiry: Callable[[Any], float | None] | None = None,
    ) -> None:
        self.name = name
        self.changelog_topic = changelog_topic
        self._access = access
        self._cache: dict[bytes, Any] = {}
        self._dirty: dict[bytes, tuple[int, Any]] = {}  # key -> (partition, value or None)
        self._sent: list[ChangelogRecord] = []  # produced, not yet known to be durable
        self._expiry = expiry
        self._due: dict[int, list[tuple[float, bytes]]] = {}  # partition -> heap
        self._indexed = False

    # ---------------------------------------------------------------- reads and writes

    def get(self, key: str, partition: int) -> Any:
        k = key.encode()
        value = self._cache.get(k)
        if value is not None:
            return value
        raw = self._access.get(k, partition)
        if raw is None:
            return None
        value = decode(raw)
        self._cache[k] = value
        return value

    def set(self, key: str, value: Any, partition: int) -> None:
        """Keep ``value`` (a value from :meth:`get` updated in place needs this too)."""
        k = key.encode()
        self._cache[k] = value
        self._dirty[k] = (partition, value)
        if self._expiry is not None:
            when = self._expiry(value)
            if when is not None:
                heapq.heappush(self._due.setdefault(partition, []), (when, k))

    def discard(self, key: str) -> None:
        """Forget an unwritten change to ``key`` (a step failed half way through it)."""
        k = key.encode()
        self._cache.pop(k, None)
        self._dirty.pop(k, None)

    def delete(self, key: bytes, partition: int) -> None:
        self._cache.pop(key, None)
        self._dirty[key] = (partition, None)

    def changelog(self) -> list[ChangelogRecord]:
        """The changelog records of every key changed since the last call (one per key).

        Produce them, then call :meth:`durable` once Kafka acknowledged them: only then is
        the local store (which a RocksDB store keeps across restarts) brought up to date,
        so it never holds state the changelog does not.
        """
        out: list[ChangelogRecord] = [
            (partition, k, None if value is None else encode(value))
            for k, (partition, value) in self._dirty.items()
        ]
        self._dirty.clear()
        self._sent.extend(out)
        return out

    def durable(self, offsets: dict[int, int] | None = None) -> None:
        """The records of :meth:`changelog` are acknowledged: apply them to the local store,
        and (RocksDB) remember ``offsets``, the last changelog offset written per partition,
        so a restart recovers only what came after."""
        for partition, k, data in self._sent:
            if data is None:
                self._access.delete(k, partition)
            else:
                self._access.put(k, data, partition)
        self._sent.clear()
        for partition, offset in (offsets or {}).items():
            self._access.set_persisted_offset(self.changelog_topic, partition, offset)

    def reset_cache(self) -> None:
        """After a rebalance: another worker may have written these keys meanwhile, so
        decode them again from the store (which Faust's recovery brought up to date)."""
        self._cache = {k: v for k, (_, v) in self._dirty.items() if v is not None}
        self._due.clear()
        self._indexed = False

    # ---------------------------------------------------------------- expiry

    def expired(self, partition: int, now: float, limit: int) -> Iterator[bytes]:
        """Up to ``limit`` keys of ``partition`` whose expiry time is before ``now``.

        The index is built from the local store on first use (after recovery), then kept by
        :meth:`set`; a key written again since it was indexed is checked again.
        """
        if self._expiry is None:
            return
        if not self._indexed:
            self._index()
        heap = self._due.get(partition)
        given: set[bytes] = set()
        while heap and limit > 0 and heap[0][0] < now:
            _, k = heapq.heappop(heap)
            if k in given or self._dirty.get(k, (0, 0))[1] is None:
                continue  # a duplicate index entry, or already being deleted
            value = self._cache.get(k)
            if value is None:
                raw = self._access.get(k, partition)
                if raw is None:
                    continue
                value = decode(raw)
            when = self._expiry(value)
            if when is None:
                continue
            if when >= now:
                heapq.heappush(heap, (when, k))
                continue
            limit -= 1
            given.add(k)
            yield k

    def _index(self) -> None:
        assert self._expiry is not None
        self._indexed = True
        for partition, k, raw in self._access.items():
            value = self._cache.get(k)
            when = self._expiry(decode(raw) if value is None else value)
            if when is not None:
                heapq.heappush(self._due.setdefault(partition, []), (when, k))

    def __len__(self) -> int:
        return len(self._access)


class PartitionView:
    """A :class:`~detector.pipeline.Store` over a :class:`TableStore` whose reads and writes
    go to ``partition`` (set it to the partition of the record being processed)."""

    def __init__(self, store: TableStore) -> None:
        self.store = store
        self.partition = 0

    def get(self, key: str, /) -> Any:
        return self.store.get(key, self.partition)

    def __setitem__(self, key: str, value: Any, /) -> None:
        self.store.set(key, value, self.partition)
