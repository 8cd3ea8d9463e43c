"""Labels for the simulated attacks: who reports what, and when (the labels contract).

Every attack is eventually reported, as real ones are, some time after it happened; a
backtest applies each label at its ``reported_at`` (``detector replay --labels``) to measure
what feedback changes. One label names one destination (:mod:`detector.labels`): a report
about an attack that used several addresses is one label per address, all reported at the
same instant.

=================  ==================  =========================================  ============
scenario           who reports         subjects of each label                     delay
=================  ==================  =========================================  ============
account_takeover,  the account's       first withdrawal to the address, the       0.5-3 days
scripted_burst,    owner               account, the address                       after the
dormant_wakeup,    (customer_report)                                              first one
night_takeover
fan_in             each victim with    its withdrawal, its account, the address   0.5-5 days
                   probability 0.6
structuring        internal audit      first withdrawal to the address, the       3-10 days
                   (analyst)           insider's account, the address
scam_address       the first victim    its first payment and the address (the     2-5 days
                   for sure, every     account is not compromised, so it is not   (2-10 for
                   other one with      named)                                     the others)
                   probability 0.3
=================  ==================  =========================================  ============

Delays are people's reaction times: ``SimConfig.activity_scale`` does not change them.
Labels are drawn from their own random stream of ``SimConfig.seed`` (the withdrawals do not
depend on them) and are deterministic like the withdrawals.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from detector.events import parse_rfc3339
from detector.labels import Label
from detector.offline.simulate.output import encode_event
from detector.offline.simulate.world import SCENARIOS, SimConfig

__all__ = ["attack_labels", "write_labels"]

_DAY_S = 86_400.0  # seconds in a day (s)
# Entropy added to SimConfig.seed for the labels' own random stream (any fixed number).
_LABEL_STREAM = 0x1AB315


@dataclass(frozen=True)
class _Reporting:
    """How one scenario's attacks are reported."""

    source: str  # the label's source token
    delay_days: tuple[float, float]  # uniform delay after the (first) withdrawal (days)
    per_victim: bool  # every victim reports its own withdrawal (else one report per attack)
    probability: float  # chance that a victim reports (the first one always does)
    names_account: bool  # the label names the account (it is compromised)
    later_delay_days: tuple[float, float] | None = None  # other victims' delay, if different


_REPORTING: dict[str, _Reporting] = {
    "account_takeover": _Reporting("customer_report", (0.5, 3.0), False, 1.0, True),
    "scripted_burst": _Reporting("customer_report", (0.5, 3.0), False, 1.0, True),
    "dormant_wakeup": _Reporting("customer_report", (0.5, 3.0), False, 1.0, True),
    "night_takeover": _Reporting("customer_report", (0.5, 3.0), False, 1.0, True),
    "fan_in": _Reporting("customer_report", (0.5, 5.0), True, 0.6, True),
    "structuring": _Reporting("analyst", (3.0, 10.0), False, 1.0, True),
    "scam_address": _Reporting("customer_report", (2.0, 5.0), True, 0.3, False, (2.0, 10.0)),
}
assert set(_REPORTING) == set(SCENARIOS)


def attack_labels(events: Sequence[Mapping[str, Any]], config: SimConfig) -> list[Label]:
    """The fraud reports of every attack in ``events`` (the output of
    :func:`~detector.offline.simulate.generate` for ``config``), by ``reported_at``."""
    rng = np.random.default_rng([config.seed, _LABEL_STREAM])
    attacks: dict[str, list[Mapping[str, Any]]] = {}
    for event in events:
        attack_id = event["metadata"].get("attack_id")
        if attack_id is not None:
            attacks.setdefault(str(attack_id), []).append(event)
    out: list[Label] = []
    for attack_id in sorted(attacks):
        evs = sorted(attacks[attack_id], key=lambda e: parse_rfc3339(e["requested_at"]))
        scenario = str(evs[0]["metadata"]["label"])
        out += _reports(rng, _REPORTING[scenario], scenario, attack_id, evs)
    out.sort(key=lambda label: (label.reported_at, label.label_id))
    return out


def _reports(
    rng: np.random.Generator,
    how: _Reporting,
    scenario: str,
    attack_id: str,
    evs: Sequence[Mapping[str, Any]],
) -> list[Label]:
    """One attack's labels (``evs`` in time order)."""
    # (reporter's first withdrawal per destination, delay range) of each report
    groups: list[tuple[list[Mapping[str, Any]], tuple[float, float]]] = []
    if how.per_victim:
        firsts: dict[str, Mapping[str, Any]] = {}
        for e in evs:
            firsts.setdefault(str(e["account_id"]), e)
        for k, first in enumerate(firsts.values()):
            draw = float(rng.random())
            if k == 0 or draw < how.probability:
                delay = how.delay_days if k == 0 else (how.later_delay_days or how.delay_days)
                groups.append(([first], delay))
    else:
        per_dest: dict[str, Mapping[str, Any]] = {}
        for e in evs:
            per_dest.setdefault(str(e["destination"]), e)
        groups.append((list(per_dest.values()), how.delay_days))
    labels: list[Label] = []
    for report, delay in groups:
        at = parse_rfc3339(report[0]["requested_at"]) + float(rng.uniform(*delay)) * _DAY_S
        for e in report:
            who = "victim" if how.per_victim else "account owner"
            labels.append(
                Label.create(
                    label_id=f"sim:{attack_id}:{e['withdrawal_id']}",
                    label="fraud",
                    source=how.source,
                    reported_at=at,
                    withdrawal_id=str(e["withdrawal_id"]),
                    account_id=str(e["account_id"]) if how.names_account else None,
                    destination=str(e["destination"]),
                    note=f"simulated {scenario} ({attack_id}), reported by the {who}",
                )
            )
    return labels


def write_labels(labels: Iterable[Label], path: str | os.PathLike[str]) -> int:
    """Write one label document per line (compact UTF-8 JSON); return the number of lines."""
    count = 0
    with open(path, "wb") as out:
        for label in labels:
            out.write(encode_event(label.to_json()) + b"\n")
            count += 1
    return count
