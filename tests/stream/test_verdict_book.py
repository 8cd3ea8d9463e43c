"""The verdicts on record, packed: a micro-batch's verdicts of one partition per changelog
record, found again by withdrawal_id after a rebalance, expired as tombstones."""

from __future__ import annotations

from typing import Any

import orjson

from detector.stream.state import PACK_BYTES, TableStore, VerdictBook

WINDOW = 3600.0


class LocalStore:
    """What a Faust table's local store does for :class:`TableStore` (bytes per partition)."""

    def __init__(self) -> None:
        self.data: dict[bytes, tuple[int, bytes]] = {}

    def get(self, key: bytes, partition: int) -> bytes | None:
        got = self.data.get(key)
        return None if got is None or got[0] != partition else got[1]

    def put(self, key: bytes, value: bytes, partition: int) -> None:
        self.data[key] = (partition, value)

    def delete(self, key: bytes, partition: int) -> None:
        self.data.pop(key, None)

    def items(self) -> list[tuple[int, bytes, bytes]]:
        return [(p, k, v) for k, (p, v) in self.data.items()]

    def set_persisted_offset(self, topic: str, partition: int, offset: int) -> None:
        pass


def _book(local: LocalStore, clock: list[float]) -> VerdictBook:
    store = TableStore(
        "decided",
        "app-decided-changelog",
        local,  # type: ignore[arg-type]
        expiry=lambda v: float(v["t"]) + WINDOW,
    )
    return VerdictBook(store, lambda: clock[0])


def _verdict(wid: str, pad: int = 0) -> str:
    return orjson.dumps({"withdrawal_id": wid, "verdict": "allow", "pad": "x" * pad}).decode()


def _batch(book: VerdictBook, partition: int, wids: list[str], pad: int = 0) -> list[Any]:
    book.partition = partition
    for wid in wids:
        book[wid] = _verdict(wid, pad)
    records = book.changelog()
    book.durable()
    return records


def test_a_batch_is_one_record_per_partition_and_each_verdict_reads_back() -> None:
    clock = [1000.0]
    book = _book(LocalStore(), clock)
    records = _batch(book, 0, ["a", "b", "c"]) + _batch(book, 1, ["d"])
    assert [(p, k) for p, k, _ in records] == [(0, b"\x00a"), (1, b"\x00d")]
    packed = orjson.loads(records[0][2])
    assert packed == {"t": 1000.0, "w": {w: _verdict(w) for w in "abc"}}
    book.partition = 0
    assert [book.get(w) for w in "abc"] == [_verdict(w) for w in "abc"]
    assert book.get("zz") is None


def test_a_pack_is_split_before_it_outgrows_a_kafka_record() -> None:
    book = _book(LocalStore(), [0.0])
    wids = [f"w-{i}" for i in range(40)]
    records = _batch(book, 2, wids, pad=20_000)  # 40 x 20 KB of verdict text
    packs = [orjson.loads(value)["w"] for _, _, value in records]
    assert [len(pack) for pack in packs] == [13, 13, 13, 1]  # 256 KiB of text at most
    assert all(sum(map(len, pack.values())) <= PACK_BYTES for pack in packs)
    assert [wid for pack in packs for wid in pack] == wids
    book.partition = 2
    assert all(book.get(wid) == _verdict(wid, 20_000) for wid in wids)


def test_after_a_rebalance_the_index_is_rebuilt_from_the_store_packed_or_not() -> None:
    """What another worker wrote (Faust's recovery put it in the local store), and a record
    of the earlier layout (one withdrawal per record, keyed by its id), are found."""
    local = LocalStore()
    clock = [50.0]
    _batch(_book(local, clock), 3, ["p-1", "p-2"])  # written by "another worker"
    local.put(b"old-1", orjson.dumps({"v": _verdict("old-1"), "t": 40.0}), 3)
    book = _book(local, clock)
    book.partition = 3
    assert book.get("p-2") == _verdict("p-2")
    assert book.get("old-1") == _verdict("old-1")
    book.store.reset_cache()
    book.reset()
    local.put(b"\x00q-1", orjson.dumps({"t": 60.0, "w": {"q-1": _verdict("q-1")}}), 3)
    assert book.get("q-1") == _verdict("q-1")  # seen only by the rebuilt index


def test_expired_packs_go_as_tombstones_and_are_forgotten() -> None:
    clock = [0.0]
    book = _book(LocalStore(), clock)
    _batch(book, 0, ["a", "b"])
    clock[0] = 100.0
    _batch(book, 0, ["c"])
    clock[0] = WINDOW + 50.0  # the first pack is a window old, the second is not
    book.expire([0], clock[0], limit=64)
    records = book.changelog()
    assert records == [(0, b"\x00a", None)]
    book.durable()
    assert [book.get(w) for w in "abc"] == [None, None, _verdict("c")]


def test_a_withdrawal_decided_again_is_not_forgotten_with_its_older_pack() -> None:
    clock = [0.0]
    book = _book(LocalStore(), clock)
    _batch(book, 0, ["a", "b"])
    clock[0] = 200.0
    book.partition = 0
    book["b"] = _verdict("b", pad=1)  # recorded again in a newer pack
    book.changelog()
    book.durable()
    book.expire([0], WINDOW + 100.0, limit=64)
    book.changelog()
    book.durable()
    assert book.get("a") is None
    assert book.get("b") == _verdict("b", pad=1)
