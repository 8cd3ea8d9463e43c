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
    async with detector.accounts_agent.test_context() as agent:
        for doc in docs:
            await agent.put(json.dumps(doc).encode(), key=doc["account_id"].encode())
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
        assert len(sent["changelog:decided"].calls) == 2

    run_with_app(tmp_path, body, kafka_out=kafka)


@pytest.mark.parametrize("store", ["detector-memory://", "rocksdb://"])
def test_old_dedupe_entries_expire_as_tombstones(tmp_path: Path, store: str) -> None:
    clock = [NOW]

    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        window = detector.settings.dedupe_window_s
        async with detector.decide_agent.test_context() as agent:
            await agent.put(_repartitioned(WITHDRAWAL), key=None)
            await asyncio.sleep(0.1)
            assert detector.decided.get("w-1", 0) is not None
            clock[0] += window + 1
            await agent.put(_repartitioned({**WITHDRAWAL, "withdrawal_id": "w-9"}), key=None)
            await asyncio.sleep(0.1)
        assert detector.decided.get("w-1", 0) is None
        tombstones = [c for c in sent["changelog:decided"].calls if c["value"] is None]
        assert [c["key"] for c in tombstones] == [b"w-1"]

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
