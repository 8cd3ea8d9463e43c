"""Tests of the synthetic withdrawal generator (detector.offline.simulate)."""

from __future__ import annotations

import itertools
import json
import math
import re
import statistics
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.cli import main
from detector.errors import ConfigError, KafkaSetupError
from detector.labels import Label, validate_label
from detector.local.traffic import PROGRESS_EVERY, stream_to_kafka
from detector.offline.dataset import load_labels
from detector.offline.simulate import (
    ASSETS,
    DEFAULT_START,
    NORMAL_LABEL,
    SCENARIOS,
    STRUCTURING_LIMIT_USD,
    SimConfig,
    attack_labels,
    encode_event,
    generate,
    write_jsonl,
    write_labels,
)

Event = dict[str, Any]

_FIELDS = {
    "withdrawal_id",
    "account_id",
    "asset",
    "amount",
    "amount_usd",
    "destination",
    "requested_at",
    "metadata",
}
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_DECIMAL = re.compile(r"^\d+(\.\d+)?$")
_PRICES = {a.symbol: a.price_usd for a in ASSETS}
_DAY_S = 86_400.0


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def contract_violations(event: Event) -> list[str]:
    """A small local checker of the withdrawals contract (the lead's validator is separate)."""
    bad: list[str] = []
    if set(event) != _FIELDS:
        bad.append(f"fields {sorted(set(event) ^ _FIELDS)}")
        return bad
    for name in ("withdrawal_id", "account_id", "asset", "destination"):
        if not isinstance(event[name], str) or not event[name]:
            bad.append(f"{name} not a non-empty string")
    amount = event["amount"]
    if not isinstance(amount, str) or not _DECIMAL.match(amount) or Decimal(amount) <= 0:
        bad.append(f"amount {amount!r}")
    usd = event["amount_usd"]
    if isinstance(usd, bool) or not isinstance(usd, int | float) or not math.isfinite(usd):
        bad.append(f"amount_usd {usd!r}")
    elif usd < 0:
        bad.append(f"amount_usd {usd!r} < 0")
    stamp = event["requested_at"]
    if not isinstance(stamp, str) or not _RFC3339.match(stamp):
        bad.append(f"requested_at {stamp!r}")
    meta = event["metadata"]
    if not isinstance(meta, dict):
        bad.append("metadata not an object")
    else:
        label = meta.get("label")
        if label not in (NORMAL_LABEL, *SCENARIOS):
            bad.append(f"label {label!r}")
        if (label == NORMAL_LABEL) == ("attack_id" in meta):
            bad.append("attack_id must be present exactly on attack events")
    return bad


def ts(event: Event) -> float:
    return datetime.fromisoformat(event["requested_at"]).timestamp()


def label(event: Event) -> str:
    return str(event["metadata"]["label"])


def by_attack(events: list[Event]) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        if "attack_id" in e["metadata"]:
            out[e["metadata"]["attack_id"]].append(e)
    return out


def by_account(events: list[Event]) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        out[e["account_id"]].append(e)
    return out


def normal_median(events: list[Event]) -> float:
    return statistics.median(e["amount_usd"] for e in events if label(e) == NORMAL_LABEL)


def earlier(account_events: list[Event], first: Event) -> list[Event]:
    """Events of the account strictly before ``first`` in the (sorted) output."""
    return account_events[: account_events.index(first)]


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return generate(SimConfig())


@pytest.fixture(scope="module")
def attacks(events: list[Event]) -> dict[str, list[Event]]:
    return by_attack(events)


@pytest.fixture(scope="module")
def accounts(events: list[Event]) -> dict[str, list[Event]]:
    return by_account(events)


def of_scenario(attacks: dict[str, list[Event]], scenario: str) -> list[list[Event]]:
    return [evs for evs in attacks.values() if label(evs[0]) == scenario]


# --------------------------------------------------------------------------------------
# Whole-output properties
# --------------------------------------------------------------------------------------


def test_same_seed_same_output_different_seed_different(events: list[Event]) -> None:
    assert generate(SimConfig()) == events
    other = generate(SimConfig(seed=8))
    assert other != events
    assert {e["withdrawal_id"] for e in other}.isdisjoint({e["withdrawal_id"] for e in events})


def test_every_event_meets_the_contract(events: list[Event]) -> None:
    problems = {e["withdrawal_id"]: contract_violations(e) for e in events}
    assert {k: v for k, v in problems.items() if v} == {}


def test_sorted_by_time_and_ids_unique(events: list[Event]) -> None:
    times = [ts(e) for e in events]
    assert times == sorted(times)
    assert len({e["withdrawal_id"] for e in events}) == len(events)


def test_default_size_and_speed() -> None:
    began = time.perf_counter()
    out = generate(SimConfig())
    assert time.perf_counter() - began < 5.0
    assert 15_000 <= len(out) <= 60_000
    assert len({e["account_id"] for e in out}) > 450


def test_amount_matches_a_plausible_price(events: list[Event]) -> None:
    for e in events[::7]:
        implied = e["amount_usd"] / float(e["amount"])
        assert 0.5 < implied / _PRICES[e["asset"]] < 2.0, e


def test_addresses_look_like_their_chain(events: list[Event]) -> None:
    patterns = {
        "BTC": r"bc1q[02-9ac-hj-np-z]{38}",
        "LTC": r"ltc1q[02-9ac-hj-np-z]{38}",
        "ETH": r"0x[0-9a-f]{40}",
        "USDC": r"0x[0-9a-f]{40}",
        "USDT": r"T[1-9A-HJ-NP-Za-km-z]{33}",
        "TRX": r"T[1-9A-HJ-NP-Za-km-z]{33}",
        "SOL": r"[1-9A-HJ-NP-Za-km-z]{44}",
        "XRP": r"r[1-9A-HJ-NP-Za-km-z]{33}",
        "DOGE": r"D[1-9A-HJ-NP-Za-km-z]{33}",
        "ADA": r"addr1q[02-9ac-hj-np-z]{97}",
    }
    for e in events:
        assert re.fullmatch(patterns[e["asset"]], e["destination"]), e


def test_period_and_warmup(events: list[Event]) -> None:
    config = SimConfig()
    start = config.start.timestamp()
    end = start + config.days * _DAY_S
    warm = start + config.warmup_fraction * config.days * _DAY_S
    assert all(ts(e) < end + 3_600 for e in events)
    assert all(ts(e) >= warm for e in events if label(e) != NORMAL_LABEL)
    # Only dormant accounts have history before the start, and it ends >= 30 days earlier.
    early = [e for e in events if ts(e) < start]
    assert early
    assert {label(e) for e in early} == {NORMAL_LABEL}
    assert max(ts(e) for e in early) <= warm - 30 * _DAY_S


def test_labels_and_attack_counts(events: list[Event], attacks: dict[str, list[Event]]) -> None:
    counts = Counter(label(e) for e in events)
    assert set(counts) == {NORMAL_LABEL, *SCENARIOS}
    assert counts[NORMAL_LABEL] > 0.9 * len(events)
    per_scenario = Counter(label(evs[0]) for evs in attacks.values())
    assert per_scenario == dict.fromkeys(SCENARIOS, 8)
    for attack_id, evs in attacks.items():
        assert {label(e) for e in evs} == {attack_id.rsplit("-", 1)[0]}


def test_no_attacks_means_only_normal() -> None:
    for config in (
        SimConfig(accounts=80, days=5, attacks_per_scenario=0),
        SimConfig(accounts=80, days=5, scenarios=()),
    ):
        out = generate(config)
        assert out
        assert {label(e) for e in out} == {NORMAL_LABEL}
        assert not any("attack_id" in e["metadata"] for e in out)


def test_scenario_subset() -> None:
    out = generate(
        SimConfig(accounts=150, days=7, attacks_per_scenario=3, scenarios=("fan_in", "structuring"))
    )
    per_scenario = Counter(label(evs[0]) for evs in by_attack(out).values())
    assert per_scenario == {"fan_in": 3, "structuring": 3}


# --------------------------------------------------------------------------------------
# Normal traffic realism
# --------------------------------------------------------------------------------------


def test_normal_amounts_heavy_tailed(events: list[Event], accounts: dict[str, list[Event]]) -> None:
    usd = sorted(e["amount_usd"] for e in events if label(e) == NORMAL_LABEL)
    p50, p99 = usd[len(usd) // 2], usd[int(len(usd) * 0.99)]
    assert p99 / p50 > 20
    medians = sorted(
        normal_median(evs)
        for evs in accounts.values()
        if any(label(e) == NORMAL_LABEL for e in evs)
    )
    assert medians[len(medians) // 10] < 100  # small retail
    assert medians[-1] > 50_000  # whales


def test_shared_destinations_have_many_legit_accounts(events: list[Event]) -> None:
    payers: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if label(e) == NORMAL_LABEL:
            payers[e["destination"]].add(e["account_id"])
    popular = [d for d, accs in payers.items() if len(accs) >= 10]
    assert 5 <= len(popular) <= 20


def test_naive_rules_have_false_positives(accounts: dict[str, list[Event]]) -> None:
    """Normal traffic trips amount, new-destination, velocity and dormancy rules."""
    fired: Counter[str] = Counter()
    total = 0
    for evs in accounts.values():
        normal = [e for e in evs if label(e) == NORMAL_LABEL]
        if not normal:
            continue
        median = normal_median(normal)
        seen: set[str] = set()
        times = [ts(e) for e in normal]
        for i, e in enumerate(normal):
            total += 1
            fired["amount>5x"] += e["amount_usd"] > 5 * median
            fired["new_dest"] += bool(seen) and e["destination"] not in seen
            fired["10_in_10min"] += i >= 9 and times[i] - times[i - 9] <= 600
            fired["gap>30d"] += i >= 1 and times[i] - times[i - 1] > 30 * _DAY_S
            seen.add(e["destination"])
    assert 0.003 < fired["amount>5x"] / total < 0.05
    assert 0.02 < fired["new_dest"] / total < 0.12
    assert fired["10_in_10min"] > 50
    assert fired["gap>30d"] >= 1


def test_daily_cycle(events: list[Event]) -> None:
    hours = Counter(datetime.fromisoformat(e["requested_at"]).hour for e in events)
    assert max(hours.values()) > 1.3 * min(hours.values())


# --------------------------------------------------------------------------------------
# Attack signatures
# --------------------------------------------------------------------------------------


def test_account_takeover_signature(
    attacks: dict[str, list[Event]], accounts: dict[str, list[Event]]
) -> None:
    for evs in of_scenario(attacks, "account_takeover"):
        assert 1 <= len(evs) <= 3
        assert len({e["account_id"] for e in evs}) == 1
        assert len({e["destination"] for e in evs}) == 1
        assert ts(evs[-1]) - ts(evs[0]) <= 15 * 60
        history = accounts[evs[0]["account_id"]]
        before = earlier(history, evs[0])
        assert len(before) >= 3
        assert evs[0]["destination"] not in {e["destination"] for e in before}
        assert sum(e["amount_usd"] for e in evs) >= 5 * normal_median(history)
        # The emptied account does nothing normal afterwards.
        assert all(label(e) != NORMAL_LABEL for e in history if ts(e) >= ts(evs[0]))


def test_scripted_burst_signature(
    attacks: dict[str, list[Event]], accounts: dict[str, list[Event]]
) -> None:
    for evs in of_scenario(attacks, "scripted_burst"):
        assert 10 <= len(evs) <= 60
        assert ts(evs[-1]) - ts(evs[0]) <= 10 * 60
        assert len({e["account_id"] for e in evs}) == 1
        dests = {e["destination"] for e in evs}
        assert 1 <= len(dests) <= 3
        before = earlier(accounts[evs[0]["account_id"]], evs[0])
        assert dests.isdisjoint({e["destination"] for e in before})


def test_dormant_wakeup_signature(
    attacks: dict[str, list[Event]], accounts: dict[str, list[Event]]
) -> None:
    for evs in of_scenario(attacks, "dormant_wakeup"):
        assert len({e["account_id"] for e in evs}) == 1
        history = accounts[evs[0]["account_id"]]
        before = earlier(history, evs[0])
        assert before, "a dormant account has history"
        assert ts(evs[0]) - ts(before[-1]) >= 30 * _DAY_S
        assert evs[0]["destination"] not in {e["destination"] for e in before}
        assert sum(e["amount_usd"] for e in evs) >= 5 * normal_median(history)


def test_fan_in_signature(
    attacks: dict[str, list[Event]], accounts: dict[str, list[Event]]
) -> None:
    for evs in of_scenario(attacks, "fan_in"):
        assert len({e["destination"] for e in evs}) == 1
        senders = [e["account_id"] for e in evs]
        assert 10 <= len(set(senders)) == len(senders) <= 40
        assert ts(evs[-1]) - ts(evs[0]) <= 2 * 3_600
        ratios = [e["amount_usd"] / normal_median(accounts[e["account_id"]]) for e in evs]
        assert 0.5 < statistics.median(ratios) < 2.0  # habit-sized amounts
        assert {e["destination"] for e in evs}.isdisjoint(
            {e["destination"] for e in accounts[evs[0]["account_id"]] if label(e) == NORMAL_LABEL}
        )


def test_structuring_signature(attacks: dict[str, list[Event]]) -> None:
    for evs in of_scenario(attacks, "structuring"):
        assert len(evs) >= 8
        assert len({e["account_id"] for e in evs}) == 1
        assert len({e["destination"] for e in evs}) <= 3
        assert ts(evs[-1]) - ts(evs[0]) >= 3_600
        for e in evs:
            assert 0.9 * STRUCTURING_LIMIT_USD <= e["amount_usd"] < STRUCTURING_LIMIT_USD


def test_single_account_victims_are_distinct(attacks: dict[str, list[Event]]) -> None:
    shared = ("fan_in", "scam_address")
    solo = [evs[0]["account_id"] for evs in attacks.values() if label(evs[0]) not in shared]
    assert len(solo) == len(set(solo)) == (len(SCENARIOS) - len(shared)) * 8
    many = {e["account_id"] for evs in attacks.values() if label(evs[0]) in shared for e in evs}
    assert many.isdisjoint(solo)


def _local_peak_hour(history: list[Event]) -> float:
    """The hour (UTC) around which an account's normal withdrawals concentrate: its local
    afternoon peak (circular mean of the hours)."""
    angles = [2 * math.pi * _hour(e) / 24 for e in history if label(e) == NORMAL_LABEL]
    mean = math.atan2(sum(map(math.sin, angles)), sum(map(math.cos, angles)))
    return (mean * 24 / (2 * math.pi)) % 24


def _hour(event: Event) -> float:
    moment = datetime.fromisoformat(event["requested_at"])
    return moment.hour + moment.minute / 60


def test_night_takeover_signature(
    attacks: dict[str, list[Event]], accounts: dict[str, list[Event]]
) -> None:
    night = of_scenario(attacks, "night_takeover")
    assert len(night) == 8
    offsets: list[float] = []
    for evs in night:
        assert 2 <= len(evs) <= 5
        assert len({e["account_id"] for e in evs}) == 1
        assert 1 <= len({e["destination"] for e in evs}) <= 2
        assert 3_600 - 1 <= ts(evs[-1]) - ts(evs[0]) <= 2 * 3_600 + 1  # an hour or two
        history = accounts[evs[0]["account_id"]]
        before = earlier(history, evs[0])
        assert len(before) >= 3
        assert {e["destination"] for e in evs}.isdisjoint({e["destination"] for e in before})
        habit = normal_median(history)
        for e in evs:
            assert 1.5 * habit <= e["amount_usd"] <= 25 * habit  # 3-10x the habit, noisy median
        # Not a drain: the owner goes on withdrawing afterwards (when the period allows).
        later = [e for e in history if label(e) == NORMAL_LABEL and ts(e) > ts(evs[-1])]
        offsets += [(_hour(e) - _local_peak_hour(history)) % 24 for e in evs]
        assert later or ts(evs[-1]) > ts(history[-1]) - 3 * _DAY_S
    ratios = [
        e["amount_usd"] / normal_median(accounts[e["account_id"]]) for evs in night for e in evs
    ]
    assert 3.0 <= statistics.median(ratios) <= 10.0
    # In the account's night: 00:00-06:00 local is 9-15 h after its 15:00 local peak (the
    # peak estimated from its own withdrawals, so allow a few hours of slack).
    assert all(6.0 <= o <= 18.0 for o in offsets), offsets
    assert 9.0 <= statistics.median(offsets) <= 15.0


def test_scam_address_signature(
    attacks: dict[str, list[Event]], accounts: dict[str, list[Event]]
) -> None:
    scams = of_scenario(attacks, "scam_address")
    assert len(scams) == 8
    legit = {e["destination"] for e in accounts_events(accounts) if label(e) == NORMAL_LABEL}
    for evs in scams:
        assert len({e["destination"] for e in evs}) == 1
        assert evs[0]["destination"] not in legit
        payers = Counter(e["account_id"] for e in evs)
        assert 8 <= len(payers) <= 30
        assert max(payers.values()) <= 3
        assert ts(evs[-1]) - ts(evs[0]) >= 3 * _DAY_S  # over days to weeks
        ratios = [e["amount_usd"] / normal_median(accounts[e["account_id"]]) for e in evs]
        assert 0.6 < statistics.median(ratios) < 1.6  # near the payer's usual amount
        for e in evs:  # victims keep their normal life
            assert any(label(x) == NORMAL_LABEL for x in accounts[e["account_id"]])


def accounts_events(accounts: dict[str, list[Event]]) -> list[Event]:
    return [e for evs in accounts.values() for e in evs]


# --------------------------------------------------------------------------------------
# Labels (fraud reports)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reports(events: list[Event]) -> list[Label]:
    return attack_labels(events, SimConfig())


def test_labels_are_valid_deterministic_and_cover_every_attack(
    events: list[Event], attacks: dict[str, list[Event]], reports: list[Label]
) -> None:
    for report in reports:
        assert validate_label(json.loads(json.dumps(report.to_json()))) == report
        assert report.is_fraud
    assert len({r.label_id for r in reports}) == len(reports)
    assert [r.reported_at for r in reports] == sorted(r.reported_at for r in reports)
    assert attack_labels(events, SimConfig()) == reports
    by_id = {e["withdrawal_id"]: e for e in events}
    reported = {by_id[r.withdrawal_id or ""]["metadata"]["attack_id"] for r in reports}
    assert reported == set(attacks)
    for report in reports:
        event = by_id[report.withdrawal_id or ""]
        assert report.destination == event["destination"]
        assert report.reported_at > ts(event)  # reported after it happened
        assert report.reported_at - ts(event) <= 10 * _DAY_S + 1


def test_scam_reports_name_the_address_days_after_the_first_payment(
    attacks: dict[str, list[Event]], reports: list[Label]
) -> None:
    for evs in of_scenario(attacks, "scam_address"):
        mine = [r for r in reports if r.destination == evs[0]["destination"]]
        assert mine
        assert all(r.source == "customer_report" and r.account_id is None for r in mine)
        first = min(r.reported_at for r in mine)
        assert 2 * _DAY_S <= first - ts(evs[0]) <= 5 * _DAY_S
        assert any(ts(e) > first for e in evs) or ts(evs[-1]) - ts(evs[0]) < 5 * _DAY_S


def test_single_account_attacks_are_reported_with_the_account(
    attacks: dict[str, list[Event]], reports: list[Label]
) -> None:
    by_withdrawal = {r.withdrawal_id: r for r in reports}
    for evs in attacks.values():
        scenario = label(evs[0])
        if scenario in ("fan_in", "scam_address"):
            continue
        mine = [
            by_withdrawal[e["withdrawal_id"]] for e in evs if e["withdrawal_id"] in by_withdrawal
        ]
        assert {r.destination for r in mine} == {e["destination"] for e in evs}
        assert {r.account_id for r in mine} == {evs[0]["account_id"]}
        assert len({r.reported_at for r in mine}) == 1  # one report, one label per address
        assert {r.source for r in mine} == {
            "analyst" if scenario == "structuring" else "customer_report"
        }


def test_write_labels_round_trip(reports: list[Label], tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    assert write_labels(reports, path) == len(reports)
    assert load_labels(path) == reports


def test_simulate_cli_writes_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, labels_out = tmp_path / "w.jsonl", tmp_path / "l.jsonl"
    args = ["simulate", "--out", str(out), "--accounts", "120", "--days", "5", "--seed", "3"]
    assert main([*args, "--attacks-per-scenario", "1", "--labels-out", str(labels_out)]) == 0
    config = SimConfig(accounts=120, days=5.0, seed=3, attacks_per_scenario=1)
    expected = attack_labels(generate(config), config)
    assert load_labels(labels_out) == expected
    assert f"wrote {len(expected)} labels" in capsys.readouterr().out


# --------------------------------------------------------------------------------------
# A test period, shifted worlds
# --------------------------------------------------------------------------------------


def test_test_period_has_its_own_attacks() -> None:
    config = SimConfig(
        accounts=300, days=20, test_days=8, attacks_per_scenario=1, test_attacks_per_scenario=3
    )
    out = generate(config)
    start = config.start.timestamp()
    cut = config.test_start.timestamp()
    assert cut == start + 12 * _DAY_S
    warm = start + config.warmup_fraction * 12 * _DAY_S
    groups = by_attack(out)
    history = Counter(label(evs[0]) for evs in groups.values() if ts(evs[0]) < cut)
    test = Counter(label(evs[0]) for evs in groups.values() if ts(evs[0]) >= cut)
    assert history == dict.fromkeys(SCENARIOS, 1)
    assert test == dict.fromkeys(SCENARIOS, 3)
    for evs in groups.values():
        inside_history = ts(evs[0]) < cut
        assert all((ts(e) < cut) == inside_history for e in evs)  # none straddles the cut
        assert ts(evs[0]) >= warm
    # the same people on both sides of the cut
    before = {e["account_id"] for e in out if ts(e) < cut}
    after = {e["account_id"] for e in out if ts(e) >= cut}
    assert len(before & after) > 0.9 * len(after)


@pytest.mark.parametrize("scale", [0.01, 100.0])
def test_amount_scale_scales_every_amount_and_nothing_else(
    scale: float, events: list[Event]
) -> None:
    scaled = generate(SimConfig(amount_scale=scale))
    assert len(scaled) == len(events)
    assert all(not contract_violations(e) for e in scaled)
    for a, b in zip(events, scaled, strict=True):
        assert (a["account_id"], a["destination"], a["requested_at"], a["metadata"]) == (
            b["account_id"],
            b["destination"],
            b["requested_at"],
            b["metadata"],
        )
        assert b["amount_usd"] == pytest.approx(a["amount_usd"] * scale, rel=2e-3)
        assert float(b["amount"]) == pytest.approx(float(a["amount"]) * scale, rel=2e-3)

    def reported(labels: list[Label]) -> list[tuple[Any, ...]]:
        return sorted(
            (x.reported_at, x.source, x.account_id or "", x.destination or "") for x in labels
        )

    # the same reports (withdrawal ids differ: they derive from the configuration)
    ours = reported(attack_labels(scaled, SimConfig(amount_scale=scale)))
    assert ours == reported(attack_labels(events, SimConfig()))
    limit = STRUCTURING_LIMIT_USD * scale  # the insider's limit moves with the currency
    for evs in of_scenario(by_attack(scaled), "structuring"):
        assert all(0.9 * limit <= e["amount_usd"] < limit for e in evs)


@pytest.mark.parametrize("pace", [0.2, 5.0])
def test_activity_scale_scales_rates_and_episode_durations(
    pace: float, events: list[Event]
) -> None:
    config = SimConfig(activity_scale=pace)
    shifted = generate(config)
    assert all(not contract_violations(e) for e in shifted)
    normal = sum(1 for e in events if label(e) == NORMAL_LABEL)
    normal_shifted = sum(1 for e in shifted if label(e) == NORMAL_LABEL)
    assert 0.75 * pace < normal_shifted / normal < 1.25 * pace
    groups = by_attack(shifted)
    assert Counter(label(evs[0]) for evs in groups.values()) == dict.fromkeys(SCENARIOS, 8)
    for evs in of_scenario(groups, "scripted_burst"):
        assert ts(evs[-1]) - ts(evs[0]) <= 480 / pace + 1
    for evs in of_scenario(groups, "account_takeover"):
        assert ts(evs[-1]) - ts(evs[0]) <= 480 / pace + 1
    for evs in of_scenario(groups, "structuring"):
        assert ts(evs[-1]) - ts(evs[0]) <= 12 * 3_600 / pace + 1
    for evs in of_scenario(groups, "night_takeover"):  # stays inside the night (6 h)
        assert ts(evs[-1]) - ts(evs[0]) <= min(2 * 3_600 / pace, 6 * 3_600) + 1
    end = SimConfig().start.timestamp() + SimConfig().days * _DAY_S
    assert all(ts(e) < end + 3_600 for e in shifted)


def test_scaled_worlds_are_deterministic() -> None:
    config = SimConfig(accounts=150, days=6, amount_scale=0.01, activity_scale=5.0)
    assert generate(config) == generate(config)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    accounts=st.integers(80, 200),
    days=st.floats(1.0, 10.0),
    attacks_per_scenario=st.integers(0, 2),
    warmup=st.floats(0.0, 0.9),
)
def test_small_configs_are_valid(
    seed: int, accounts: int, days: float, attacks_per_scenario: int, warmup: float
) -> None:
    config = SimConfig(
        accounts=accounts,
        days=days,
        seed=seed,
        attacks_per_scenario=attacks_per_scenario,
        warmup_fraction=warmup,
    )
    out = generate(config)
    assert all(not contract_violations(e) for e in out)
    times = [ts(e) for e in out]
    assert times == sorted(times)
    assert len({e["withdrawal_id"] for e in out}) == len(out)
    per_scenario = Counter(label(evs[0]) for evs in by_attack(out).values())
    expected = dict.fromkeys(SCENARIOS, attacks_per_scenario) if attacks_per_scenario else {}
    assert per_scenario == expected


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"accounts": 0},
        {"days": 0.0},
        {"days": math.nan},
        {"attacks_per_scenario": -1},
        {"warmup_fraction": 1.0},
        {"warmup_fraction": -0.1},
        {"scenarios": ("account_takeover", "phishing")},
        {"scenarios": ("fan_in", "fan_in")},
        {"start": datetime(2026, 10, 1)},  # naive
        {"amount_scale": 0.0},
        {"amount_scale": -1.0},
        {"amount_scale": math.nan},
        {"activity_scale": 0.0},
        {"activity_scale": math.inf},
        {"test_days": 14.0},
        {"test_days": -1.0},
        {"test_attacks_per_scenario": 2},  # without a test period
        {"test_days": 5.0, "test_attacks_per_scenario": -1},
    ],
)
def test_bad_config_raises(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        SimConfig(**kwargs)


def test_too_few_accounts_raises() -> None:
    with pytest.raises(ConfigError):
        generate(SimConfig(accounts=12, days=3, attacks_per_scenario=8))


def test_start_and_zone_respected() -> None:
    start = datetime(2027, 1, 1, 9, 0, tzinfo=UTC) + timedelta(0)
    out = generate(SimConfig(accounts=60, days=2, start=start, attacks_per_scenario=0))
    assert all(e["requested_at"].endswith("Z") for e in out)
    recent = [ts(e) for e in out if ts(e) >= start.timestamp()]
    assert len(recent) > 0.5 * len(out)
    assert SimConfig().start == DEFAULT_START


# --------------------------------------------------------------------------------------
# Output: JSONL and Kafka
# --------------------------------------------------------------------------------------


def test_write_jsonl_round_trip(events: list[Event], tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    sample = [*events[:300], {**events[0], "metadata": {"label": "normal", "note": "café ✓"}}]
    assert write_jsonl(sample, path) == len(sample)
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == len(sample)
    assert "café ✓".encode() in raw  # UTF-8, not \u escapes
    lines = raw.decode("utf-8").splitlines()
    assert [json.loads(line) for line in lines] == sample
    assert all(": " not in line and ", " not in line for line in lines[:300])  # compact


class FakeFuture:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def add_errback(self, fn: Callable[[Exception], Any]) -> FakeFuture:
        if self.error is not None:
            fn(self.error)
        return self


class FakeProducer:
    def __init__(self, error: Exception | None = None) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []
        self.flushed = 0
        self.closed = False
        self.error = error

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
        self.sent.append((topic, key, value))
        return FakeFuture(self.error)

    def flush(self, timeout: float | None = None) -> None:
        self.flushed += 1

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


def _stream(events: list[Event], producer: Any, **kwargs: Any) -> int:
    options: dict[str, Any] = {"rate": None, "shift_to_now": False, **kwargs}
    return stream_to_kafka(
        events,
        bootstrap_servers="127.0.0.1:1",
        topic="withdrawals",
        producer=producer,
        **options,
    )


def test_stream_serialises_keys_and_values(events: list[Event]) -> None:
    fake = FakeProducer()
    sample = events[:50]
    assert _stream(sample, fake) == 50
    assert fake.flushed == 1 and not fake.closed  # an injected producer is not closed
    assert [t for t, _, _ in fake.sent] == ["withdrawals"] * 50
    assert [k for _, k, _ in fake.sent] == [e["account_id"].encode() for e in sample]
    assert [v for _, _, v in fake.sent] == [encode_event(e) for e in sample]
    assert [json.loads(v or b"") for _, _, v in fake.sent] == sample


def test_stream_shift_to_now_keeps_gaps(events: list[Event]) -> None:
    fake = FakeProducer()
    sample = events[1000:1200]
    _stream(sample, fake, shift_to_now=True)
    moved = [json.loads(v or b"") for _, _, v in fake.sent]
    assert abs(ts(moved[0]) - time.time()) < 5.0
    gaps = [round((ts(b) - ts(a)) * 1000) for a, b in itertools.pairwise(sample)]
    moved_gaps = [round((ts(b) - ts(a)) * 1000) for a, b in itertools.pairwise(moved)]
    assert moved_gaps == gaps
    assert all(not contract_violations(e) for e in moved)
    assert [{**m, "requested_at": ""} for m in moved] == [{**e, "requested_at": ""} for e in sample]
    assert sample[0]["requested_at"] == events[1000]["requested_at"]  # input untouched


def test_stream_paces_and_stops_after_duration(events: list[Event]) -> None:
    fake = FakeProducer()
    began = time.monotonic()
    assert _stream(events[:21], fake, rate=200.0) == 21
    elapsed = time.monotonic() - began
    assert 0.095 <= elapsed < 2.0

    fake = FakeProducer()
    began = time.monotonic()
    sent = _stream(events[:1000], fake, rate=100.0, duration=0.2)
    assert 5 <= sent <= 25
    assert time.monotonic() - began < 1.0
    assert fake.flushed == 1

    assert _stream(events[:10], FakeProducer(), duration=0.0) == 0


def test_stream_reports_progress(events: list[Event]) -> None:
    seen: list[int] = []
    n = 2 * PROGRESS_EVERY + 7
    assert _stream(events[:n], FakeProducer(), on_progress=seen.append) == n
    assert seen == [PROGRESS_EVERY, 2 * PROGRESS_EVERY, n]


def test_stream_delivery_failure_raises(events: list[Event]) -> None:
    with pytest.raises(KafkaSetupError):
        _stream(events[:3], FakeProducer(error=RuntimeError("broker gone")))


def test_stream_rejects_bad_rate(events: list[Event]) -> None:
    for rate in (0.0, -1.0, math.inf):
        with pytest.raises(ConfigError):
            _stream(events[:3], FakeProducer(), rate=rate)


def test_stream_builds_an_idempotent_acks_all_producer(
    events: list[Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    with warnings.catch_warnings():  # kafka-python's import-time DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        import kafka

    made: list[dict[str, Any]] = []
    fakes: list[FakeProducer] = []

    class RecordingProducer(FakeProducer):
        DEFAULT_CONFIG = kafka.KafkaProducer.DEFAULT_CONFIG  # the installed kafka-python's

        def __init__(self, **config: Any) -> None:
            super().__init__()
            made.append(config)
            fakes.append(self)

    monkeypatch.setattr(kafka, "KafkaProducer", RecordingProducer)
    sent = stream_to_kafka(
        events[:5],
        bootstrap_servers="h1:9092, h2:9092",
        topic="t",
        rate=None,
        shift_to_now=False,
    )
    assert sent == 5
    assert made[0]["acks"] == "all"
    assert made[0]["enable_idempotence"] is True  # kafka-python >= 2.1 supports it
    assert made[0]["bootstrap_servers"] == ["h1:9092", "h2:9092"]
    assert "partitioner" not in made[0]  # default murmur2, like the Java client
    assert fakes[0].closed and fakes[0].flushed == 1
