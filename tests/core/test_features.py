"""Feature functions on hand-made histories: windows, boundaries, late events, cold start."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from detector.events import Withdrawal
from detector.features import (
    FEATURE_NAMES,
    MAX_AMOUNTS,
    MAX_FAN_IN_ACCOUNTS,
    MAX_KNOWN_DESTINATIONS,
    MAX_RECENT,
    STRUCTURING_LIMIT_USD,
    AccountFeatures,
    DestinationFeatures,
    account_step,
    destination_step,
    feature_vector,
    reason_detail,
)

T0 = 1_790_000_000.0
H = 3600.0
DAY = 86400.0


def w(
    t: float, usd: float = 100.0, dest: str = "addr-1", account: str = "a1", wid: str = "w"
) -> Withdrawal:
    return Withdrawal(wid, account, "USDT", str(usd), usd, dest, t, "", None)


def run(
    events: list[Withdrawal], state: dict[str, Any] | None = None
) -> tuple[dict[str, Any] | None, list[AccountFeatures]]:
    out = []
    for e in events:
        state, feats = account_step(state, e)
        # The Faust table stores JSON: every step must survive a JSON round trip.
        state = json.loads(json.dumps(state))
        out.append(feats)
    return state, out


def named(acc: AccountFeatures, dst: DestinationFeatures | None = None) -> dict[str, float]:
    return dict(
        zip(FEATURE_NAMES, feature_vector(acc, dst or DestinationFeatures(1, 0)), strict=True)
    )


def test_windows_count_and_sum_including_the_current_event() -> None:
    events = [w(T0), w(T0 + 300, 200), w(T0 + 1800, 300), w(T0 + 5 * H, 400)]
    _, feats = run(events)
    assert [f.count_10m for f in feats] == [1, 2, 1, 1]
    assert [f.count_1h for f in feats] == [1, 2, 3, 1]
    assert [f.count_24h for f in feats] == [1, 2, 3, 4]
    assert feats[-1].sum_24h == 1000.0


def test_window_boundaries_are_half_open() -> None:
    # (t - W, t]: an event exactly W seconds earlier has left the window.
    _, feats = run([w(T0), w(T0 + 600), w(T0 + 600 + 3600)])
    assert feats[1].count_10m == 1
    assert feats[1].count_1h == 2
    assert feats[2].count_1h == 1
    _, feats = run([w(T0), w(T0 + 599.999)])
    assert feats[1].count_10m == 2


def test_state_is_bounded_in_time_and_size() -> None:
    state, _ = run([w(T0 + i * 60, dest=f"d{i}") for i in range(MAX_RECENT + 200)])
    assert state is not None
    assert len(state["ts"]) <= MAX_RECENT
    assert len(state["la"]) == MAX_AMOUNTS
    assert len(state["known"]) == MAX_KNOWN_DESTINATIONS
    state, _ = run([w(T0 + (MAX_RECENT + 200) * 60 + 2 * DAY)], state)
    assert state is not None
    assert len(state["ts"]) == 1  # everything older than 24 h before the newest is gone
    assert state["n"] == MAX_RECENT + 201  # totals keep counting


def test_cold_start_uses_the_prior_and_history_takes_over() -> None:
    _, feats = run([w(T0, 300.0)])
    first = feats[0]
    assert first.history_n == 0
    assert first.amount_z == 0.0  # $300 is the prior's typical amount
    assert first.gap_s is None
    assert first.new_destination
    # A habit of $20 withdrawals: $2,000 becomes a big z once history exists.
    _, feats = run(
        [w(T0 + i * DAY, 20.0 * (1 + 0.05 * (i % 3))) for i in range(20)]
        + [w(T0 + 20 * DAY, 2000.0)]
    )
    assert feats[-1].amount_z > 5
    # The account's median ($21), shrunk towards the $300 prior by 5 of 25 weights.
    assert feats[-1].median_usd == pytest.approx(
        math.exp(0.8 * math.log(21) + 0.2 * math.log(300)), rel=0.05
    )
    detail = reason_detail("amount_vs_history", feats[-1], DestinationFeatures(1, 0)).detail
    assert "x the account's median" in detail


def test_tiny_and_slow_withdrawals_are_not_elevated() -> None:
    history = [w(T0 + i * DAY, 500.0) for i in range(15)]
    _, feats = run([*history, w(T0 + 15 * DAY, 0.5)])
    values = named(feats[-1])
    # One-sided features: less than usual is exactly "ordinary" (the floor).
    assert values["amount_vs_history"] == 0.0
    assert values["large_amount"] == math.log10(1000.0)
    assert values["daily_volume"] == 0.0
    assert values["rapid_succession"] < 0.1  # daily habit vs the 2-day prior: barely
    assert values["velocity_24h"] == 0.0
    assert values["new_destination"] == 0.0


def test_gaps_rapid_succession_and_dormancy() -> None:
    history = [w(T0 + i * DAY) for i in range(10)]
    _, feats = run([*history, w(T0 + 9 * DAY + 30)])
    rapid = named(feats[-1])
    assert feats[-1].gap_s == 30.0
    assert rapid["rapid_succession"] > 3  # 30 s vs ~1 day
    assert rapid["dormant_account"] == 0.0
    _, feats = run([*history, w(T0 + 70 * DAY, 50_000.0, dest="new")])
    dormant = named(feats[-1])
    assert dormant["dormant_account"] > 1.5
    assert dormant["daily_volume"] > 1
    assert dormant["new_destination"] == 1.0


def test_late_event_sees_its_own_window_and_counts_for_later_ones() -> None:
    state, _ = run([w(T0), w(T0 + 2 * H)])
    state, late = run([w(T0 + 30 * 60, wid="late")], state)
    # As of T0+30min: only the T0 event precedes it inside an hour; T0+2h is "future".
    assert late[0].count_1h == 2
    assert late[0].count_24h == 2
    assert late[0].gap_s == 1800.0
    assert state is not None
    assert state["ts"] == sorted(state["ts"])
    _, after = run([w(T0 + 2 * H + 60)], state)
    assert after[0].count_24h == 4  # the late event is part of later windows


def test_destinations_new_distinct_and_structuring() -> None:
    limit = STRUCTURING_LIMIT_USD
    events = [
        w(T0, 100, "a"),
        w(T0 + 60, 100, "a"),
        w(T0 + 120, 0.95 * limit, "b"),
        w(T0 + 180, 0.99 * limit, "c"),
        w(T0 + 240, limit, "c"),
    ]
    _, feats = run(events)
    assert [f.new_destination for f in feats] == [True, False, True, True, False]
    assert feats[-1].near_limit_24h == 2  # the limit itself is not "just under"


def test_fan_in_counts_distinct_accounts_and_first_time_payers() -> None:
    state = None
    feats = []
    for i in range(5):
        state, f = destination_step(
            state, w(T0 + i * 60, account=f"acct{i % 3}"), new_for_account=i < 3
        )
        state = json.loads(json.dumps(state))
        feats.append(f)
    assert [f.fan_in_24h for f in feats] == [1, 2, 3, 3, 3]
    assert [f.fan_in_new_2h for f in feats] == [1, 2, 3, 3, 3]
    state, later = destination_step(state, w(T0 + 3 * H, account="acct9"), new_for_account=False)
    assert later.fan_in_24h == 4
    assert later.fan_in_new_2h == 0  # first-time payers were more than 2 h ago
    state, next_day = destination_step(
        state, w(T0 + 2 * DAY, account="acct9"), new_for_account=False
    )
    assert next_day.fan_in_24h == 1


def test_fan_in_state_is_bounded() -> None:
    state = None
    for i in range(MAX_FAN_IN_ACCOUNTS + 50):
        state, feats = destination_step(state, w(T0 + i, account=f"x{i}"), new_for_account=True)
    assert state is not None
    assert len(state["a"]) == MAX_FAN_IN_ACCOUNTS
    assert feats.fan_in_24h == MAX_FAN_IN_ACCOUNTS + 1  # saturates: retained + this one


def test_in_memory_and_json_round_tripped_state_give_the_same_features() -> None:
    # The worker's table serialises state to JSON between events; replay keeps it in memory.
    events = [w(T0 + i * 37.0, 50.0 + i, dest=f"d{i % 4}") for i in range(60)]
    state: dict[str, Any] | None = None
    in_memory = []
    for e in events:
        new_state, feats = account_step(state, e)
        assert state is None or new_state is state  # updated in place
        state = new_state
        in_memory.append(feats)
    _, round_tripped = run(events)
    assert in_memory == round_tripped


def test_feature_vector_order_and_reason_details() -> None:
    _, feats = run([w(T0 + i, 100.0) for i in range(12)])
    dst = DestinationFeatures(fan_in_24h=17, fan_in_new_2h=9)
    row = feature_vector(feats[-1], dst)
    assert len(row) == len(FEATURE_NAMES)
    assert all(x >= 0 and math.isfinite(x) for x in row)
    assert named(feats[-1], dst)["velocity_10m"] == math.log2(12)
    for name in FEATURE_NAMES:
        reason = reason_detail(name, feats[-1], dst)
        assert reason.code and reason.detail
    assert (
        reason_detail("velocity_10m", feats[-1], dst).detail
        == "12 withdrawals in the last 10 minutes"
    )
    assert "17 distinct accounts" in reason_detail("fan_in", feats[-1], dst).detail


def test_account_features_json_round_trip() -> None:
    _, feats = run([w(T0), w(T0 + 10)])
    assert AccountFeatures.from_json(json.loads(json.dumps(feats[-1].to_json()))) == feats[-1]
