"""Feature functions on hand-made histories: learned scales, windows relative to the account's
rhythm, late events, cold start, destinations, fan-in, bounds, labels, reasons."""

from __future__ import annotations

import dataclasses
import json
import math
from types import SimpleNamespace
from typing import Any

import pytest
from samples import DAY, PARAMS, withdrawal

from detector.features import (
    ACCOUNT_STATE_VERSION,
    DESTINATION_STATE_VERSION,
    ESTABLISHED_G,
    FAMILIES,
    FEATURE_NAMES,
    MAX_KNOWN,
    MAX_PAYERS,
    MAX_RECENT,
    MEDIAN_OF,
    AccountFeatures,
    DestinationFeatures,
    FeatureParams,
    Structuring,
    account_step,
    apply_account_label,
    apply_destination_label,
    destination_step,
    feature_vector,
    learn_params,
    reason_detail,
    upgrade_account_state,
)

T0 = 1_790_000_000.0
H = 3600.0


def run(
    events: list[Any],
    state: dict[str, Any] | None = None,
    params: FeatureParams = PARAMS,
    structuring: Structuring | None = None,
) -> tuple[dict[str, Any], list[AccountFeatures]]:
    out = []
    for e in events:
        state, feats = account_step(state, e, params, structuring)
        # The table stores JSON: every step must survive a JSON round trip (order included).
        state = json.loads(json.dumps(state))
        out.append(feats)
    assert state is not None
    return state, out


def named(acc: AccountFeatures, dst: DestinationFeatures | None = None) -> dict[str, float]:
    return dict(
        zip(FEATURE_NAMES, feature_vector(acc, dst or DestinationFeatures(1, 0, 0)), strict=True)
    )


def daily(n: int, value: float = 100.0, start: float = T0) -> list[Any]:
    return [withdrawal(start + i * DAY, value, wid=f"d{i}") for i in range(n)]


def test_families_partition_the_row() -> None:
    assert [n for names in FAMILIES.values() for n in names] == list(FEATURE_NAMES)
    assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES)) == 14


def test_learned_scales_come_from_the_population() -> None:
    events = []
    for a in range(10):  # account a withdraws 10 * (a + 1) every (a + 1) hours
        events += [
            withdrawal(T0 + i * (a + 1) * H, 10.0 * (a + 1), account=f"a{a}", dest=f"d{a}-{i % 2}")
            for i in range(8)
        ]
    p = learn_params(events)
    assert p.unit_s == pytest.approx(5.5 * H)  # median over accounts of their median gap
    assert p.acct_gap_s == pytest.approx(5.5 * H)
    assert p.acct_log_median == pytest.approx(math.log(math.sqrt(50 * 60)))
    assert p.sigma_within == pytest.approx(0.05)  # constant amounts: the floor
    assert p.new_curve[0] > 0.9 and p.new_curve[1] > 0.6 and p.new_curve[2] < 0.2
    with pytest.raises(ValueError):
        learn_params([])
    assert FeatureParams.from_json(json.loads(json.dumps(p.to_json()))) == p


def test_params_reject_nonsense() -> None:
    doc = PARAMS.to_json()
    for field, bad in (("unit_s", 0.0), ("sigma_within", math.nan), ("new_rate", 1.5)):
        with pytest.raises(ValueError):
            FeatureParams.from_json({**doc, field: bad})


def test_cold_start_prior_fades_with_the_accounts_own_history() -> None:
    _, feats = run([withdrawal(T0, 100.0)])
    first = feats[0]
    assert first.n == 0 and first.gap == -1.0 and first.new_destination
    assert first.median == pytest.approx(100.0)  # the prior: the median account's median
    assert named(first)["amount_vs_history"] == pytest.approx(0.0)
    assert named(first)["new_destination"] == 0.0  # P(new) = 1 for a first withdrawal
    # A habit of 20: after 20 withdrawals the median is 20/24 own, 4/24 the prior.
    _, feats = run([*daily(20, 20.0), withdrawal(T0 + 20 * DAY, 2000.0)])
    last = feats[-1]
    assert last.median == pytest.approx(math.exp((20 * math.log(20) + 4 * math.log(100)) / 24))
    assert last.amount_vs_history == pytest.approx(math.log(20))  # 20x the population's


def test_amount_must_exceed_both_the_population_and_the_account() -> None:
    # A whale withdrawing 1,000,000 daily: as its own history grows, another 1,000,000
    # becomes ordinary (the population's prior fades as n / (n + 4)).
    first = run([withdrawal(T0, 1e6)])[1][0].amount_vs_history
    month = run([*daily(30, 1e6), withdrawal(T0 + 30 * DAY, 1e6)])[1][-1].amount_vs_history
    year = run([*daily(300, 1e6), withdrawal(T0 + 300 * DAY, 1e6)])[1][-1].amount_vs_history
    assert first > 4
    assert 1.2 > month > 0.15 > year
    # A small account: 50 is 10x its median but half the population's median: not large.
    _, feats = run([*daily(30, 5.0), withdrawal(T0 + 30 * DAY, 50.0)])
    assert named(feats[-1])["amount_vs_history"] < 0


def test_the_population_reference_is_the_median_account_not_the_median_withdrawal() -> None:
    # Busy accounts' large withdrawals set the median withdrawal (1,000 here) far above the
    # median account's median (100): a small account's 10x spike to 500 is half the median
    # withdrawal, yet 5x the typical account's median, so it counts (features-v7).
    params = dataclasses.replace(PARAMS, log_amount_median=math.log(1000.0))
    _, feats = run([*daily(30, 50.0), withdrawal(T0 + 30 * DAY, 500.0)], params=params)
    last = feats[-1]
    assert last.population_median == pytest.approx(100.0)
    assert 0 < last.amount_vs_history == pytest.approx(math.log(5.0))
    assert (
        "5.0x the typical account's median"
        in reason_detail("amount_vs_history", last, DestinationFeatures(1, 0, 0)).detail
    )


def test_frequency_is_relative_to_the_accounts_own_rhythm() -> None:
    history = daily(30)
    _, feats = run([*history, withdrawal(T0 + 29 * DAY + 600, wid="x")])
    rapid = feats[-1]
    assert rapid.gap == 600.0
    assert named(rapid)["rapid_succession"] == pytest.approx(math.log(rapid.usual_gap / 600.0))
    assert rapid.usual_gap == pytest.approx(DAY, rel=0.01)
    assert rapid.count_burst == 2  # within a quarter of a day
    _, feats = run([*history, withdrawal(T0 + 70 * DAY, wid="x")])
    assert named(feats[-1])["dormant_account"] == pytest.approx(math.log(41 * DAY / DAY), rel=0.02)


def test_windows_are_half_open_and_include_the_current_withdrawal() -> None:
    # The long window is 5 G = 5 days here: (t - 5 days, t].
    events = [withdrawal(T0 + i * DAY, wid=f"w{i}") for i in range(6)]
    _, feats = run(events)
    assert [f.count_long for f in feats] == [1, 2, 3, 4, 5, 5]
    _, feats = run([withdrawal(T0), withdrawal(T0 + 5 * DAY - 0.001, wid="b")])
    assert feats[1].count_long == 2


def test_late_event_sees_its_own_window_and_counts_for_later_ones() -> None:
    state, _ = run([withdrawal(T0), withdrawal(T0 + 2 * H, wid="b")])
    state, late = run([withdrawal(T0 + 0.5 * H, wid="late")], state)
    assert late[0].gap == 0.5 * H  # to the previous withdrawal in time
    assert late[0].count_long == 2  # T0 and itself; T0 + 2 h is after it
    assert state["t"] == sorted(state["t"])
    _, after = run([withdrawal(T0 + 3 * H, wid="c")], state)
    assert after[0].count_long == 4


def test_new_destinations_are_weighed_by_the_accounts_habit() -> None:
    loyal = [withdrawal(T0 + i * DAY, dest="home", wid=f"l{i}") for i in range(40)]
    _, feats = run([*loyal, withdrawal(T0 + 40 * DAY, dest="fresh")])
    surprise_loyal = named(feats[-1])["new_destination"]
    roaming = [withdrawal(T0 + i * DAY, dest=f"d{i}", wid=f"r{i}") for i in range(40)]
    _, feats = run([*roaming, withdrawal(T0 + 40 * DAY, dest="fresh")])
    surprise_roaming = named(feats[-1])["new_destination"]
    assert surprise_loyal > 2.0
    assert surprise_roaming < 0.5
    _, feats = run([*loyal, withdrawal(T0 + 40 * DAY, dest="home")])
    assert named(feats[-1])["new_destination"] == 0.0


def test_value_to_fresh_destinations_adds_up_within_the_usual_gap() -> None:
    history = daily(30)
    drain = [
        withdrawal(T0 + 30 * DAY + i * 600, 300.0, dest=f"x{i}", wid=f"x{i}") for i in range(3)
    ]
    _, feats = run([*history, *drain])
    assert feats[-1].fresh_value == pytest.approx(900.0)
    assert feats[-1].big_count == 3
    assert named(feats[-1])["to_fresh_destinations"] > named(feats[-3])["to_fresh_destinations"]


def test_state_is_bounded() -> None:
    events = [withdrawal(T0 + i * 60, dest=f"d{i}", wid=f"w{i}") for i in range(MAX_RECENT + 200)]
    state, _ = run(events)
    assert len(state["t"]) == len(state["e"]) == len(state["b"]) == len(state["f"]) == MAX_RECENT
    assert len(state["la"]) == len(state["ls"]) == MEDIAN_OF
    assert len(state["k"]) == MAX_KNOWN
    # The oldest destinations left first: the known ones are the most recent.
    assert list(state["k"])[-1] == next(iter(run([events[-1]])[0]["k"]))
    state, _ = run([withdrawal(T0 + 60 * DAY, wid="late")], state)
    assert len(state["t"]) == 1  # history older than the long window is gone
    assert state["n"] == MAX_RECENT + 201


def test_known_destinations_are_an_lru_that_survives_json() -> None:
    events = [withdrawal(T0 + i * H, dest=f"d{i}", wid=f"w{i}") for i in range(MAX_KNOWN)]
    events.append(withdrawal(T0 + MAX_KNOWN * H, dest="d0", wid="again"))  # d0 used again
    events.append(withdrawal(T0 + (MAX_KNOWN + 1) * H, dest="new", wid="new"))
    state, feats = run(events)
    assert not feats[-2].new_destination  # d0 was still known
    # d0 moved to the recent end, so d1 (not d0) was forgotten for "new".
    _, again = run([withdrawal(T0 + 100 * H, dest="d0", wid="z")], json.loads(json.dumps(state)))
    assert not again[0].new_destination
    _, gone = run([withdrawal(T0 + 100 * H, dest="d1", wid="z")], json.loads(json.dumps(state)))
    assert gone[0].new_destination


def test_fan_in_counts_distinct_accounts_and_first_time_payers() -> None:
    state: dict[str, Any] | None = None
    out = []
    for i in range(5):
        acc = AccountFeatures.blank(1.0)._replace(new_destination=i < 3)
        state, dst = destination_step(
            state, withdrawal(T0 + i * H, account=f"a{i % 4}"), acc, PARAMS
        )
        state = json.loads(json.dumps(state))
        out.append(dst)
    assert [d.fan_in_count for d in out] == [1, 2, 3, 4, 4]
    assert [d.fan_in_new_count for d in out] == [1, 2, 3, 3, 3]
    # The model's inputs weigh the counts by the destination's youth: first paid 4 h before.
    youth = 1 / (1 + 4 * H / (ESTABLISHED_G * DAY))
    assert out[-1].age == 4 * H and out[-1].youth == pytest.approx(youth)
    assert named(_cold(), out[-1])["fan_in"] == pytest.approx(math.log(4 * youth))
    assert named(_cold(), out[-1])["fan_in_new"] == pytest.approx(math.log1p(3 * youth))
    # The fan-in window is one time unit G (a day here).
    state, later = destination_step(
        state, withdrawal(T0 + 4 * H + DAY, account="a9"), _cold(), PARAMS
    )
    assert later.fan_in_count == 1  # a0's payment (T0 + 4 h) is exactly G earlier: out
    # First-time payers are also counted over the long window (5 G): a scam gathers victims
    # a few a day. a0..a2 paid it first at T0 .. T0 + 2 h; a9 is new (cold: first payment).
    assert later.fan_in_new_count == 1 and later.new_payers_long == 4
    _, much_later = destination_step(
        state, withdrawal(T0 + 2 * H + 5 * DAY, account="a8"), _cold(), PARAMS
    )
    assert much_later.new_payers_long == 2  # a9 and a8; a2's first payment is 5 G earlier


def test_an_established_destination_counts_its_payers_less() -> None:
    """The same fan-in (8 accounts in G, all first-time payers) at a destination first paid
    just before, and at one first paid 60 G before: half weight at ESTABLISHED_G, 1/3 at
    twice that, in G of the model's params (so invariant to stretching time)."""

    def fan_in_at(first_paid: float) -> DestinationFeatures:
        known = _cold()._replace(new_destination=False)  # not a first-time payer
        state, _ = destination_step(None, withdrawal(first_paid, account="old"), known, PARAMS)
        dst = DestinationFeatures(0, 0, 0)
        for i in range(8):
            acc = _cold()._replace(new_destination=True)
            state, dst = destination_step(
                state, withdrawal(T0 + 100 * DAY + i * H, account=f"a{i}"), acc, PARAMS
            )
        return dst

    fresh = fan_in_at(T0 + 100 * DAY - H)
    established = fan_in_at(T0 + 100 * DAY - 2 * ESTABLISHED_G * DAY)
    assert fresh.fan_in_new_count == established.fan_in_new_count == 8
    assert established.youth == pytest.approx(
        1 / (1 + (2 * ESTABLISHED_G * DAY + 7 * H) / (ESTABLISHED_G * DAY))
    )
    assert fresh.youth > 0.98
    assert named(_cold(), established)["fan_in_new"] < named(_cold(), fresh)["fan_in_new"]
    assert named(_cold(), established)["new_payers"] == pytest.approx(
        math.log1p(8 * established.youth)
    )
    assert "first paid 60.3 days ago" in reason_detail("fan_in", _cold(), established).detail
    # A late payment older than the first one known becomes the first.
    state, _ = destination_step(None, withdrawal(T0 + DAY, account="a"), _cold(), PARAMS)
    state, late = destination_step(state, withdrawal(T0, account="b"), _cold(), PARAMS)
    assert late.age == 0.0 and state["f"] == T0


def test_destination_state_of_version_2_upgrades_with_its_oldest_payment() -> None:
    state = {
        "v": 2,
        "a": {"x": [T0 + H, 0.0], "y": [T0 + 2 * H, T0 + 2 * H]},
        "L": [T0 + H, T0 + 2 * H],
        "N": [T0 + 2 * H],
    }
    state, dst = destination_step(
        json.loads(json.dumps(state)), withdrawal(T0 + 3 * H, account="z"), _cold(), PARAMS
    )
    assert state["v"] == DESTINATION_STATE_VERSION == 3
    assert state["f"] == T0 + H and dst.age == 2 * H and dst.fan_in_count == 3


def _cold() -> AccountFeatures:
    return run([withdrawal(T0)])[1][0]


def test_fan_in_state_is_bounded_and_forgets_the_least_recent_payer() -> None:
    state: dict[str, Any] | None = None
    for i in range(MAX_PAYERS + 10):
        state, dst = destination_step(state, withdrawal(T0 + i, account=f"a{i}"), _cold(), PARAMS)
    assert state is not None
    assert len(state["a"]) == len(state["L"]) == MAX_PAYERS
    assert dst.fan_in_count == MAX_PAYERS + 1  # counted before the eviction
    # a10 (the oldest left) pays again: it moves to the recent end, a11 is the next to go.
    state, _ = destination_step(state, withdrawal(T0 + 1000, account="a10"), _cold(), PARAMS)
    state, _ = destination_step(state, withdrawal(T0 + 1001, account="new"), _cold(), PARAMS)
    assert state["L"] == sorted(state["L"]) and len(state["a"]) == MAX_PAYERS


def test_structuring_counts_withdrawals_just_under_the_assets_limit() -> None:
    rule = Structuring({"USDT": 10_000.0}, band=0.9, count=3)
    near = [
        withdrawal(T0 + i * H, 9_500.0, amount=9_500.0, wid=f"n{i}", dest="s") for i in range(3)
    ]
    _, feats = run(near, structuring=rule)
    assert [f.near_limit for f in feats] == [1, 2, 3]
    # Off by default; other assets and amounts at or over the limit do not count.
    _, feats = run(near)
    assert [f.near_limit for f in feats] == [0, 0, 0]
    other = [withdrawal(T0, 9_500.0, asset="BTC", wid="b"), withdrawal(T0 + 1, 10_000.0, wid="c")]
    _, feats = run(other, structuring=rule)
    assert [f.near_limit for f in feats] == [0, 0]


def test_a_version_1_state_carries_its_history_over() -> None:
    old = {
        "v": 1,
        "ts": [T0, T0 + DAY],
        "usd": [50.0, 60.0],
        "near": [],
        "la": [math.log(50.0), math.log(60.0)],
        "known": {"abcd": T0},
        "n": 2,
        "first": T0,
        "last": T0 + DAY,
        "seen": {"w-old": [T0, 1.0, 2.0]},
        "cool": T0 + 9 * DAY,
    }
    state = upgrade_account_state(old, PARAMS)
    assert state["v"] == ACCOUNT_STATE_VERSION and state["n"] == 2
    assert state["t"] == [T0, T0 + DAY] and state["h"] == [0.0, 0.0]
    assert state["g"] == DAY and "seen" not in state and state["cool"] == T0 + 9 * DAY
    assert state["k"] == {"abcd": T0}
    _, feats = run([withdrawal(T0 + 2 * DAY)], state)
    assert feats[0].n == 2 and feats[0].cooldown


def test_a_version_2_state_gains_the_excess_list_and_drops_its_dedupe_memory() -> None:
    state, _ = run(daily(5))
    old = json.loads(json.dumps(state))
    del old["h"]
    old["v"] = 2
    old["seen"] = {"w-old": [T0, 1.0, 2.0]}  # features of the old layout (one field fewer)
    upgraded = upgrade_account_state(old, PARAMS)
    assert upgraded["v"] == ACCOUNT_STATE_VERSION and "seen" not in upgraded
    assert upgraded["h"] == [0.0] * len(upgraded["t"]) and upgraded["n"] == 5
    _, feats = run([withdrawal(T0 + 5 * DAY)], upgraded)
    assert feats[0].n == 5


def test_recent_excess_carries_the_earlier_unusual_withdrawals_of_the_long_window() -> None:
    history, _ = run(daily(30))  # 100 a day
    unit = PARAMS.unit_s
    t = T0 + 40 * DAY
    big = [withdrawal(t + i * 60, 5000.0, wid=f"big{i}") for i in range(3)]
    _, feats = run([*big, withdrawal(t + 180, 100.0, wid="small")], history)
    assert feats[0].recent_excess == 0.0  # nothing before it in the long window
    first = feats[0].amount_vs_history
    assert first > 1.0
    # The mean over the earlier withdrawals of the long window.
    assert feats[1].recent_excess == pytest.approx(first)
    assert feats[2].recent_excess == pytest.approx((first + feats[1].amount_vs_history) / 2)
    # An ordinary withdrawal right after them carries their excess; past the long window none.
    earlier = [max(0.0, f.amount_vs_history) for f in feats[:3]]
    assert feats[3].recent_excess == pytest.approx(sum(earlier) / 3)
    assert feats[3].recent_excess > 0.5 * first
    assert feats[3].amount_vs_history < 0.5
    _, later = run([*big, withdrawal(t + 6 * unit, 100.0, wid="later")], history)
    assert later[3].recent_excess == 0.0


def test_labels_release_and_cooldown() -> None:
    state, _ = run(daily(5))
    legit = SimpleNamespace(
        label="legit", reported_at=T0 + 5 * DAY, destination="fresh", withdrawal_id=None
    )
    state = apply_account_label(state, legit, PARAMS, cooldown_s=DAY, release_s=DAY)
    _, feats = run([withdrawal(T0 + 5 * DAY + 60, dest="fresh")], state)
    assert not feats[0].new_destination  # the analyst taught the destination
    fraud = SimpleNamespace(label="fraud", reported_at=T0 + 6 * DAY)
    state = apply_account_label(state, fraud, PARAMS, cooldown_s=DAY, release_s=DAY)
    _, feats = run([withdrawal(T0 + 6 * DAY + 60)], state)
    assert feats[0].cooldown


def test_a_destination_report_covers_every_withdrawal_decided_after_it() -> None:
    fraud = SimpleNamespace(
        label="fraud", reported_at=T0 + DAY, label_id="r-1", source="analyst", account_id=None
    )
    state = apply_destination_label(None, fraud, report_s=7 * DAY)
    # Requested a minute before the report, decided after it (a backlog): covered.
    _, early = destination_step(state, withdrawal(T0 + DAY - 60), _cold(), PARAMS)
    assert early.reported and early.reported_by == "analyst r-1"
    _, within = destination_step(state, withdrawal(T0 + 7 * DAY), _cold(), PARAMS)
    assert within.reported
    _, expired = destination_step(state, withdrawal(T0 + 8 * DAY + 1), _cold(), PARAMS)
    assert not expired.reported


def test_every_feature_has_a_reason_with_its_numbers() -> None:
    _, feats = run([*daily(10, 50.0), withdrawal(T0 + 9 * DAY + 30, 5000.0, dest="x")])
    dst = DestinationFeatures(7, 5, 9)
    for family, names in FAMILIES.items():
        for name in names:
            reason = reason_detail(name, feats[-1], dst)
            assert reason.code == name and reason.family == family and reason.detail
    assert "5,000.00" in reason_detail("amount_vs_history", feats[-1], dst).detail
    assert "7 distinct accounts" in reason_detail("fan_in", feats[-1], dst).detail
    with pytest.raises(ValueError):
        reason_detail("nope", feats[-1], dst)


def test_account_features_json_round_trip_by_name() -> None:
    _, feats = run(daily(3))
    doc = json.loads(json.dumps(feats[-1].to_json()))
    assert AccountFeatures.from_json(doc) == feats[-1]
    assert AccountFeatures.from_json({**doc, "added_later": 1}) == feats[-1]
