"""Broker tier: a real worker process on the real Kafka, fed and read with kafka-python."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from kafka_io import consume_until, produce, verdicts_of

from detector.config import Settings
from detector.events import format_rfc3339
from detector.stream.app import ACCOUNTS_TABLE

pytestmark = pytest.mark.broker

T0 = 1_790_000_000.0  # 2026-09-21
DAY = 86400.0
N_ACCOUNTS = 199
PER_ACCOUNT = 10
N_DRAINS = 10


def _event(wid: str, account: str, usd: float, dest: str, t: float) -> dict[str, Any]:
    return {
        "withdrawal_id": wid,
        "account_id": account,
        "asset": "USDT",
        "amount": f"{usd:.2f}",
        "amount_usd": round(usd, 2),
        "destination": dest,
        "requested_at": format_rfc3339(t),
        "metadata": {"source": "test"},
    }


def normal_history_with_drains() -> tuple[list[dict[str, Any]], set[str]]:
    """1,990 habitual withdrawals of 199 accounts, then 10 of them drained to new addresses."""
    rng = random.Random(11)
    events = []
    habits = {}
    for i in range(N_ACCOUNTS):
        account = f"acct-{i:04d}"
        habit = 10 ** rng.uniform(1.7, 3.0)
        habits[account] = habit
        dests = [f"T{account}-home-{k}" for k in range(2)]
        for k in range(PER_ACCOUNT):
            t = T0 + k * DAY + rng.uniform(0, 8 * 3600)
            usd = habit * math.exp(rng.gauss(0, 0.25))
            events.append(_event(f"w-{account}-{k}", account, usd, dests[k % 2], t))
    drains = set()
    for i in range(N_DRAINS):
        account = f"acct-{i * 17:04d}"
        wid = f"drain-{account}"
        usd = max(50_000.0, 150 * habits[account])
        events.append(_event(wid, account, usd, f"Tattacker-{i}", T0 + 10.5 * DAY + i * 60))
        drains.add(wid)
    events.sort(key=lambda e: e["requested_at"])
    return events, drains


def invalid_records() -> list[tuple[bytes | None, bytes]]:
    good = _event("bad", "acct-x", 100.0, "dest", T0)
    kinds = [
        lambda i: (b"acct-x", b"{not json %d" % i),
        lambda i: (b"acct-x", json.dumps([i]).encode()),
        lambda i: (
            b"acct-x",
            json.dumps({**good, "withdrawal_id": f"m{i}", "destination": None}).encode(),
        ),
        lambda i: (
            b"acct-x",
            json.dumps({**good, "withdrawal_id": f"n{i}", "amount": "-1"}).encode(),
        ),
        lambda i: (
            b"acct-x",
            json.dumps({**good, "withdrawal_id": f"a{i}", "amount": "ten"}).encode(),
        ),
        lambda i: (
            b"acct-x",
            json.dumps(
                {**good, "withdrawal_id": f"t{i}", "requested_at": "2026-10-01 12:00"}
            ).encode(),
        ),
        lambda i: (b"acct-x", json.dumps({**good, "withdrawal_id": "x" * (129 + i)}).encode()),
        lambda i: (
            b"acct-x",
            json.dumps({**good, "withdrawal_id": f"d{i}", "metadata": [i]}).encode(),
        ),
        lambda i: (b"someone-else", json.dumps({**good, "withdrawal_id": f"k{i}"}).encode()),
        lambda i: (b"acct-x", b"\xff\xfe" + str(i).encode()),
    ]
    return [kinds[i % len(kinds)](i) for i in range(50)]


def test_every_valid_withdrawal_gets_exactly_one_verdict(
    worker_settings: Callable[..., Settings], start_worker: Callable[[Settings], Any]
) -> None:
    settings = worker_settings(partitions=4)
    events, drains = normal_history_with_drains()
    assert len(events) == 2000
    valid = [(e["account_id"].encode(), json.dumps(e).encode()) for e in events]
    invalid = invalid_records()
    records: list[tuple[bytes | None, bytes]] = list(valid)
    for n, record in enumerate(invalid):  # spread the invalid ones through the stream
        records.insert(n * 41, record)

    start_worker(settings)
    produce(settings, records)
    topics = [settings.topic_decisions, settings.topic_dlq]

    def done(got: list[Any]) -> bool:
        by_topic = Counter(r.topic for r in got)
        return by_topic[settings.topic_decisions] >= 2000 and by_topic[settings.topic_dlq] >= 50

    got = consume_until(settings, topics, done)
    changelog = consume_until(
        settings,
        [settings.changelog_topic(ACCOUNTS_TABLE)],
        lambda r: len(r) >= 2000,
        timeout=30,
    )

    verdicts = verdicts_of(got, settings.topic_decisions)
    ids = Counter(v["withdrawal_id"] for v in verdicts)
    expected = {e["withdrawal_id"] for e in events}
    assert set(ids) == expected, (
        f"missing {len(expected - set(ids))}, extra {len(set(ids) - expected)}"
    )
    assert max(ids.values()) == 1, "a withdrawal got more than one verdict message"
    for v in verdicts:
        assert set(v) >= {
            "withdrawal_id",
            "account_id",
            "verdict",
            "score",
            "reasons",
            "model_version",
            "decided_at",
            "schema_version",
        }
        assert "__faust" not in v
        assert v["verdict"] in {"allow", "delay", "refuse"}
        assert 0.0 <= v["score"] <= 1.0
        assert v["schema_version"] == 1
        assert ("hold_seconds" in v) == (v["verdict"] == "delay")
        assert bool(v["reasons"]) == (v["verdict"] != "allow")
    by_id = {v["withdrawal_id"]: v for v in verdicts}
    drained = {wid: by_id[wid]["verdict"] for wid in drains}
    assert all(v in {"delay", "refuse"} for v in drained.values()), drained
    normal_flagged = sum(
        by_id[e["withdrawal_id"]]["verdict"] != "allow"
        for e in events
        if e["withdrawal_id"] not in drains
    )
    assert normal_flagged <= 0.02 * (2000 - N_DRAINS)

    dlq = [r for r in got if r.topic == settings.topic_dlq]
    assert len(dlq) == 50
    assert sorted(r.value for r in dlq) == sorted(value for _, value in invalid)
    for record in dlq:
        headers = dict(record.headers)
        assert headers["dlq.code"] and len(headers["dlq.reason"]) > 10
        assert headers["dlq.topic"].decode() == settings.topic_withdrawals
    codes = Counter(dict(r.headers)["dlq.code"].decode() for r in dlq)
    assert set(codes) == {
        "invalid_json",
        "not_an_object",
        "missing_field",
        "bad_amount",
        "bad_timestamp",
        "bad_withdrawal_id",
        "bad_metadata",
        "key_mismatch",
        "invalid_utf8",
    }

    # Changelog writes land on the partition of their own source event (traps: take()).
    from kafka.partitioner.default import murmur2

    assert changelog
    for record in changelog:
        account = record.key.decode()
        expected_partition = (murmur2(account.encode()) & 0x7FFFFFFF) % settings.partitions
        assert record.partition == expected_partition, account


def _stage2_order(records: list[Any], partitions: int) -> list[str]:
    """The withdrawal_ids in the order the destination stage took them, checking that every
    batched record went to its destinations' partition."""
    from kafka.partitioner.default import murmur2

    order = []
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        for item in json.loads(record.value)["items"]:
            dest = item["e"]["destination"].encode()
            assert (murmur2(dest) & 0x7FFFFFFF) % partitions == record.partition
            order.append(item["e"]["withdrawal_id"])
    return order


@pytest.mark.parametrize("partitions", [1, 4])
def test_worker_and_replay_give_the_same_verdicts(
    worker_settings: Callable[..., Settings],
    start_worker: Callable[[Settings], Any],
    partitions: int,
) -> None:
    """Same events, same model: the streaming worker (two agents, a repartition through
    Kafka by destination, changelog-backed tables) decides exactly as `replay` does.

    "The same" with several partitions: account features follow each account's event-time
    order (a partition keeps it); fan-in follows the order in which payments to a
    destination reached its partition, which can differ from event time when they come from
    different input partitions. `replay(destination_order=...)` takes that order from the
    by-destination topic and must then match every verdict, score and reason exactly.
    """
    from kafka_io import DEFAULT_MODEL

    from detector.events import validate_withdrawal
    from detector.features import FEATURE_NAMES
    from detector.model import Model
    from detector.offline import simulate
    from detector.offline.replay import replay

    events = simulate.generate(
        simulate.SimConfig(accounts=150, days=8, seed=21, attacks_per_scenario=2)
    )
    settings = worker_settings(partitions=partitions)
    start_worker(settings)
    produce(settings, [(e["account_id"].encode(), simulate.encode_event(e)) for e in events])
    got = consume_until(settings, [settings.topic_decisions], lambda r: len(r) >= len(events))

    def all_forwarded(records: list[Any]) -> bool:
        return sum(len(json.loads(r.value)["items"]) for r in records) >= len(events)

    repartitioned = consume_until(
        settings, [settings.topic_by_destination], all_forwarded, timeout=30
    )
    online = {v["withdrawal_id"]: v for v in verdicts_of(got, settings.topic_decisions)}
    order = _stage2_order(repartitioned, partitions)
    model = Model.load(DEFAULT_MODEL)
    withdrawals = [validate_withdrawal(e) for e in events]
    offline = replay(withdrawals, model, destination_order=order)
    assert len(online) == len(events) == len(offline.verdicts) == len(set(order))
    for expected in offline.verdicts:
        actual = online[expected["withdrawal_id"]]
        assert actual["verdict"] == expected["verdict"], expected["withdrawal_id"]
        assert actual["score"] == expected["score"]
        assert actual["reasons"] == expected["reasons"]
        assert actual["model_version"] == expected["model_version"]
    if partitions == 1:  # one partition keeps event time: plain replay is the same
        plain = replay(withdrawals, model)
        assert [v["score"] for v in plain.verdicts] == [
            online[e.withdrawal_id]["score"] for e in withdrawals
        ]
    # The fan-in features were computed in the stream (repartitioned by destination) and
    # match: fan-in attack withdrawals have many accounts on one destination.
    fan_in_col = FEATURE_NAMES.index("fan_in_new")
    fan_rows = [
        row for row, label in zip(offline.rows, offline.labels, strict=True) if label == "fan_in"
    ]
    assert fan_rows and max(row[fan_in_col] for row in fan_rows) >= 3
