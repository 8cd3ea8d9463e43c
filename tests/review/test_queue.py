"""The queue's state as a plain function of the records read: order, joins, filters, fan-in."""

from __future__ import annotations

import itertools

import pytest
from review_inputs import T0, review, verdict, withdrawal

from detector.review import queue as queue_module
from detector.review.queue import Filters, ReviewQueue, apply_all

DAY = 86400.0


def fresh() -> ReviewQueue:
    return ReviewQueue(lookback_s=DAY)


def ids(q: ReviewQueue, filters: Filters | None = None) -> list[str]:
    return [i.withdrawal_id for i in q.pending(filters)]


def test_only_delay_verdicts_enter_the_queue() -> None:
    q = fresh()
    q.apply_verdict(verdict("w-allow", verdict="allow"))
    q.apply_verdict(verdict("w-refuse", verdict="refuse"))
    q.apply_verdict(verdict("w-delay"))
    assert ids(q) == ["w-delay"]
    assert len(q) == 1


def test_a_held_withdrawal_is_joined_whichever_record_comes_first() -> None:
    before, after = fresh(), fresh()
    apply_all(before, [withdrawal("w-1"), verdict("w-1")])
    apply_all(after, [verdict("w-1"), withdrawal("w-1")])
    for q in (before, after):
        item = q.get("w-1")
        assert item is not None and item.withdrawal is not None
        assert item.withdrawal.destination == "bc1q-new"


def test_a_withdrawal_of_another_account_with_the_same_id_is_not_joined() -> None:
    q = fresh()
    apply_all(q, [verdict("w-1", "acct-1"), withdrawal("w-1", "acct-other")])
    item = q.get("w-1")
    assert item is not None and item.withdrawal is None


def test_a_review_decision_resolves_for_good_even_when_read_before_the_verdict() -> None:
    held = verdict("w-1")
    decided = review(held)
    q = fresh()
    apply_all(q, [decided, held, withdrawal("w-1"), held])
    assert ids(q) == []
    resolution = q.resolution("w-1")
    assert resolution is not None
    assert (resolution.decision, resolution.reviewer) == ("refuse", "alice")


def test_the_first_review_decision_is_the_one_remembered() -> None:
    held = verdict("w-1")
    q = fresh()
    apply_all(q, [held, review(held, reviewer="alice"), review(held, reviewer="bob")])
    resolution = q.resolution("w-1")
    assert resolution is not None and resolution.reviewer == "alice"


def test_any_order_and_any_redelivery_of_the_records_gives_the_same_queue() -> None:
    held_1, held_2 = verdict("w-1", at=T0 + 1), verdict("w-2", "acct-2", at=T0 + 2)
    records = [
        withdrawal("w-1", at=T0),
        withdrawal("w-2", "acct-2", at=T0 + 1),
        held_1,
        held_2,
        review(held_1),
        verdict("w-3", "acct-2", verdict="allow"),
    ]
    outcomes = set()
    for order in itertools.permutations(records):
        q = fresh()
        apply_all(q, [*order, *order])  # every record delivered twice
        item = q.get("w-2")
        assert item is not None and item.withdrawal is not None
        outcomes.add((tuple(ids(q)), len(q.recent_withdrawals("acct-2"))))
    assert outcomes == {(("w-2",), 1)}


def test_the_oldest_hold_comes_first() -> None:
    q = fresh()
    for n, at in enumerate([T0 + 30, T0 + 10, T0 + 20]):
        q.apply_verdict(verdict(f"w-{n}", f"acct-{n}", at=at))
    assert ids(q) == ["w-1", "w-2", "w-0"]


def test_stats_count_depth_oldest_age_and_overdue_holds() -> None:
    q = fresh()
    assert q.stats(T0).depth == 0 and q.stats(T0).oldest_age_s == 0.0
    q.apply_verdict(verdict("w-old", at=T0, hold_seconds=600))
    q.apply_verdict(verdict("w-new", "acct-2", at=T0 + 500, hold_seconds=600))
    stats = q.stats(T0 + 700)
    assert (stats.depth, stats.oldest_age_s, stats.overdue) == (2, 700.0, 1)
    item = q.get("w-old")
    assert item is not None and item.overdue(T0 + 700) and item.age_s(T0 - 5) == 0.0


def test_holds_older_than_the_look_back_leave_as_a_restart_would_not_read_them() -> None:
    q = ReviewQueue(lookback_s=3600)
    held = verdict("w-old", at=T0)
    apply_all(q, [held, verdict("w-new", "acct-2", at=T0 + 3000), review(verdict("w-x"), at=T0)])
    assert q.expire(T0 + 3601) == 1
    assert ids(q) == ["w-new"]
    assert q.resolution("w-x") is None  # resolutions age out with the same horizon


@pytest.fixture
def mixed() -> ReviewQueue:
    q = fresh()
    apply_all(
        q,
        [
            withdrawal("w-btc", usd=250_000.0, asset="BTC"),
            verdict("w-btc", reasons=("amount_vs_history", "new_destination"), at=T0 + 1),
            withdrawal("w-eth", "acct-2", usd=9_500.0, asset="ETH"),
            verdict("w-eth", "acct-2", reasons=("structuring",), at=T0 + 2),
            withdrawal("w-raw", "acct-3", usd=None, asset="USDT"),  # no amount_usd: 3.1 USDT
            verdict("w-raw", "acct-3", reasons=("velocity_1h",), at=T0 + 3),
            verdict("w-unseen", "acct-4", reasons=("new_destination",), at=T0 + 4),
        ],
    )
    return q


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (Filters(), ["w-btc", "w-eth", "w-raw", "w-unseen"]),
        (Filters(reason="new_destination"), ["w-btc", "w-unseen"]),
        (Filters(reason="fan_in"), []),
        (Filters(asset="eth"), ["w-eth"]),
        (Filters(min_amount=10_000), ["w-btc"]),
        (Filters(max_amount=10_000), ["w-eth", "w-raw"]),
        (Filters(min_amount=9_500, max_amount=9_500), ["w-eth"]),
        (Filters(reason="new_destination", min_amount=1), ["w-btc"]),
    ],
)
def test_filters_by_reason_asset_and_amount(
    mixed: ReviewQueue, filters: Filters, expected: list[str]
) -> None:
    assert ids(mixed, filters) == expected


def test_the_filter_choices_are_what_the_queue_holds(mixed: ReviewQueue) -> None:
    assert mixed.reasons() == ["amount_vs_history", "new_destination", "structuring", "velocity_1h"]
    assert mixed.assets() == ["BTC", "ETH", "USDT"]


def test_filters_are_read_from_the_query_and_bad_numbers_are_reported() -> None:
    filters, problems = Filters.parse(
        {"reason": " fan_in ", "asset": "", "min_amount": "10,000", "max_amount": "lots"}
    )
    assert filters == Filters(reason="fan_in", min_amount=10_000.0)
    assert problems == ["max_amount must be a number >= 0 (ignored)"]
    assert Filters.parse({"min_amount": "-5"})[0] == Filters()
    assert Filters.parse({"max_amount": "inf"})[1]
    assert not Filters().active and filters.active


def test_fan_in_counts_distinct_accounts_paying_the_address_around_the_hold() -> None:
    q = fresh()
    apply_all(
        q,
        [
            withdrawal("old", "acct-old", destination="mule", at=T0 - 2 * DAY),
            withdrawal("a1", "acct-a", destination="mule", at=T0 - 3600),
            withdrawal("a2", "acct-a", destination="mule", at=T0 - 60),
            withdrawal("b1", "acct-b", destination="mule", at=T0),
            withdrawal("c1", "acct-c", destination="mule", at=T0 + 600),  # after the hold
            withdrawal("d1", "acct-d", destination="elsewhere", at=T0),
        ],
    )
    fan = q.fan_in("mule", T0)
    assert fan.accounts == ("acct-c", "acct-b", "acct-a")  # most recent first
    assert fan.count == 3 and not fan.capped
    assert fan.since == T0 - DAY
    assert q.fan_in("unknown", T0).count == 0


def test_fan_in_is_bounded_and_says_when_it_is_a_lower_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(queue_module, "MAX_PAYERS", 3)
    q = fresh()
    for n in range(5):
        q.apply_withdrawal(withdrawal(f"w{n}", f"acct-{n}", destination="mule", at=T0 + n))
    fan = q.fan_in("mule", T0)
    assert fan.accounts == ("acct-4", "acct-3", "acct-2") and fan.capped


def test_recent_withdrawals_are_newest_first_with_verdicts_and_without_metadata() -> None:
    q = fresh()
    for n in range(queue_module.RECENT_PER_ACCOUNT + 2):
        q.apply_withdrawal(withdrawal(f"w{n}", at=T0 + n * 60, metadata={"ip": "203.0.113.7"}))
    q.apply_verdict(verdict("w11", verdict="allow"))
    q.apply_withdrawal(withdrawal("w11", at=T0 + 11 * 60))  # redelivered: no duplicate
    recent = q.recent_withdrawals("acct-1")
    assert [w.withdrawal_id for w, _ in recent] == [f"w{n}" for n in range(11, 1, -1)]
    assert recent[0][1] == "allow" and recent[1][1] is None
    assert all(w.metadata is None for w, _ in recent)
    assert q.recent_withdrawals("nobody") == []


def test_memory_stays_bounded_whatever_the_traffic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_module, "MAX_ACCOUNTS", 5)
    monkeypatch.setattr(queue_module, "MAX_DESTINATIONS", 5)
    monkeypatch.setattr(queue_module, "MAX_VERDICT_KINDS", 5)
    monkeypatch.setattr(queue_module, "MAX_RESOLVED", 5)
    monkeypatch.setattr(queue_module, "MAX_HELD", 5)
    q = fresh()
    for n in range(50):
        held = verdict(f"w{n}", f"acct-{n}", at=T0 + n)
        apply_all(q, [withdrawal(f"w{n}", f"acct-{n}", destination=f"d{n}", at=T0 + n), held])
        apply_all(q, [review(verdict(f"x{n}"))])
    assert len(q) == 5 and ids(q) == [f"w{n}" for n in range(45, 50)]  # the oldest went
    assert q.recent_withdrawals("acct-0") == [] and len(q.recent_withdrawals("acct-49")) == 1
    assert q.fan_in("d0", T0).count == 0 and q.fan_in("d49", T0).count == 1
    assert q.resolution("x0") is None and q.resolution("x49") is not None
