"""What counts as an attack, and the quality tally every report uses (one definition).

A withdrawal's ground truth is ``metadata.label``: ``"normal"`` is normal traffic, no label
is *unlabelled* (real traffic: counted, never scored), and any other label (a simulator
scenario, ``"fraud"`` in external data) is an attack. "Flagged" means held or refused: any
verdict other than ``allow``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from detector.policy import VERDICTS

__all__ = ["NORMAL_LABEL", "Tally", "is_attack", "is_flagged"]

NORMAL_LABEL = "normal"


def is_attack(label: str | None) -> bool:
    return label is not None and label not in ("", "unlabelled", NORMAL_LABEL)


def is_flagged(verdict: str) -> bool:
    return verdict != "allow"


class Tally:
    """Verdicts by label: flagged / total per label, recall of attacks, normal flagged rate."""

    def __init__(self) -> None:
        self.verdicts: Counter[str] = Counter()
        self.total: Counter[str] = Counter()
        self.flagged: Counter[str] = Counter()

    def add(self, verdict: str, label: str | None) -> None:
        self.verdicts[verdict] += 1
        name = label or "unlabelled"
        self.total[name] += 1
        self.flagged[name] += is_flagged(verdict)

    @property
    def attacks(self) -> list[str]:
        """The attack labels seen, sorted."""
        return sorted(k for k in self.total if is_attack(k))

    def rate(self, label: str) -> float | None:
        return self.flagged[label] / self.total[label] if self.total[label] else None

    def report(self) -> dict[str, Any]:
        """Counts, and when labels exist: normal flagged rate, attack recall, per scenario."""
        out: dict[str, Any] = {
            "events": sum(self.total.values()),
            "verdicts": {k: self.verdicts.get(k, 0) for k in VERDICTS},
        }
        if set(self.total) <= {"unlabelled"}:
            return out
        attacks = self.attacks
        attack_total = sum(self.total[k] for k in attacks)
        out["normal_events"] = self.total[NORMAL_LABEL]
        out["attack_events"] = attack_total
        out["normal_flagged_rate"] = self.rate(NORMAL_LABEL) or 0.0
        out["attack_recall"] = (
            sum(self.flagged[k] for k in attacks) / attack_total if attack_total else None
        )
        out["by_scenario"] = {k: self.flagged[k] / self.total[k] for k in attacks}
        out["by_scenario_events"] = {k: self.total[k] for k in attacks}
        return out
