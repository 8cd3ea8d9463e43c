"""Feedback in the stream: labels change later verdicts, through the real agents.

A destination reported as fraud: later withdrawals to it (from any account) are refused
with ``reported_destination``. An account reported compromised: its withdrawals are held
with ``account_cooldown``. An analyst's release: the same destination and amount are not
held again for a while.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from test_agents import NOW, WITHDRAWAL, Sent, run_with_app

from detector.events import format_rfc3339
from detector.stream.app import DetectorApp


def _label(**fields: Any) -> bytes:
    doc = {
        "label_id": "L-1",
        "label": "fraud",
        "source": "customer_report",
        "reported_at": format_rfc3339(NOW - 600),
        **fields,
    }
    return json.dumps(doc).encode()


async def _run(
    detector: DetectorApp, sent: dict[str, Sent], *inputs: tuple[str, bytes, bytes]
) -> None:
    """Feed stage 1 (withdrawals and labels), then stage 2 with what stage 1 forwarded."""
    settings = detector.settings
    async with detector.accounts_agent.test_context() as stage1:
        for topic, key, value in inputs:
            name = settings.topic_labels if topic == "labels" else settings.topic_withdrawals
            # The test wrapper names one topic per agent; stage 1 reads two.
            stage1._get_strtopic = lambda _channel, name=name: name
            await stage1.put(value, key=key)
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
    async with detector.decide_agent.test_context() as stage2:
        for call in sent["by_destination"].calls:
            await stage2.put(call["value"], key=None)
        await asyncio.sleep(0.1)


def _verdicts(sent: dict[str, Sent]) -> dict[str, dict[str, Any]]:
    return {
        json.loads(c["value"])["withdrawal_id"]: json.loads(c["value"])
        for c in sent["decisions"].calls
    }


def _withdrawal(wid: str, account: str, usd: float, **more: Any) -> tuple[str, bytes, bytes]:
    doc = {**WITHDRAWAL, "withdrawal_id": wid, "account_id": account, "amount_usd": usd, **more}
    return ("withdrawals", account.encode(), json.dumps(doc).encode())


def test_a_reported_destination_refuses_later_withdrawals_from_anyone(tmp_path: Path) -> None:
    report = ("labels", b"bc1qattacker", _label(destination="bc1qattacker"))

    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        later = format_rfc3339(NOW - 60)  # requested after the report (NOW - 600)
        await _run(
            detector, sent, report, _withdrawal("w-small", "acct-9", 150.0, requested_at=later)
        )
        verdict = _verdicts(sent)["w-small"]
        assert verdict["verdict"] == "refuse"
        assert verdict["reasons"][0]["code"] == "reported_destination"
        assert "customer_report L-1" in verdict["reasons"][0]["detail"]
        assert detector.registry.get_sample_value("detector_feedback_effect_seconds_count") == 1

    run_with_app(tmp_path, body)


def test_an_account_reported_compromised_is_held_for_the_cooldown(tmp_path: Path) -> None:
    report = ("labels", b"acct-5", _label(account_id="acct-5"))

    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        await _run(detector, sent, report, _withdrawal("w-5", "acct-5", 120.0, destination="home"))
        verdict = _verdicts(sent)["w-5"]
        assert verdict["verdict"] == "delay"
        assert verdict["reasons"][0]["code"] == "account_cooldown"

    run_with_app(tmp_path, body)


def test_an_analysts_release_stops_holding_the_same_pattern(tmp_path: Path) -> None:
    held = _withdrawal("w-big", "acct-7", 250_000.0)
    release = (
        "labels",
        b"acct-7",
        _label(
            label_id="review:1",
            label="legit",
            source="analyst",
            withdrawal_id="w-big",
            account_id="acct-7",
            destination="bc1qattacker",
            reported_at=format_rfc3339(NOW),
        ),
    )
    again = _withdrawal("w-again", "acct-7", 240_000.0)

    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        await _run(detector, sent, held)
        assert _verdicts(sent)["w-big"]["verdict"] in {"delay", "refuse"}
        sent["by_destination"].calls.clear()
        await _run(detector, sent, release, again)
        assert _verdicts(sent)["w-again"]["verdict"] == "allow"

    run_with_app(tmp_path, body)


def test_an_invalid_label_goes_to_the_dlq(tmp_path: Path) -> None:
    async def body(detector: DetectorApp, sent: dict[str, Sent]) -> None:
        await _run(detector, sent, ("labels", b"x", b'{"label": "maybe"}'))
        (dlq,) = sent["dlq"].calls
        assert dlq["value"] == b'{"label": "maybe"}'

    run_with_app(tmp_path, body)
