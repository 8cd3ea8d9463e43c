"""Agent tier: the Faust agents with ``test_context()`` and the memory store, no broker.

Each test builds a fresh app from settings (no module-level app to mutate) and captures
what the agents send to their output topics.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from kafka_io import DEFAULT_MODEL

from detector.config import Settings
from detector.features import ACCOUNT_STATE_VERSION, FeatureParams
from detector.model import Model
from detector.stream import compat
from detector.stream.app import DetectorApp, Record, create_app, topic_specs
from detector.stream.wire import PAYLOAD_VERSION, batch_records, encode_item


@functools.cache
def default_params() -> FeatureParams:
    """The feature scales of the model the test app serves."""
    return Model.load(DEFAULT_MODEL).params


TABLES = ("accounts", "destinations", "decided")

WITHDRAWAL = {
    "withdrawal_id": "w-1",
    "account_id": "acct-1",
    "asset": "BTC",
    "amount": "0.5",
    "amount_usd": 30000.0,
    "destination": "bc1qattacker",
    "requested_at": "2026-11-24T10:00:00Z",
    "metadata": {"channel": "api"},
}


# The worker's clock in these tests: an hour after WITHDRAWAL was requested.
NOW = 1795514400.0 + 3600.0


class Sent:
    """What was sent to one topic; answers each send like a delivered message."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, record: Record) -> asyncio.Future[None]:
        self.calls.append(
            {
                "key": record.key,
                "value": record.value,
                "headers": record.headers,
                "partition": record.partition,
            }
        )
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class FakeKafka:
    """The send function the app is built with (no Faust topic is patched): routes each
    record to the :class:`Sent` of its topic, by the names the tests use."""

    def __init__(self, settings: Settings) -> None:
        names = (
            "by_destination",
            "decisions",
            "dlq",
            "labels",
            "decisions_shadow",
            *(f"changelog:{t}" for t in TABLES),
        )
        self.sent = {name: Sent() for name in names}
        self._names = {
            settings.topic_by_destination: "by_destination",
            settings.topic_decisions: "decisions",
            settings.topic_dlq: "dlq",
            settings.topic_labels: "labels",
            settings.topic_decisions_shadow: "decisions_shadow",
            **{settings.changelog_topic(t): f"changelog:{t}" for t in TABLES},
        }
        self.order: list[str] = []  # the logical topic of every send, in order

    async def __call__(self, record: Record) -> asyncio.Future[None]:
        name = self._names[record.topic]
        self.order.append(name)
        return await self.sent[name](record)


def run_with_app(
    tmp_path: Path,
    body: Callable[[DetectorApp, dict[str, Sent]], Awaitable[None]],
    *,
    clock: Callable[[], float] = lambda: NOW,
    kafka_out: list[FakeKafka] | None = None,
    store: str | None = None,
    **overrides: Any,
) -> None:
    # Nothing listens on port 1: test_context() must never reach a broker (faust-streaming
    # has no memory transport; the tables use the memory store).
    settings = Settings(
        bootstrap_servers="127.0.0.1:1",
        data_dir=tmp_path,
        partitions=1,
        batch_within_ms=1.0,
        **overrides,
    )
    loop = asyncio.new_event_loop()  # Faust takes the current loop: give each test its own
    asyncio.set_event_loop(loop)
    kafka = FakeKafka(settings)
    if kafka_out is not None:
        kafka_out.append(kafka)
    detector = create_app(
        settings, model=Model.load(DEFAULT_MODEL), store=store, clock=clock, send=kafka
    )
    detector.app.finalize()
    detector.app.flow_control.resume()
    try:
        loop.run_until_complete(body(detector, kafka.sent))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)
        compat.close_unstarted_consumer(detector.app)


def test_valid_withdrawal_updates_the_account_table_and_is_repartitioned(tmp_path: Path) -> None:
    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        async with detector.accounts_agent.test_context() as agent:
            await agent.put(json.dumps(WITHDRAWAL).encode(), key=b"acct-1")
            await asyncio.sleep(0.05)
        (call,) = sent["by_destination"].calls
        assert call["partition"] == 0  # the destination's partition (one partition here)
        record = json.loads(call["value"])
        assert record["v"] == PAYLOAD_VERSION
        (payload,) = record["items"]
        assert payload["e"]["withdrawal_id"] == "w-1"
        assert payload["e"]["metadata"] == {"channel": "api"}  # passed through untouched
        assert payload["a"]["value"] == 30000.0  # the account features travel with the event
        state = detector.accounts.get("acct-1", 0)
        assert state["n"] == 1 and state["la"] == [pytest.approx(math.log(30000.0))]
        (changelog,) = sent["changelog:accounts"].calls  # the state, durable in Kafka
        assert changelog["key"] == b"acct-1" and json.loads(changelog["value"])["n"] == 1
        assert sent["dlq"].calls == []
        assert detector.metrics.withdrawals_consumed._value.get() == 1

    run_with_app(tmp_path, body)


@pytest.mark.parametrize(
    ("raw", "key", "code"),
    [
        (b"{oops", b"acct-1", "invalid_json"),
        (json.dumps({**WITHDRAWAL, "amount": "-3"}).encode(), b"acct-1", "bad_amount"),
        (json.dumps(WITHDRAWAL).encode(), b"acct-2", "key_mismatch"),
    ],
)
def test_invalid_input_goes_to_the_dlq_with_its_bytes_and_reason(
    tmp_path: Path, raw: bytes, key: bytes, code: str
) -> None:
    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        async with detector.accounts_agent.test_context() as agent:
            await agent.put(raw, key=key)
            await asyncio.sleep(0.05)
            # The agent survives bad data: the next valid event is processed.
            await agent.put(json.dumps(WITHDRAWAL).encode(), key=b"acct-1")
            await asyncio.sleep(0.05)
        (dlq,) = sent["dlq"].calls
        assert dlq["value"] == raw and dlq["key"] == key
        headers = dict(dlq["headers"])
        assert headers["dlq.code"] == code.encode()
        assert len(headers["dlq.reason"]) > 10
        assert len(sent["by_destination"].calls) == 1
        registry = detector.registry
        assert registry.get_sample_value("detector_dlq_records_total", {"reason": code}) == 1

    run_with_app(tmp_path, body)


def test_decide_agent_publishes_plain_json_verdicts(tmp_path: Path) -> None:
    from detector.events import validate_withdrawal
    from detector.features import account_step

    drain = {**WITHDRAWAL, "amount_usd": 250_000.0}
    _, acc = account_step(None, validate_withdrawal(drain), default_params())
    (payload,) = batch_records([encode_item(validate_withdrawal(drain), acc)])

    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        async with detector.decide_agent.test_context() as agent:
            await agent.put(payload, key=b"bc1qattacker")
            await asyncio.sleep(0.05)
        (call,) = sent["decisions"].calls
        assert call["key"] == b"acct-1"
        verdict = json.loads(call["value"])
        assert "__faust" not in verdict
        assert verdict["withdrawal_id"] == "w-1"
        assert verdict["verdict"] in {"delay", "refuse"}
        # $250,000 from a fresh account to a fresh address: the amount is what is named (by
        # the amount family, or the destination's "amount to a new destination").
        assert any("250,000" in r["detail"] for r in verdict["reasons"])
        assert detector.destinations.get("bc1qattacker", 0)["a"]  # fan-in state, address
        assert detector.verdicts.get("w-1") == call["value"].decode()  # on record
        registry = detector.registry
        assert (
            registry.get_sample_value("detector_verdicts_total", {"verdict": verdict["verdict"]})
            == 1
        )

    run_with_app(tmp_path, body)


def _account_features(doc: dict[str, Any]) -> Any:
    from detector.events import validate_withdrawal
    from detector.features import account_step

    return account_step(None, validate_withdrawal(doc), default_params())[1]


@pytest.mark.parametrize("version", ["v0-positional", "v1-single", "newer-with-extra-fields"])
def test_records_of_another_version_are_decided_not_dead_lettered(
    tmp_path: Path, version: str
) -> None:
    """A rolling deploy: stage 1 on one version, stage 2 on another, records in flight."""
    drain = {**WITHDRAWAL, "amount_usd": 250_000.0}
    acc = _account_features(drain)
    if version == "v0-positional":  # what the first release wrote: a list, with a field
        values = list(acc)  # (distinct destinations in 24 h) this version no longer has
        doc: dict[str, Any] = {"e": drain, "a": [*values[:13], 1, *values[13:]]}
    elif version == "v1-single":  # one withdrawal per record, features by name
        doc = {"v": 1, "e": drain, "a": acc.to_json()}
    else:  # a later release that added a feature and a payload field
        doc = {
            "v": PAYLOAD_VERSION + 1,
            "items": [{"e": drain, "a": {**acc.to_json(), "future_feature": 3.5}, "x": 1}],
            "more": True,
        }

    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        async with detector.decide_agent.test_context() as agent:
            await agent.put(json.dumps(doc).encode(), key=b"bc1qattacker")
            await asyncio.sleep(0.05)
        assert sent["dlq"].calls == []
        (call,) = sent["decisions"].calls
        verdict = json.loads(call["value"])
        assert verdict["withdrawal_id"] == "w-1" and verdict["verdict"] in {"delay", "refuse"}
        codes = [r["code"] for r in verdict["reasons"]]
        # The first release's features mean something else to this model: held, unscored.
        assert (codes == ["unscored"]) == (version == "v0-positional")

    run_with_app(tmp_path, body)


@pytest.mark.parametrize("schema", ["features-v4", "features-v99"])
def test_features_of_another_schema_are_held_unscored_not_scored_or_dead_lettered(
    tmp_path: Path, schema: str
) -> None:
    tiny = {**WITHDRAWAL, "amount_usd": 1.0}  # would be allowed if its features were read
    item = {"e": tiny, "a": _account_features(tiny).to_json(), "s": schema}
    record = json.dumps({"v": PAYLOAD_VERSION, "items": [item]}).encode()

    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        async with detector.decide_agent.test_context() as agent:
            await agent.put(record, key=b"bc1qattacker")
            await asyncio.sleep(0.05)
        assert sent["dlq"].calls == []
        (call,) = sent["decisions"].calls
        verdict = json.loads(call["value"])
        assert verdict["verdict"] == "delay" and verdict["hold_seconds"] > 0
        assert [r["code"] for r in verdict["reasons"]] == ["unscored"]
        delay = Model.load(DEFAULT_MODEL).policy.delay_threshold
        assert verdict["score"] == round(delay, 6)

    run_with_app(tmp_path, body)


def test_an_account_state_of_the_first_release_is_upgraded_in_place(tmp_path: Path) -> None:
    old_state = {  # no "v", a "dst" list, no "near": how the first release stored accounts
        "ts": [1.79e9],
        "usd": [120.0],
        "dst": ["abc"],
        "la": [4.78],
        "known": {"abc": 1.79e9},
        "n": 1,
        "first": 1.79e9,
        "last": 1.79e9,
    }

    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        # Into the table's store, as Faust's recovery from the changelog would put it.
        detector.accounts._access.put(b"acct-1", json.dumps(old_state).encode(), 0)
        async with detector.accounts_agent.test_context() as agent:
            await agent.put(json.dumps(WITHDRAWAL).encode(), key=b"acct-1")
            await asyncio.sleep(0.05)
        assert sent["dlq"].calls == []
        state = detector.accounts.get("acct-1", 0)
        assert state["v"] == ACCOUNT_STATE_VERSION and "dst" not in state
        assert state["n"] == 2 and state["la"][0] == 4.78  # its history is kept

    run_with_app(tmp_path, body)


def test_verdict_and_dlq_producer_uses_acks_all_and_idempotence(tmp_path: Path) -> None:
    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        producer = detector.app.producer  # built, not started: no broker needed
        options = {**producer._settings_default(), **producer._settings_extra()}
        assert options["acks"] == "all"
        assert options["enable_idempotence"] is True
        assert detector.app.conf.producer_acks == -1

    run_with_app(tmp_path, body)


class FlakySend(Sent):
    """Fails the first ``failures`` sends (as a broker refusal would), then delivers."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def __call__(self, record: Record) -> asyncio.Future[None]:
        self.calls.append({"key": record.key, "value": record.value, "headers": record.headers})
        outcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if len(self.calls) <= self.failures:
            outcome.set_exception(RuntimeError("MessageSizeTooLarge"))
        else:
            outcome.set_result(None)
        return outcome


def _repartitioned(*withdrawals: dict[str, Any]) -> bytes:
    """What stage 1 forwards for these withdrawals (each of a fresh account)."""
    from detector.events import validate_withdrawal
    from detector.features import account_step

    items = []
    for doc in withdrawals:
        event = validate_withdrawal(doc)
        items.append(encode_item(event, account_step(None, event, default_params())[1]))
    (record,) = batch_records(items)
    return record


@pytest.fixture
def conductor_refs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give each test message the reference the consumer's conductor gives a real one.

    (``agent.put()`` bypasses the conductor, so its messages start with no reference.)
    """
    import faust.channels

    original = faust.channels.Channel.put

    async def put(self: Any, value: Any) -> None:
        value.message.incref()
        await original(self, value)

    monkeypatch.setattr(faust.channels.Channel, "put", put)


@pytest.mark.usefixtures("conductor_refs")
def test_failed_verdict_sends_are_retried_and_the_event_acked_only_after(tmp_path: Path) -> None:
    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        flaky = FlakySend(failures=2)
        sent["decisions"] = flaky
        async with detector.decide_agent.test_context() as agent:
            event = await agent.put(_repartitioned(WITHDRAWAL), key=b"bc1qattacker")
            await asyncio.sleep(0.6)  # two backoffs: 0.1 s + 0.2 s
            assert len(flaky.calls) == 3
            assert all(c["value"] == flaky.calls[0]["value"] for c in flaky.calls)
            assert event.message.acked  # after delivery, and only then
        errors = detector.registry.get_sample_value(
            "detector_kafka_send_errors_total", {"topic": detector.settings.topic_decisions}
        )
        assert errors == 2

    run_with_app(tmp_path, body)


@pytest.mark.usefixtures("conductor_refs")
def test_a_batch_whose_verdicts_never_get_through_is_never_acked(tmp_path: Path) -> None:
    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        broken = FlakySend(failures=10**9)
        sent["decisions"] = broken
        async with detector.decide_agent.test_context() as agent:
            event = await agent.put(_repartitioned(WITHDRAWAL), key=b"bc1qattacker")
            await asyncio.sleep(0.4)
            assert len(broken.calls) >= 2  # still retrying
            assert not event.message.acked
        # The agent was stopped mid-retry: take_events acked its batch on the way out, but
        # our reference keeps the message un-acked, so its offset is never committed.
        assert not event.message.acked
        assert event.message.refcount >= 1

    run_with_app(tmp_path, body)


def test_changelogs_are_compacted_soon_enough_to_keep_recovery_short() -> None:
    settings = Settings(partitions=3)
    specs = {spec.name: spec for spec in topic_specs(settings)}
    for table in ("accounts", "destinations", "decided"):
        config = specs[settings.changelog_topic(table)].config
        assert config["cleanup.policy"] == "compact"
        assert int(config["segment.ms"]) <= 3600 * 1000  # not Kafka's 7 days
        assert float(config["min.cleanable.dirty.ratio"]) <= 0.2
