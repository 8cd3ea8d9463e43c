"""The review queue's metrics and the feedback histogram, on fresh registries."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry

from detector.stream.metrics import (
    FEEDBACK_EFFECT_BUCKETS_S,
    REVIEW_OUTCOMES,
    DetectorMetrics,
    ReviewMetrics,
    declare_all,
    render,
)


def test_the_review_gauges_read_the_queue_at_scrape_time() -> None:
    registry = CollectorRegistry()
    metrics = ReviewMetrics(registry)
    assert registry.get_sample_value("detector_review_queue_depth") == 0.0
    state = {"depth": 3, "age": 120.5, "overdue": 1}
    metrics.bind(lambda: state["depth"], lambda: state["age"], lambda: state["overdue"])
    assert registry.get_sample_value("detector_review_queue_depth") == 3.0
    state["depth"] = 7
    assert registry.get_sample_value("detector_review_queue_depth") == 7.0
    assert registry.get_sample_value("detector_review_oldest_held_age_seconds") == 120.5
    assert registry.get_sample_value("detector_review_overdue_withdrawals") == 1.0


def test_review_decisions_are_counted_by_outcome_from_zero() -> None:
    registry = CollectorRegistry()
    metrics = ReviewMetrics(registry)
    for outcome in REVIEW_OUTCOMES:
        assert (
            registry.get_sample_value("detector_review_decisions_total", {"outcome": outcome}) == 0
        )
    metrics.observe_decision("refuse")
    metrics.observe_decision("refuse")
    assert registry.get_sample_value("detector_review_decisions_total", {"outcome": "refuse"}) == 2
    with pytest.raises(ValueError, match="unknown outcome"):
        metrics.observe_decision("approve")


def test_the_feedback_histogram_is_declared_for_the_worker_with_the_2_s_target_as_a_bound() -> None:
    registry = CollectorRegistry()
    metrics = DetectorMetrics(registry)
    assert 2.0 in FEEDBACK_EFFECT_BUCKETS_S
    assert list(FEEDBACK_EFFECT_BUCKETS_S) == sorted(set(FEEDBACK_EFFECT_BUCKETS_S))
    metrics.observe_feedback_effect(0.8)
    metrics.observe_feedback_effect(-0.2)  # the reporter's clock ahead of ours: 0
    metrics.observe_feedback_effect(float("nan"))  # never poisons _sum
    sample = registry.get_sample_value
    assert sample("detector_feedback_effect_seconds_count") == 2
    assert sample("detector_feedback_effect_seconds_sum") == pytest.approx(0.8)
    assert sample("detector_feedback_effect_seconds_bucket", {"le": "0.01"}) == 1
    assert sample("detector_feedback_effect_seconds_bucket", {"le": "1.0"}) == 2


def test_declare_all_registers_every_family_of_both_processes_once() -> None:
    names = {f.name for f in declare_all(CollectorRegistry()).collect()}
    assert {
        "detector_verdicts",
        "detector_feedback_effect_seconds",
        "detector_review_queue_depth",
        "detector_review_oldest_held_age_seconds",
        "detector_review_overdue_withdrawals",
        "detector_review_decisions",
    } <= names


@pytest.mark.prometheus
def test_the_review_exposition_passes_promtool_lint() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool not found on PATH: install Debian's prometheus package", pytrace=False
        )
    metrics = ReviewMetrics(CollectorRegistry())
    metrics.observe_decision("release")
    payload, _ = render(metrics.registry)
    result = subprocess.run(
        [promtool, "check", "metrics"], input=payload, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
