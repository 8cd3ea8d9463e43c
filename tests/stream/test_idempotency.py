"""Processing is idempotent by withdrawal_id, through the real agents.

A redelivered or repeated withdrawal changes no state a second time and is published the
byte-identical verdict (``decided_at`` included); each batch's verdicts are on record in
``decided`` before anything that depends on them is sent; idle state and old dedupe entries
expire as tombstones.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from test_agents import NOW, WITHDRAWAL, FakeKafka, Sent, _repartitioned, run_with_app

from detector.stream.app import DetectorApp


async def _accounts(detector: DetectorApp, *docs: dict[str, Any]) -> None:
    """``docs`` through the account stage, queued at once: one micro-batch."""
    async with detector.accounts_agent.test_context() as agent:
        for doc in docs:
            await agent.put(json.dumps(doc).encode(), key=doc["account_id"].encode(), wait=False)
        await asyncio.sleep(0.1)


def test_a_repeated_withdrawal_does_not_move_the_account_history_twice(tmp_path: Path) -> None:
    later = {**WITHDRAWAL, "withdrawal_id": "w-2", "requested_at": "2026-11-24T10:05:00Z"}

    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        await _accounts(detector, WITHDRAWAL, later, WITHDRAWAL)  # w-1 comes back
        state = detector.accounts.get("acct-1", 0)
        assert state["n"] == 2 and len(state["la"]) == 2
        items = [
            item
            for call in sent["by_destination"].calls
            for item in json.loads(call["value"])["items"]
        ]
        first, _, again = items
        assert again == first  # the same features again, not "second withdrawal in 5 min"

    run_with_app(tmp_path, body)


def test_a_repeat_of_an_earlier_batch_goes_as_a_repeat_and_gets_the_verdict_on_record(
    tmp_path: Path,
) -> None:
    """The worker keeps an earlier batch's dedupe entries as [stamp, value] only: a repeat
    of one is forwarded without features (schema ``repeat``), and stage 2 publishes the
    verdict it has on record, byte for byte; the account's changelog value shrinks."""
    clock = [NOW]
    later = {**WITHDRAWAL, "withdrawal_id": "w-2", "requested_at": "2026-11-24T10:05:00Z"}

    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        for doc in (WITHDRAWAL, later, WITHDRAWAL):  # one batch each; w-1 comes back
            await _accounts(detector, doc)
            clock[0] += 1.0
        seen = detector.accounts.get("acct-1", 0)["seen"]
        assert len(seen["w-1"]) == 2 and seen["w-1"][1] == float(WITHDRAWAL["amount_usd"])
        assert len(seen["w-2"]) > 2  # the newest batch keeps its features
        forwards = [call["value"] for call in sent["by_destination"].calls]
        first, _, again = (json.loads(value)["items"][0] for value in forwards)
        assert again["s"] == "repeat" and "a" not in again and again["e"] == first["e"]
        async with detector.decide_agent.test_context() as agent:
            for value in forwards:
                await agent.put(value, key=None)
                await asyncio.sleep(0.05)
        verdicts = [call["value"] for call in sent["decisions"].calls]
        assert len(verdicts) == 3 and verdicts[2] == verdicts[0]
        compact = [call["value"] for call in sent["changelog:accounts"].calls][-1]
        assert compact is not None and b'"w-1":[' in compact

    run_with_app(tmp_path, body, clock=lambda: clock[0])


@pytest.mark.parametrize("store", ["detector-memory://", "rocksdb://"])
def test_a_redelivered_withdrawal_gets_the_byte_identical_verdict(
    tmp_path: Path, store: str
) -> None:
    clock = [NOW]
    drain = {**WITHDRAWAL, "amount_usd": 250_000.0}

    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        async with detector.decide_agent.test_context() as agent:
            await agent.put(_repartitioned(drain), key=None)
            await asyncio.sleep(0.1)
            fan_in = detector.destinations.get("bc1qattacker", 0)
            before = json.dumps(fan_in, sort_keys=True)
            clock[0] += 90.0  # the redelivery comes later: decided_at must not change
            await agent.put(_repartitioned(drain), key=None)
            await asyncio.sleep(0.1)
        first, again = sent["decisions"].calls
        assert again["value"] == first["value"]
        assert json.loads(first["value"])["verdict"] in {"delay", "refuse"}
        assert json.dumps(detector.destinations.get("bc1qattacker", 0), sort_keys=True) == before
        assert detector.registry.get_sample_value("detector_duplicate_withdrawals_total") == 1

    run_with_app(tmp_path, body, clock=lambda: clock[0], store=store)


def test_verdicts_are_on_record_before_what_depends_on_them_is_sent(tmp_path: Path) -> None:
    kafka: list[FakeKafka] = []

    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        async with detector.decide_agent.test_context() as agent:
            await agent.put(
                _repartitioned(WITHDRAWAL, {**WITHDRAWAL, "withdrawal_id": "w-2"}), key=None
            )
            await asyncio.sleep(0.1)
        order = kafka[0].order
        last_decided = max(i for i, name in enumerate(order) if name == "changelog:decided")
        first_other = min(
            i for i, name in enumerate(order) if name in ("decisions", "changelog:destinations")
        )
        assert last_decided < first_other, order
        # One record holds the batch's verdicts (its partition's pack), each as published.
        (record,) = sent["changelog:decided"].calls
        packed = json.loads(record["value"])["w"]
        published = {
            json.loads(c["value"])["withdrawal_id"]: c["value"].decode()
            for c in sent["decisions"].calls
        }
        assert record["key"] == b"\x00w-1" and packed == published and len(packed) == 2

    run_with_app(tmp_path, body, kafka_out=kafka)


@pytest.mark.parametrize("store", ["detector-memory://", "rocksdb://"])
def test_old_dedupe_entries_expire_as_tombstones(tmp_path: Path, store: str) -> None:
    clock = [NOW]

    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        window = detector.settings.dedupe_window_s
        async with detector.decide_agent.test_context() as agent:
            await agent.put(_repartitioned(WITHDRAWAL), key=None)
            await asyncio.sleep(0.1)
            assert detector.verdicts.get("w-1") is not None
            clock[0] += window + 1
            await agent.put(_repartitioned({**WITHDRAWAL, "withdrawal_id": "w-9"}), key=None)
            await asyncio.sleep(0.1)
        assert detector.verdicts.get("w-1") is None
        tombstones = [c for c in sent["changelog:decided"].calls if c["value"] is None]
        assert [c["key"] for c in tombstones] == [b"\x00w-1"]  # w-1's pack

    run_with_app(tmp_path, body, clock=lambda: clock[0], store=store)


def test_idle_accounts_expire_against_the_partitions_event_time(tmp_path: Path) -> None:
    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        ttl_days = detector.settings.state_ttl_s / 86400
        later = {
            **WITHDRAWAL,
            "withdrawal_id": "w-late",
            "account_id": "acct-2",
            "requested_at": _days_after(WITHDRAWAL["requested_at"], ttl_days + 1),
        }
        await _accounts(detector, WITHDRAWAL)
        assert detector.accounts.get("acct-1", 0) is not None
        await _accounts(detector, later)
        assert detector.accounts.get("acct-1", 0) is None
        assert any(
            c["key"] == b"acct-1" and c["value"] is None for c in sent["changelog:accounts"].calls
        )

    # The worker's clock follows the late event (its age must pass the time checks).
    late_clock = NOW + (180 + 1) * 86400
    run_with_app(tmp_path, body, clock=lambda: late_clock, max_event_age_s=0.0)


def _days_after(stamp: str, days: float) -> str:
    from detector.events import format_rfc3339, parse_rfc3339

    return format_rfc3339(parse_rfc3339(stamp) + days * 86400)


def _hot_account(count: int, start: float = NOW) -> list[Any]:
    from detector.events import format_rfc3339, validate_withdrawal

    return [
        validate_withdrawal(
            {
                **WITHDRAWAL,
                "withdrawal_id": f"w-{start:.0f}-{i}",
                "requested_at": format_rfc3339(start + 30.0 * i),
                "destination": f"bc1qdest{i % 7}",
            }
        )
        for i in range(count)
    ]


def _feature_state() -> Any:
    from kafka_io import DEFAULT_MODEL

    from detector.model import Model
    from detector.pipeline import FeatureState

    return FeatureState(Model.load(DEFAULT_MODEL).params)


def test_a_redelivery_longer_than_the_dedupe_memory_moves_no_state() -> None:
    """A broker outage holds commits back: one hot account's redelivery exceeded MAX_SEEN
    (64) withdrawals, and re-applying the forgotten ones counted its history twice (104
    withdrawals in one chaos run, 186 verdicts then differed from replay). Records at or
    below the account's last applied offset are recognised without the ids."""
    from detector.pipeline import MAX_SEEN, REPEAT

    stages = _feature_state()
    events = _hot_account(3 * MAX_SEEN)
    first = []
    for start in range(0, len(events), 10):  # batches of 10, as the worker's
        stages.begin_batch()
        first += [stages.account_at(e, i) for i, e in enumerate(events) if start <= i < start + 10]
    before = _history(stages.accounts.get("acct-1"))
    again = []
    for start in range(0, len(events), 10):  # everything since offset 0 comes back
        stages.begin_batch()
        again += [stages.account_at(e, i) for i, e in enumerate(events) if start <= i < start + 10]
    assert _history(stages.accounts.get("acct-1")) == before
    assert stages.accounts.get("acct-1")["n"] == len(events)
    remembered = [i for i, acc in enumerate(again) if acc is not None]
    assert remembered == list(range(len(events) - MAX_SEEN, len(events)))
    # The last batch's are forwarded again with their features (it could have been half
    # sent); the earlier batches' as repeats without features (their verdicts are on record).
    last = len(events) - len(events) % 10 if len(events) % 10 else len(events) - 10
    assert all(again[i] == first[i] for i in remembered if i >= last)
    assert all(again[i] is REPEAT for i in remembered if i < last)


def _history(state: dict[str, Any]) -> str:
    """The account's state but the times its dedupe entries were last forwarded."""
    seen = {wid: entry[1:] for wid, entry in state["seen"].items()}
    return json.dumps({**state, "seen": seen}, sort_keys=True)


def test_a_withdrawal_forwarded_again_after_a_crash_stays_whole_until_that_batch_is_sent() -> None:
    """Crash during batch k: its withdrawals come back in batch k+1 and are forwarded again,
    and a new withdrawal of the account in k+1 must not compact them (a second crash would
    then send them as repeats of a verdict nobody recorded); from batch k+2 on they may."""
    from detector.pipeline import REPEAT

    stages = _feature_state()
    events = _hot_account(4)
    stages.begin_batch()
    first = [stages.account_at(e, i) for i, e in enumerate(events[:3])]  # batch k (crashed)
    stages.begin_batch()
    assert [stages.account_at(e, i) for i, e in enumerate(events[:3])] == first  # redelivered
    assert stages.account_at(events[3], 3) is not None  # new in batch k+1
    seen = stages.accounts.get("acct-1")["seen"]
    assert all(len(seen[e.withdrawal_id]) > 2 for e in events)
    stages.begin_batch()
    later = _hot_account(1, start=NOW + 3600.0)[0]
    assert stages.account_at(later, 4) is not None
    assert all(stages.account_at(e, i) is REPEAT for i, e in enumerate(events))


def test_a_batch_keeps_every_withdrawal_it_remembered_until_the_next_one() -> None:
    """Only the batch in flight at a crash can be half-sent: all its withdrawals of an
    account stay remembered (their repeats are forwarded again), however many."""
    from detector.pipeline import MAX_SEEN

    stages = _feature_state()
    events = _hot_account(2 * MAX_SEEN)
    stages.begin_batch()
    first = [stages.account_at(e, i) for i, e in enumerate(events)]
    assert len(stages.accounts.get("acct-1")["seen"]) == 2 * MAX_SEEN
    assert [stages.account_at(e, i) for i, e in enumerate(events)] == first
    stages.begin_batch()
    next_one = _hot_account(1, start=NOW + 30.0 * len(events))[0]  # within the window
    assert stages.account_at(next_one, len(events)) is not None
    assert len(stages.accounts.get("acct-1")["seen"]) == MAX_SEEN  # the old batch may go
    stages.begin_batch()
    next_day = _hot_account(1, start=NOW + 86_400.0)[0]
    assert stages.account_at(next_day, len(events) + 1) is not None
    assert list(stages.accounts.get("acct-1")["seen"]) == [next_day.withdrawal_id]


def test_the_dedupe_memory_runs_on_the_accounts_withdrawal_times_not_the_clock() -> None:
    """A drain of a backlog processes days of withdrawals in minutes: the account remembers
    the ids within the window of its own withdrawal times (a resubmission follows its
    original in submission order), not every id processed in the last hour."""
    from detector.pipeline import REPEAT

    stages = _feature_state()
    window = stages.dedupe_window_s
    daily = [
        _hot_account(1, start=NOW + day * 86_400.0)[0] for day in range(10)
    ]  # one a day, all processed within a second
    for offset, event in enumerate(daily):
        stages.begin_batch()
        assert stages.account_at(event, offset) is not None
    seen = stages.accounts.get("acct-1")["seen"]
    assert list(seen) == [daily[-1].withdrawal_id]
    # A resubmission within the window of the account's times is recognised, with a new
    # offset (not a redelivery); one of an id the window left behind is applied again.
    stages.begin_batch()
    soon = _hot_account(1, start=daily[-1].requested_at + window / 2)[0]
    assert stages.account_at(soon, 10) is not None
    stages.begin_batch()
    assert stages.account_at(daily[-1], 11) is REPEAT
    assert stages.accounts.get("acct-1")["n"] == 11
    stages.begin_batch()
    again = stages.account_at(daily[0], 12)
    assert again is not None and again is not REPEAT
    assert stages.accounts.get("acct-1")["n"] == 12


def test_a_topic_recreated_under_the_same_name_is_not_taken_for_a_redelivery() -> None:
    stages = _feature_state()
    for i, event in enumerate(_hot_account(100)):
        stages.account_at(event, i)
    newer = _hot_account(5, start=NOW + 86_400.0)  # offsets start again at 0
    assert all(stages.account_at(e, i) is not None for i, e in enumerate(newer))
    assert stages.accounts.get("acct-1")["n"] == 105
