"""What the service does with each record it reads (no broker), and the topics it writes."""

from __future__ import annotations

import json

import pytest
from review_inputs import review, verdict, verdict_doc, withdrawal

from detector.config import Settings
from detector.review.queue import ReviewQueue
from detector.review.service import QueueFeed, review_topic_specs
from detector.review.web import Readiness

SETTINGS = Settings(
    topic_withdrawals="w", topic_decisions="d", topic_review_decisions="rd", topic_labels="l"
)


def feed() -> QueueFeed:
    return QueueFeed(SETTINGS, ReviewQueue(lookback_s=86400), Readiness())


def test_records_of_the_three_topics_build_the_queue() -> None:
    f = feed()
    f.apply("w", json.dumps(withdrawal("w-1").to_json()).encode())
    f.apply("d", json.dumps(verdict_doc("w-1")).encode())
    f.apply("d", json.dumps(verdict_doc("w-2", "acct-2")).encode())
    f.apply("rd", json.dumps(review(verdict("w-2", "acct-2")).to_json()).encode())
    f.apply("elsewhere", b"ignored")
    item = f.queue.get("w-1")
    assert item is not None and item.withdrawal is not None
    assert [i.withdrawal_id for i in f.queue.pending()] == ["w-1"]
    assert f.applied == {"w": 1, "d": 2, "rd": 1}


@pytest.mark.parametrize("topic", ["w", "d", "rd"])
def test_unreadable_records_are_skipped_and_counted_never_raised(
    topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    f = feed()
    for value in (b"{oops", None, b"[]"):
        f.apply(topic, value)
    assert f.skipped[topic] == 3 and not f.applied
    warnings = [r for r in caplog.records if "skipping unreadable records" in r.getMessage()]
    assert len(warnings) == 1  # at most one line per topic and minute


def test_a_bug_applying_one_record_costs_that_record_not_the_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    f = feed()

    def broken(_: object) -> None:
        raise KeyError("bug")

    monkeypatch.setattr(f.queue, "apply_withdrawal", broken)
    f.apply("w", json.dumps(withdrawal("w-1").to_json()).encode())
    f.apply("d", json.dumps(verdict_doc("w-1")).encode())
    assert f.skipped == {"w": 1} and f.applied == {"d": 1}
    assert [i.withdrawal_id for i in f.queue.pending()] == ["w-1"]


def test_the_review_queue_writes_two_topics_with_the_workers_partition_count() -> None:
    specs = review_topic_specs(Settings(partitions=6, replication_factor=3))
    assert [(s.name, s.partitions, s.replication) for s in specs] == [
        ("labels", 6, 3),
        ("review-decisions", 6, 3),
    ]
    assert all(not s.config for s in specs)  # time-retained: an audit trail, not a table
