"""Every input ends as a verdict or a dead letter: never a crash, never a stall.

Through the real agents (``test_context``, memory store, injected send): oversize values,
invalid Unicode, keyless records, a bug on one record, a scoring failure, and arbitrary
bytes from hypothesis. Plus the dead-letter builder, agent-death liveness and the log
rate limits on their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_agents import NOW, WITHDRAWAL, Sent, run_with_app

from detector.errors import InvalidEvent
from detector.stream.app import DetectorApp
from detector.stream.dlq import DLQ_MAX_KEY_BYTES, DLQ_MAX_VALUE_BYTES, dead_letter_record
from detector.stream.health import Health
from detector.stream.logs import RateLimitedLog, RateLimitFilter


def _doc(**changes: Any) -> bytes:
    return json.dumps({**WITHDRAWAL, **changes}).encode()


async def _through_accounts(
    detector: DetectorApp, records: list[tuple[bytes | None, bytes]]
) -> None:
    async with detector.accounts_agent.test_context() as agent:
        for key, value in records:
            await agent.put(value, key=key)
        await asyncio.sleep(0.1)


def _codes(sent: Sent) -> list[str]:
    return [dict(call["headers"])["dlq.code"].decode() for call in sent.calls]


def test_a_megabyte_value_is_dead_lettered_truncated_with_its_size_and_hash(tmp_path: Any) -> None:
    big = b'{"withdrawal_id": "' + b"x" * (1024 * 1024) + b'"}'

    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        await _through_accounts(detector, [(b"acct-1", big), (b"acct-1", _doc())])
        (dlq,) = sent["dlq"].calls
        headers = dict(dlq["headers"])
        assert headers["dlq.code"] == b"too_large"
        assert len(dlq["value"]) == DLQ_MAX_VALUE_BYTES and big.startswith(dlq["value"])
        assert headers["dlq.value_bytes"] == str(len(big)).encode()
        assert headers["dlq.value_sha256"] == hashlib.sha256(big).hexdigest().encode()
        assert len(sent["by_destination"].calls) == 1  # the next record still flows

    run_with_app(tmp_path, body)


@pytest.mark.parametrize(
    ("key", "value", "code"),
    [
        (b"acct-1", _doc(destination="bc1q\ud800"), "invalid_unicode"),
        (b"acct-1", _doc(amount_usd=None)[:-1] + b', "n": ' + b"7" * 5000 + b"}", "invalid_json"),
        (None, _doc(), "key_missing"),
        (b"acct-1", _doc(requested_at="9999-12-31T23:59:59Z"), "future_timestamp"),
        (b"acct-1", _doc(requested_at="0001-01-01T00:00:00Z"), "stale_timestamp"),
    ],
)
def test_hostile_records_are_dead_lettered_and_the_stream_goes_on(
    tmp_path: Any, key: bytes | None, value: bytes, code: str
) -> None:
    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        await _through_accounts(detector, [(key, value), (b"acct-1", _doc())])
        assert _codes(sent["dlq"]) == [code]
        assert sent["dlq"].calls[0]["value"] == value  # the original bytes, untouched
        assert len(sent["by_destination"].calls) == 1

    run_with_app(tmp_path, body)


def test_a_bug_on_one_record_costs_that_record_only(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from detector import pipeline

    real = pipeline.account_step

    def buggy(state: Any, event: Any, *args: Any) -> Any:
        if event.destination == "boom":
            raise ZeroDivisionError("a bug")
        return real(state, event, *args)

    monkeypatch.setattr(pipeline, "account_step", buggy)

    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        await _through_accounts(
            detector, [(b"acct-1", _doc(destination="boom")), (b"acct-1", _doc())]
        )
        assert _codes(sent["dlq"]) == ["internal_error"]
        reason = dict(sent["dlq"].calls[0]["headers"])["dlq.reason"].decode()
        assert "ZeroDivisionError" in reason
        assert len(sent["by_destination"].calls) == 1
        ok, _ = detector.health.liveness()
        assert ok

    run_with_app(tmp_path, body)


def test_a_scoring_failure_isolates_the_one_bad_item(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from detector import pipeline

    real = pipeline.make_verdict

    def buggy(event: Any, *args: Any, **kwargs: Any) -> Any:
        if event.withdrawal_id == "w-bad":
            raise ValueError("cannot build this verdict")
        return real(event, *args, **kwargs)

    monkeypatch.setattr(pipeline, "make_verdict", buggy)

    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        from test_agents import _repartitioned

        async with detector.decide_agent.test_context() as agent:
            for wid in ("w-1", "w-bad", "w-3"):
                await agent.put(
                    _repartitioned({**WITHDRAWAL, "withdrawal_id": wid}), key=b"bc1qattacker"
                )
            await asyncio.sleep(0.1)
        decided = [json.loads(c["value"])["withdrawal_id"] for c in sent["decisions"].calls]
        assert decided == ["w-1", "w-3"]
        assert _codes(sent["dlq"]) == ["internal_error"]

    run_with_app(tmp_path, body)


# Arbitrary input through both agents -------------------------------------------------

_values = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda changes: json.dumps({**WITHDRAWAL, **changes}).encode("utf-8", "surrogatepass"),
        st.dictionaries(
            st.sampled_from(sorted(WITHDRAWAL)),
            st.one_of(
                st.none(),
                st.integers(min_value=-(10**50), max_value=10**50),
                st.floats(),
                st.text(max_size=20),
                st.lists(st.integers(), max_size=3),
            ),
            max_size=3,
        ),
    ),
)
_keys = st.one_of(st.none(), st.just(b"acct-1"), st.binary(max_size=20))


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(_keys, _values), min_size=1, max_size=12))
def test_arbitrary_records_each_end_as_a_verdict_or_a_dead_letter(
    tmp_path_factory: pytest.TempPathFactory, records: list[tuple[bytes | None, bytes]]
) -> None:
    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        await _through_accounts(detector, records)
        forwarded = sent["by_destination"].calls
        items = sum(len(json.loads(call["value"])["items"]) for call in forwarded)
        assert items + len(sent["dlq"].calls) == len(records)
        async with detector.decide_agent.test_context() as agent:
            for call in forwarded:
                await agent.put(call["value"], key=call["key"])
            await asyncio.sleep(0.1)
        assert len(sent["decisions"].calls) == items
        for call in sent["decisions"].calls:
            json.loads(call["value"])  # plain, valid JSON
        for call in sent["dlq"].calls:
            assert dict(call["headers"])["dlq.code"]
        assert detector.health.liveness()[0]

    run_with_app(tmp_path_factory.mktemp("arbitrary"), body)


# The parts on their own ----------------------------------------------------------------


@given(st.one_of(st.none(), st.binary(max_size=64)), st.binary(max_size=2048))
def test_the_dead_letter_builder_takes_any_bytes(key: bytes | None, value: bytes) -> None:
    out_key, out_value, headers = dead_letter_record(
        key,
        value,
        InvalidEvent("x", "why \ud800"),
        topic="t",
        partition=0,
        offset=1,
        at=NOW,
    )
    assert (out_key, out_value) == (key, value)
    assert all(isinstance(v, bytes) for _, v in headers)


def test_the_dead_letter_builder_bounds_keys_too() -> None:
    key = b"k" * (DLQ_MAX_KEY_BYTES * 3)
    out_key, _, headers = dead_letter_record(
        key, b"v", InvalidEvent("x", "y"), topic="t", partition=0, offset=1, at=NOW
    )
    assert out_key == key[:DLQ_MAX_KEY_BYTES]
    assert dict(headers)["dlq.key_bytes"] == str(len(key)).encode()


def test_a_dead_agent_fails_liveness() -> None:
    health = Health(stuck_after_s=60.0)
    assert health.liveness()[0]
    health.agent_died("accounts", "UnicodeEncodeError: surrogates not allowed")
    ok, reason = health.liveness()
    assert not ok and "accounts" in reason and "UnicodeEncodeError" in reason


def test_an_agent_that_stops_on_an_exception_marks_the_worker_dead(tmp_path: Any) -> None:
    from detector.stream.app import _watched

    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        with pytest.raises(RuntimeError):
            async with _watched("decide", detector.health):
                raise RuntimeError("the loop broke")
        assert not detector.health.liveness()[0]

    run_with_app(tmp_path, body)


def test_the_filter_lets_a_few_of_each_kind_through_then_counts() -> None:
    now = [0.0]
    limit = RateLimitFilter(burst=3, window_s=60.0, clock=lambda: now[0])

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, msg, None, None)

    passed = sum(limit.filter(record("Unable connect to %s")) for _ in range(10_000))
    assert passed == 3
    assert limit.filter(record("another message"))
    now[0] = 61.0
    first = record("Unable connect to %s")
    assert limit.filter(first) and "9997 similar records suppressed" in str(first.msg)


def test_our_own_per_record_warnings_are_limited(caplog: pytest.LogCaptureFixture) -> None:
    log = RateLimitedLog(logging.getLogger("detector.test"), burst=2, window_s=60.0)
    with caplog.at_level(logging.WARNING, logger="detector.test"):
        for i in range(50):
            log.warning("record %d failed", i)
    assert len(caplog.records) == 2
