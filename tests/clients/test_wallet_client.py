"""The wallet client (detector.client) against a fake Kafka: fail safe, dedupe, validation.

The fakes stand in for the two Kafka ends the client uses (``WithdrawalSink``,
``DecisionSource``); a fake worker answers published withdrawals on the fake ``decisions``.
No broker: ``tests/clients/test_wallet_client_broker.py`` runs the same client for real.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.client import (
    CLIENT_ERROR,
    CLIENT_TIMEOUT,
    ClientVerdict,
    WalletClient,
    decisions_partition,
)
from detector.client.transport import murmur2_partition
from detector.errors import InvalidEvent

PARTITIONS = 4
DEADLINE_S = 2.0
SHORT_S = 0.3  # deadline of the tests that expect a timeout
SLACK_S = 0.5  # a decide that times out returns within its deadline plus this


def withdrawal(wid: str = "w-1", account: str = "acct-1", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "withdrawal_id": wid,
        "account_id": account,
        "asset": "BTC",
        "amount": "0.5",
        "amount_usd": 30000.0,
        "destination": "bc1qdestination",
        "requested_at": "2026-11-24T10:00:00Z",
    }
    doc.update(extra)
    return doc


def verdict_doc(event: dict[str, Any], verdict: str = "allow", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "withdrawal_id": event["withdrawal_id"],
        "account_id": event["account_id"],
        "verdict": verdict,
        "score": 0.42,
        "reasons": [{"code": "new_destination", "detail": "destination never used"}],
        "model_version": "iforest-test",
        "decided_at": "2026-11-24T10:00:00.010Z",
        "schema_version": 1,
    }
    if verdict == "delay":
        doc["hold_seconds"] = 3600
    doc.update(extra)
    return doc


class FakeDecisions:
    """A ``decisions`` topic of PARTITIONS partitions; ``emit`` appends a verdict."""

    def __init__(self, partitions: int = PARTITIONS) -> None:
        self.partitions = partitions
        self.records: queue.Queue[tuple[int, bytes]] = queue.Queue()
        self.watched: list[int] = []
        self.log: list[str] = []  # "watch <p>" / "publish <id>" in the order they happened
        self.closed = False

    def emit(self, value: bytes | dict[str, Any], partition: int | None = None) -> None:
        if isinstance(value, dict):
            part = decisions_partition(value["account_id"], self.partitions)
            value = json.dumps(value).encode()
        else:
            part = 0
        self.records.put((part if partition is None else partition, value))

    # DecisionSource
    def partition_count(self) -> int:
        return self.partitions

    def start_at_end(self, partition: int) -> None:
        self.watched.append(partition)
        self.log.append(f"watch {partition}")

    def poll(self, timeout_s: float) -> list[bytes]:
        out: list[bytes] = []
        try:
            out.append(self._watched_only(self.records.get(timeout=timeout_s)))
            while True:
                out.append(self._watched_only(self.records.get_nowait()))
        except queue.Empty:
            pass
        return [v for v in out if v]

    def _watched_only(self, record: tuple[int, bytes]) -> bytes:
        partition, value = record
        return value if partition in self.watched else b""

    def close(self) -> None:
        self.closed = True


class FakeWithdrawals:
    """The withdrawals topic; ``answer`` plays the worker for each published record."""

    def __init__(
        self,
        decisions: FakeDecisions,
        answer: Callable[[dict[str, Any]], list[dict[str, Any] | bytes]] | None = None,
    ) -> None:
        self.decisions = decisions
        self.answer = answer or (lambda event: [verdict_doc(event)])
        self.sent: list[tuple[bytes, dict[str, Any]]] = []
        self.error: Exception | None = None
        self.hang = threading.Event()  # set: publish blocks until `release` is set
        self.release = threading.Event()
        self.closed = False
        self._lock = threading.Lock()

    def publish(self, key: bytes, value: bytes, timeout_s: float) -> None:
        if self.hang.is_set():
            self.release.wait(10)
        if self.error is not None:
            raise self.error
        event = json.loads(value)
        with self._lock:
            self.sent.append((key, event))
            self.decisions.log.append(f"publish {event['withdrawal_id']}")
        for reply in self.answer(event):
            self.decisions.emit(reply)

    def close(self, timeout_s: float) -> None:
        self.closed = True

    def published(self, wid: str) -> int:
        with self._lock:
            return sum(1 for _, event in self.sent if event["withdrawal_id"] == wid)


@pytest.fixture
def kafka() -> tuple[FakeWithdrawals, FakeDecisions]:
    decisions = FakeDecisions()
    return FakeWithdrawals(decisions), decisions


@pytest.fixture
def client(kafka: tuple[FakeWithdrawals, FakeDecisions]) -> Iterator[WalletClient]:
    sink, source = kafka
    with WalletClient(
        "127.0.0.1:1", connect_withdrawals=lambda: sink, connect_decisions=lambda: source
    ) as wallet:
        yield wallet


def timed(fn: Callable[[], ClientVerdict]) -> tuple[ClientVerdict, float]:
    started = time.monotonic()
    result = fn()
    return result, time.monotonic() - started


# --------------------------------------------------------------------------- verdicts


def test_the_detectors_verdict_comes_back_within_the_deadline(
    client: WalletClient, kafka: tuple[FakeWithdrawals, FakeDecisions]
) -> None:
    sink, _ = kafka
    event = withdrawal()
    sink.answer = lambda e: [verdict_doc(e, "delay")]

    result, elapsed = timed(lambda: client.decide(event, DEADLINE_S))

    assert result.source == "detector" and not result.fail_safe
    assert (result.withdrawal_id, result.verdict, result.score) == ("w-1", "delay", 0.42)
    assert result.reasons == (("new_destination", "destination never used"),)
    assert result.hold_seconds == 3600 and result.model_version == "iforest-test"
    assert result.document is not None and json.loads(result.document)["verdict"] == "delay"
    assert elapsed < DEADLINE_S
    key, sent = sink.sent[0]
    assert key == b"acct-1" and sent == event  # keyed by account_id, the event untouched


def test_the_account_partition_is_watched_from_its_end_before_publishing(
    client: WalletClient, kafka: tuple[FakeWithdrawals, FakeDecisions]
) -> None:
    _, source = kafka
    accounts = [f"acct-{i}" for i in range(12)]
    for i, account in enumerate(accounts):
        assert client.decide(withdrawal(f"w-{i}", account), DEADLINE_S).verdict == "allow"

    expected = {decisions_partition(a, PARTITIONS) for a in accounts}
    assert sorted(source.watched) == sorted(expected)  # only those partitions, each once
    first = {p: source.log.index(f"watch {p}") for p in expected}
    for i, account in enumerate(accounts):
        partition = decisions_partition(account, PARTITIONS)
        assert first[partition] < source.log.index(f"publish w-{i}")


def test_the_decisions_partition_is_murmur2_of_the_account_like_the_java_client() -> None:
    # Vectors of Apache Kafka's own UtilsTest.testMurmur2 (org.apache.kafka.common.utils).
    java = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    for key, signed in java.items():
        for n in (1, 3, 4, 12, 50):
            assert murmur2_partition(key, n) == (signed & 0x7FFFFFFF) % n  # Utils.toPositive
    assert decisions_partition("21", 12) == murmur2_partition(b"21", 12)


# --------------------------------------------------------------------------- fail safe


def test_no_verdict_by_the_deadline_is_a_delay_never_an_allow(
    client: WalletClient, kafka: tuple[FakeWithdrawals, FakeDecisions]
) -> None:
    sink, _ = kafka
    sink.answer = lambda e: []  # the worker is down: nothing ever answers

    result, elapsed = timed(lambda: client.decide(withdrawal(), SHORT_S))

    assert (result.verdict, result.source, result.reason) == ("delay", "client", CLIENT_TIMEOUT)
    assert result.fail_safe and result.score is None
    assert SHORT_S <= elapsed < SHORT_S + SLACK_S
    assert sink.published("w-1") == 1


def test_a_failed_publish_is_a_delay_with_client_error(
    client: WalletClient, kafka: tuple[FakeWithdrawals, FakeDecisions]
) -> None:
    sink, _ = kafka
    sink.error = RuntimeError("NotEnoughReplicas")

    result = client.decide(withdrawal(), DEADLINE_S)

    assert (result.verdict, result.reason) == ("delay", CLIENT_ERROR)
    assert "NotEnoughReplicas" in result.detail


def test_a_publish_that_hangs_returns_delay_at_the_deadline(
    client: WalletClient, kafka: tuple[FakeWithdrawals, FakeDecisions]
) -> None:
    sink, _ = kafka
    sink.hang.set()
    try:
        result, elapsed = timed(lambda: client.decide(withdrawal(), SHORT_S))
    finally:
        sink.release.set()

    assert (result.verdict, result.reason) == ("delay", CLIENT_TIMEOUT)
    assert elapsed < SHORT_S + SLACK_S


def test_an_unreachable_kafka_is_a_delay_and_the_client_keeps_retrying(
    kafka: tuple[FakeWithdrawals, FakeDecisions],
) -> None:
    sink, source = kafka
    attempts: list[float] = []

    def connect() -> FakeDecisions:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise ConnectionError("cannot connect to Kafka at 127.0.0.1:1")
        return source

    with WalletClient(
        "127.0.0.1:1",
        connect_withdrawals=lambda: sink,
        connect_decisions=connect,
        reconnect_s=0.2,
    ) as wallet:
        down = wallet.decide(withdrawal("w-down"), 0.1)
        assert (down.verdict, down.reason) == ("delay", CLIENT_ERROR)
        assert "cannot connect to Kafka" in down.detail
        up = wallet.decide(withdrawal("w-up"), 3.0)  # the third attempt connects
        assert (up.verdict, up.source) == ("allow", "detector")
    assert len(attempts) == 3 and sink.closed and source.closed


def test_a_missing_decisions_topic_is_a_delay_with_client_error(
    kafka: tuple[FakeWithdrawals, FakeDecisions],
) -> None:
    sink, _ = kafka
    with WalletClient(
        "127.0.0.1:1",
        connect_withdrawals=lambda: sink,
        connect_decisions=lambda: FakeDecisions(partitions=0),
    ) as wallet:
        result = wallet.decide(withdrawal(), SHORT_S)
    assert (result.verdict, result.reason) == ("delay", CLIENT_ERROR)
    assert "decisions topic does not exist" in result.detail
    assert sink.sent == []


def test_a_reader_that_cannot_watch_the_partition_is_a_delay(
    kafka: tuple[FakeWithdrawals, FakeDecisions],
) -> None:
    sink, source = kafka

    def broken(partition: int) -> None:
        raise OSError("broker went away")

    source.start_at_end = broken  # type: ignore[method-assign]
    with WalletClient(
        "127.0.0.1:1", connect_withdrawals=lambda: sink, connect_decisions=lambda: source
    ) as wallet:
        result = wallet.decide(withdrawal(), DEADLINE_S)
    assert (result.verdict, result.reason) == ("delay", CLIENT_ERROR)
    assert "broker went away" in result.detail
    assert sink.sent == []  # never publish what could not be watched for


@pytest.mark.parametrize(
    ("broken", "why"),
    [
        ({"verdict": "maybe"}, "unknown verdict"),
        ({"account_id": "acct-other"}, "for account"),
        ({"schema_version": 2}, "schema_version"),
        ({"score": "high"}, "score"),
        ({"score": None}, "score"),
        ({"reasons": "none"}, "reasons"),
        ({"reasons": [{"detail": "no code"}]}, "reason"),
        ({"hold_seconds": "1h"}, "hold_seconds"),
    ],
)
def test_a_malformed_allow_for_the_withdrawal_is_a_delay(
    broken: dict[str, Any],
    why: str,
    client: WalletClient,
    kafka: tuple[FakeWithdrawals, FakeDecisions],
) -> None:
    sink, _ = kafka
    account = "acct-1"
    # The bad document must land where the client reads: the withdrawal's account partition.
    done = threading.Event()

    def answer(event: dict[str, Any]) -> list[dict[str, Any] | bytes]:
        doc = verdict_doc(event, "allow")
        doc.update(broken)
        sink.decisions.emit(
            json.dumps(doc).encode(), partition=decisions_partition(account, PARTITIONS)
        )
        done.set()
        return []

    sink.answer = answer
    result = client.decide(withdrawal(account=account), DEADLINE_S)

    assert done.is_set()
    assert (result.verdict, result.reason) == ("delay", CLIENT_ERROR)
    assert why in result.detail


def test_other_verdicts_and_garbage_on_the_partition_are_ignored(
    client: WalletClient, kafka: tuple[FakeWithdrawals, FakeDecisions]
) -> None:
    sink, _ = kafka
    mine = withdrawal("w-mine")
    partition = decisions_partition("acct-1", PARTITIONS)

    def answer(event: dict[str, Any]) -> list[dict[str, Any] | bytes]:
        for junk in (b"\xff\xfe", b"not json", b"[1, 2]", b'{"withdrawal_id": 7}', b"{}"):
            sink.decisions.emit(junk, partition=partition)
        other = verdict_doc(withdrawal("w-other"), "allow")
        sink.decisions.emit(json.dumps(other).encode(), partition=partition)
        return [verdict_doc(event, "refuse")]

    sink.answer = answer
    result = client.decide(mine, DEADLINE_S)
    assert (result.withdrawal_id, result.verdict) == ("w-mine", "refuse")


_VALID_FIELDS = verdict_doc(withdrawal(), "allow")
_FIELD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["allow", "delay", "refuse", "ALLOW", "", "acct-1", "acct-2"]),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    changes=st.dictionaries(st.sampled_from(sorted(_VALID_FIELDS)), _FIELD_VALUES, max_size=3),
    dropped=st.sets(st.sampled_from(sorted(_VALID_FIELDS)), max_size=2),
)
def test_only_a_well_formed_allow_of_the_detector_ever_allows(
    changes: dict[str, Any], dropped: set[str]
) -> None:
    doc = {k: v for k, v in {**_VALID_FIELDS, **changes}.items() if k not in dropped}
    if doc.get("withdrawal_id") != "w-1":
        return  # not about our withdrawal at all: it would be ignored (covered above)
    decisions = FakeDecisions()
    sink = FakeWithdrawals(decisions, answer=lambda e: [])

    def answer(event: dict[str, Any]) -> list[dict[str, Any] | bytes]:
        decisions.emit(
            json.dumps(doc).encode(), partition=decisions_partition("acct-1", PARTITIONS)
        )
        return []

    sink.answer = answer
    with WalletClient(
        "127.0.0.1:1", connect_withdrawals=lambda: sink, connect_decisions=lambda: decisions
    ) as wallet:
        result = wallet.decide(withdrawal(), SHORT_S)
    well_formed = (
        doc.get("account_id") == "acct-1"
        and doc.get("schema_version") == 1
        and type(doc.get("score")) in (int, float)
        and 0.0 <= doc["score"] <= 1.0  # also excludes NaN and infinities
        and isinstance(doc.get("reasons", []), list)
        and doc.get("verdict") in ("allow", "delay", "refuse")
    )
    if result.verdict == "allow":
        assert result.source == "detector" and well_formed and doc["verdict"] == "allow"
    if not well_formed:
        assert (result.verdict, result.source) == ("delay", "client")


# --------------------------------------------------------------------------- dedupe


def test_a_decided_withdrawal_is_answered_again_without_publishing(
    client: WalletClient, kafka: tuple[FakeWithdrawals, FakeDecisions]
) -> None:
    sink, _ = kafka
    event = withdrawal()
    first = client.decide(event, DEADLINE_S)
    reordered = dict(reversed(list(event.items())))  # same withdrawal, other key order
    second = client.decide(reordered, DEADLINE_S)

    assert second is first
    assert sink.published("w-1") == 1


def test_duplicate_verdict_messages_are_ignored_and_the_first_wins(
    client: WalletClient, kafka: tuple[FakeWithdrawals, FakeDecisions]
) -> None:
    sink, _ = kafka
    # At-least-once: a redelivered withdrawal may be decided twice. By contract the copies
    # are identical; the client takes the first even if they were not.
    sink.answer = lambda e: [verdict_doc(e, "refuse"), verdict_doc(e, "allow")]

    first = client.decide(withdrawal(), DEADLINE_S)
    time.sleep(0.2)  # let the reader see the second message
    again = client.decide(withdrawal(), DEADLINE_S)

    assert first.verdict == "refuse" and again is first


def test_a_late_verdict_is_kept_and_the_withdrawal_is_not_published_twice(
    client: WalletClient, kafka: tuple[FakeWithdrawals, FakeDecisions]
) -> None:
    sink, source = kafka
    late: list[dict[str, Any]] = []
    sink.answer = lambda e: late.append(e) or []  # type: ignore[func-returns-value]

    first = client.decide(withdrawal(), SHORT_S)
    assert (first.verdict, first.reason) == ("delay", CLIENT_TIMEOUT)
    source.emit(verdict_doc(late[0], "allow"))  # the worker catches up
    second = client.decide(withdrawal(), DEADLINE_S)

    assert (second.verdict, second.source) == ("allow", "detector")
    assert sink.published("w-1") == 1


def test_a_withdrawal_whose_publish_failed_is_published_again(
    client: WalletClient, kafka: tuple[FakeWithdrawals, FakeDecisions]
) -> None:
    sink, _ = kafka
    sink.error = ConnectionError("broker down")
    assert client.decide(withdrawal(), DEADLINE_S).reason == CLIENT_ERROR
    sink.error = None
    result = client.decide(withdrawal(), DEADLINE_S)
    assert (result.verdict, result.source) == ("allow", "detector")
    assert sink.published("w-1") == 1  # the failed attempt never reached the topic


def test_the_verdict_cache_is_bounded(kafka: tuple[FakeWithdrawals, FakeDecisions]) -> None:
    sink, source = kafka
    with WalletClient(
        "127.0.0.1:1",
        cache_size=2,
        connect_withdrawals=lambda: sink,
        connect_decisions=lambda: source,
    ) as wallet:
        for wid in ("w-1", "w-2", "w-3"):
            wallet.decide(withdrawal(wid), DEADLINE_S)
        wallet.decide(withdrawal("w-3"), DEADLINE_S)  # remembered
        wallet.decide(withdrawal("w-1"), DEADLINE_S)  # forgotten: asked again
    assert [sink.published(w) for w in ("w-1", "w-2", "w-3")] == [2, 1, 1]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("event", "code"),
    [
        ({k: v for k, v in withdrawal().items() if k != "destination"}, "missing_field"),
        (withdrawal(amount="-1"), "bad_amount"),
        (withdrawal(amount=float("nan")), "invalid_json"),
        (withdrawal(amount=Decimal("1.5")), "invalid_json"),
        (withdrawal(requested_at="yesterday"), "bad_timestamp"),
        (withdrawal(account_id=""), "bad_account_id"),
        (withdrawal(metadata={"note": "\ud800"}), "invalid_unicode"),
        (withdrawal(metadata={"blob": "x" * 70_000}), "too_large"),
        (withdrawal(metadata=[1]), "bad_metadata"),
        (["not", "a", "mapping"], "not_an_object"),
    ],
)
def test_an_invalid_withdrawal_is_refused_before_anything_is_sent(
    event: Any, code: str, client: WalletClient, kafka: tuple[FakeWithdrawals, FakeDecisions]
) -> None:
    sink, _ = kafka
    with pytest.raises(InvalidEvent) as info:
        client.decide(event, DEADLINE_S)
    assert info.value.code == code
    assert sink.sent == []


def test_reusing_a_withdrawal_id_for_another_withdrawal_is_refused(
    client: WalletClient, kafka: tuple[FakeWithdrawals, FakeDecisions]
) -> None:
    sink, _ = kafka
    assert client.decide(withdrawal(amount="0.5"), DEADLINE_S).verdict == "allow"
    with pytest.raises(InvalidEvent) as info:
        client.decide(withdrawal(amount="500"), DEADLINE_S)
    assert info.value.code == "withdrawal_id_reused"
    assert sink.published("w-1") == 1


@pytest.mark.parametrize("deadline", [0, -1.0, float("nan"), float("inf")])
def test_a_deadline_that_is_not_a_positive_number_is_refused(
    deadline: float, client: WalletClient
) -> None:
    with pytest.raises(ValueError, match="deadline_s"):
        client.decide(withdrawal(), deadline)


# --------------------------------------------------------------------------- threads


def test_one_client_serves_many_threads(
    client: WalletClient, kafka: tuple[FakeWithdrawals, FakeDecisions]
) -> None:
    sink, _ = kafka
    sink.answer = lambda e: [verdict_doc(e, "refuse" if e["account_id"].endswith("7") else "allow")]
    results: dict[str, ClientVerdict] = {}
    disagreements: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(10):
            wid = f"w-{(n * 10 + i) % 40}"  # every id asked by two threads
            account = f"acct-{(n * 10 + i) % 40}"
            result = client.decide(withdrawal(wid, account), DEADLINE_S)
            with lock:
                if results.setdefault(wid, result) != result:
                    disagreements.append(wid)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(results) == 40 and disagreements == []
    assert all(r.source == "detector" for r in results.values())
    assert {w: r.verdict for w, r in results.items() if r.verdict == "refuse"} == {
        f"w-{i}": "refuse" for i in range(40) if str(i).endswith("7")
    }
    assert all(sink.published(f"w-{i}") == 1 for i in range(40))


def test_threads_that_need_the_same_partition_share_one_watch_request(
    kafka: tuple[FakeWithdrawals, FakeDecisions],
) -> None:
    sink, source = kafka
    real_start = source.start_at_end

    def slow_start(partition: int) -> None:  # a slow ListOffsets: requests pile up meanwhile
        time.sleep(0.2)
        real_start(partition)

    source.start_at_end = slow_start  # type: ignore[method-assign]
    accounts = [f"acct-{i}" for i in range(40)]
    target = decisions_partition(accounts[0], PARTITIONS)
    same = [a for a in accounts if decisions_partition(a, PARTITIONS) == target][:6]
    with WalletClient(
        "127.0.0.1:1", connect_withdrawals=lambda: sink, connect_decisions=lambda: source
    ) as wallet:
        results: list[ClientVerdict] = []
        threads = [
            threading.Thread(
                target=lambda a=account: results.append(wallet.decide(withdrawal(a, a), 5.0))
            )
            for account in same
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert len(same) >= 3 and [r.source for r in results] == ["detector"] * len(same)
    assert source.watched == [target]


def test_close_turns_waiting_and_later_decides_into_delay(
    kafka: tuple[FakeWithdrawals, FakeDecisions],
) -> None:
    sink, source = kafka
    sink.answer = lambda e: []
    wallet = WalletClient(
        "127.0.0.1:1", connect_withdrawals=lambda: sink, connect_decisions=lambda: source
    )
    waiting: list[ClientVerdict] = []
    thread = threading.Thread(target=lambda: waiting.append(wallet.decide(withdrawal(), 10.0)))
    thread.start()
    deadline = time.monotonic() + 5
    while not sink.sent and time.monotonic() < deadline:
        time.sleep(0.01)

    started = time.monotonic()
    wallet.close()
    thread.join(5)
    after = wallet.decide(withdrawal("w-2"), 1.0)

    assert time.monotonic() - started < 2.0  # the waiter did not sit out its 10 s
    assert [(w.verdict, w.reason) for w in waiting] == [("delay", CLIENT_ERROR)]
    assert (after.verdict, after.reason) == ("delay", CLIENT_ERROR)
    assert sink.closed and source.closed


def test_decide_async_gives_the_same_answers(
    client: WalletClient, kafka: tuple[FakeWithdrawals, FakeDecisions]
) -> None:
    sink, _ = kafka

    async def both() -> list[ClientVerdict]:
        return list(
            await asyncio.gather(
                client.decide_async(withdrawal("w-a", "acct-a"), DEADLINE_S),
                client.decide_async(withdrawal("w-b", "acct-b"), DEADLINE_S),
            )
        )

    results = asyncio.run(both())
    assert [(r.withdrawal_id, r.verdict) for r in results] == [("w-a", "allow"), ("w-b", "allow")]
    sink.answer = lambda e: []
    late = asyncio.run(client.decide_async(withdrawal("w-c"), SHORT_S))
    assert (late.verdict, late.reason) == ("delay", CLIENT_TIMEOUT)
