"""The wallet client against a real broker and a real ``detector worker`` (broker tier)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from kafka_io import free_port, produce, records_of

from detector.client import CLIENT_TIMEOUT, WalletClient
from detector.client.transport import murmur2_partition
from detector.config import Settings
from detector.events import format_rfc3339
from detector.local.process import stop_process

pytestmark = pytest.mark.broker

WORKER_DEADLINE_S = 20.0  # generous: the first verdict of a fresh worker on a shared machine
STOPPED_DEADLINE_S = 3.0


def withdrawal(account: str, amount_usd: float = 120.0) -> dict[str, Any]:
    return {
        "withdrawal_id": str(uuid.uuid4()),
        "account_id": account,
        "asset": "USDT",
        "amount": f"{amount_usd:.2f}",
        "amount_usd": amount_usd,
        "destination": f"T{uuid.uuid4().hex[:20]}",
        "requested_at": format_rfc3339(time.time()),
    }


def test_the_client_gets_the_workers_verdict_within_the_deadline(
    worker_settings: Callable[..., Settings],
    start_worker: Callable[[Settings], subprocess.Popen[bytes]],
) -> None:
    settings = worker_settings("wallet")
    start_worker(settings)
    # A verdict planted on the decisions topic before the client starts, for the same id:
    # the client reads from the end offset taken before publishing, so it must never see it.
    event = withdrawal("acct-wallet-1")
    planted = {
        "withdrawal_id": event["withdrawal_id"],
        "account_id": event["account_id"],
        "verdict": "allow",
        "score": 0.0,
        "reasons": [],
        "model_version": "planted-old-verdict",
        "decided_at": "2020-01-01T00:00:00.000Z",
        "schema_version": 1,
    }
    produce(
        settings,
        [(event["account_id"].encode(), json.dumps(planted).encode())],
        topic=settings.topic_decisions,
    )

    with WalletClient.from_settings(settings) as client:
        started = time.monotonic()
        result = client.decide(event, WORKER_DEADLINE_S)
        elapsed = time.monotonic() - started
        second_account = client.decide(withdrawal("acct-wallet-2"), WORKER_DEADLINE_S)
        again = client.decide(event, WORKER_DEADLINE_S)

    assert result.source == "detector", result
    assert result.model_version != "planted-old-verdict"
    assert result.verdict in ("allow", "delay", "refuse") and elapsed < WORKER_DEADLINE_S
    assert second_account.source == "detector"
    assert again is result  # answered from the cache

    # What the worker put on `decisions` is what the client returned; published once.
    on_topic = [
        json.loads(r.value)
        for r in records_of(settings, settings.topic_decisions, event["withdrawal_id"])
    ]
    real = [v for v in on_topic if v["model_version"] != "planted-old-verdict"]
    assert {(v["verdict"], v["score"]) for v in real} == {(result.verdict, result.score)}
    sent = records_of(settings, settings.topic_withdrawals, event["withdrawal_id"])
    assert len(sent) == 1
    assert sent[0].key == b"acct-wallet-1"
    assert sent[0].partition == murmur2_partition(b"acct-wallet-1", settings.partitions)


def test_with_the_worker_stopped_the_client_says_delay_and_later_gets_the_verdict(
    worker_settings: Callable[..., Settings],
    start_worker: Callable[[Settings], subprocess.Popen[bytes]],
) -> None:
    settings = worker_settings("stopped")
    stop_process(start_worker(settings))  # the topics stay; nothing answers now
    event = withdrawal("acct-wallet-stopped")

    with WalletClient.from_settings(settings) as client:
        started = time.monotonic()
        result = client.decide(event, STOPPED_DEADLINE_S)
        elapsed = time.monotonic() - started

        assert (result.verdict, result.source, result.reason) == (
            "delay",
            "client",
            CLIENT_TIMEOUT,
        )
        assert STOPPED_DEADLINE_S <= elapsed < STOPPED_DEADLINE_S + 1.0

        # The worker comes back and decides the withdrawal it finds on the topic; the same
        # client, asked again, returns that verdict without publishing the withdrawal twice.
        start_worker(replace(settings, web_port=free_port()))
        later = client.decide(event, WORKER_DEADLINE_S)

    assert later.source == "detector", later
    assert len(records_of(settings, settings.topic_withdrawals, event["withdrawal_id"])) == 1
