"""DetectorMetrics: names, helpers and the commit-age gauge, on a fresh registry per test."""

from __future__ import annotations

import enum
import gc

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from detector.stream.metrics import (
    ANOMALY_SCORE_BUCKETS,
    BATCH_SIZE_BUCKETS,
    DECISION_LATENCY_BUCKETS_S,
    OTHER_REASON,
    VERDICTS,
    DetectorMetrics,
    render,
)

# The contract with the dashboards, the alert rules and the worker: family name -> type.
EXPECTED_FAMILIES = {
    "detector_withdrawals_consumed": "counter",
    "detector_verdicts": "counter",
    "detector_dlq_records": "counter",
    "detector_decision_latency_seconds": "histogram",
    "detector_event_processing_seconds": "histogram",
    "detector_batch_processing_seconds": "histogram",
    "detector_batch_size": "histogram",
    "detector_anomaly_score": "histogram",
    "detector_model_info": "gauge",
    "detector_consumer_lag": "gauge",
    "detector_last_offset_commit_age_seconds": "gauge",
    "detector_accounts_in_state": "gauge",
    "detector_kafka_send_errors": "counter",
    "detector_duplicate_withdrawals": "counter",
    "detector_model_switch_failures": "counter",
    "detector_shadow_verdicts": "counter",
    "detector_shadow_agreement": "counter",
    "detector_feedback_effect_seconds": "histogram",
    "detector_gc_pause_seconds": "histogram",
}


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics(registry: CollectorRegistry, clock: FakeClock) -> DetectorMetrics:
    return DetectorMetrics(registry, clock=clock)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_families_are_exactly_the_contract(metrics: DetectorMetrics) -> None:
    families = {f.name: f.type for f in metrics.registry.collect()}
    assert families == EXPECTED_FAMILIES


def test_names_follow_prometheus_conventions(metrics: DetectorMetrics) -> None:
    for family in metrics.registry.collect():
        assert family.name.startswith("detector_")
        assert family.documentation, family.name
        if family.type == "counter":
            assert any(s.name == family.name + "_total" for s in family.samples) or (
                not family.samples  # a labelled counter with no child yet
            )
        assert "millis" not in family.name and not family.name.endswith("_ms")


def test_uses_only_the_registry_passed_in(metrics: DetectorMetrics) -> None:
    other = CollectorRegistry()
    assert other.get_sample_value("detector_withdrawals_consumed_total") is None
    second = DetectorMetrics(other)  # a second instance must not clash with the first
    second.observe_consumed()
    assert value(other, "detector_withdrawals_consumed_total") == 1
    assert value(metrics.registry, "detector_withdrawals_consumed_total") == 0


def test_verdicts_are_preinitialised_to_zero(
    registry: CollectorRegistry, metrics: DetectorMetrics
) -> None:
    for verdict in ("allow", "delay", "refuse"):
        assert value(registry, "detector_verdicts_total", verdict=verdict) == 0
    assert VERDICTS == ("allow", "delay", "refuse")


def test_observe_consumed(registry: CollectorRegistry, metrics: DetectorMetrics) -> None:
    metrics.observe_consumed()
    metrics.observe_consumed(4)
    assert value(registry, "detector_withdrawals_consumed_total") == 5


def test_observe_verdict(registry: CollectorRegistry, metrics: DetectorMetrics) -> None:
    metrics.observe_verdict("refuse", 0.82, 0.004)
    metrics.observe_verdict("allow", 0.41, 0.3)
    assert value(registry, "detector_verdicts_total", verdict="refuse") == 1
    assert value(registry, "detector_verdicts_total", verdict="allow") == 1
    assert value(registry, "detector_verdicts_total", verdict="delay") == 0
    assert value(registry, "detector_anomaly_score_count") == 2
    assert value(registry, "detector_anomaly_score_sum") == pytest.approx(1.23)
    assert value(registry, "detector_anomaly_score_bucket", le="0.45") == 1
    assert value(registry, "detector_anomaly_score_bucket", le="0.85") == 2
    assert value(registry, "detector_decision_latency_seconds_count") == 2
    assert value(registry, "detector_decision_latency_seconds_bucket", le="0.005") == 1
    # 0.3 s is above the 0.25 s SLO bound.
    assert value(registry, "detector_decision_latency_seconds_bucket", le="0.25") == 1
    assert value(registry, "detector_decision_latency_seconds_bucket", le="0.3") == 2


def test_observe_verdict_accepts_str_enum(
    registry: CollectorRegistry, metrics: DetectorMetrics
) -> None:
    # The mixin form on purpose: its str() is "Verdict.DELAY" (StrEnum's is "delay").
    class Verdict(str, enum.Enum):  # noqa: UP042
        DELAY = "delay"

    metrics.observe_verdict(Verdict.DELAY, 0.6, 0.01)
    assert value(registry, "detector_verdicts_total", verdict="delay") == 1


def test_observe_verdict_rejects_unknown_verdict(metrics: DetectorMetrics) -> None:
    with pytest.raises(ValueError, match="unknown verdict"):
        metrics.observe_verdict("maybe", 0.5, 0.01)


def test_observe_verdict_clamps_negative_latency_and_skips_nan(
    registry: CollectorRegistry, metrics: DetectorMetrics
) -> None:
    metrics.observe_verdict("allow", float("nan"), -2.0)  # producer clock ahead of ours
    assert value(registry, "detector_decision_latency_seconds_sum") == 0
    assert value(registry, "detector_decision_latency_seconds_bucket", le="0.0005") == 1
    assert value(registry, "detector_anomaly_score_count") == 0  # NaN would poison _sum
    metrics.observe_verdict("allow", 0.5, float("inf"))
    assert value(registry, "detector_decision_latency_seconds_count") == 1


def test_observe_dlq(registry: CollectorRegistry, metrics: DetectorMetrics) -> None:
    metrics.observe_dlq("invalid_json")
    metrics.observe_dlq("invalid_json")
    metrics.observe_dlq("missing_field")
    assert value(registry, "detector_dlq_records_total", reason="invalid_json") == 2
    assert value(registry, "detector_dlq_records_total", reason="missing_field") == 1


def test_observe_dlq_bounds_label_cardinality(
    registry: CollectorRegistry, metrics: DetectorMetrics
) -> None:
    metrics.observe_dlq("amount 'abc' is not a number")  # a message, not a code
    metrics.observe_dlq("x" * 100)
    assert value(registry, "detector_dlq_records_total", reason=OTHER_REASON) == 2


def test_preinitialised_dlq_reasons_and_send_topics(registry: CollectorRegistry) -> None:
    DetectorMetrics(registry, dlq_reasons=["invalid_json", "bad_amount"], send_topics=["decisions"])
    assert value(registry, "detector_dlq_records_total", reason="invalid_json") == 0
    assert value(registry, "detector_dlq_records_total", reason="bad_amount") == 0
    assert value(registry, "detector_kafka_send_errors_total", topic="decisions") == 0


def test_observe_event_and_batch(registry: CollectorRegistry, metrics: DetectorMetrics) -> None:
    metrics.observe_event(0.0002)
    metrics.observe_batch(120, 0.03)
    metrics.observe_batch(1, 0.0004)
    assert value(registry, "detector_event_processing_seconds_count") == 1
    assert value(registry, "detector_event_processing_seconds_bucket", le="0.00025") == 1
    assert value(registry, "detector_batch_size_count") == 2
    assert value(registry, "detector_batch_size_sum") == 121
    assert value(registry, "detector_batch_size_bucket", le="1.0") == 1
    assert value(registry, "detector_batch_size_bucket", le="200.0") == 2
    assert value(registry, "detector_batch_processing_seconds_count") == 2
    assert value(registry, "detector_batch_processing_seconds_sum") == pytest.approx(0.0304)


def test_gc_pauses_reach_the_histogram_at_flush(
    registry: CollectorRegistry, metrics: DetectorMetrics
) -> None:
    stop = metrics.watch_gc()
    try:
        gc.collect()  # a full collection: generation 2
        gc.collect(0)
        assert value(registry, "detector_gc_pause_seconds_count", generation="2") is None
        metrics.flush_gc()  # the gauge timer's call: only now, never from the gc callback
    finally:
        stop()
    full = value(registry, "detector_gc_pause_seconds_count", generation="2")
    young = value(registry, "detector_gc_pause_seconds_count", generation="0")
    assert full is not None and full >= 1 and young is not None and young >= 1
    assert (value(registry, "detector_gc_pause_seconds_sum", generation="2") or 0.0) > 0.0
    gc.collect()  # stopped: nothing more is timed
    metrics.flush_gc()
    assert value(registry, "detector_gc_pause_seconds_count", generation="2") == full


def test_buckets_fit_the_service() -> None:
    assert DECISION_LATENCY_BUCKETS_S[0] <= 0.0005
    assert 0.25 in DECISION_LATENCY_BUCKETS_S  # the SLO of DetectorDecisionLatencyHigh
    assert BATCH_SIZE_BUCKETS[0] == 1 and BATCH_SIZE_BUCKETS[-1] >= 1000
    assert ANOMALY_SCORE_BUCKETS[-1] == 1.0
    dense = [b for b in ANOMALY_SCORE_BUCKETS if 0.4 <= b <= 0.8]
    assert len(dense) >= 8  # at most 0.05 apart in the decision region
    for buckets in (DECISION_LATENCY_BUCKETS_S, BATCH_SIZE_BUCKETS, ANOMALY_SCORE_BUCKETS):
        assert list(buckets) == sorted(set(buckets))


def test_send_errors(registry: CollectorRegistry, metrics: DetectorMetrics) -> None:
    metrics.observe_send_error("decisions")
    assert value(registry, "detector_kafka_send_errors_total", topic="decisions") == 1


def test_accounts_in_state(registry: CollectorRegistry, metrics: DetectorMetrics) -> None:
    metrics.set_accounts_in_state(42)
    assert value(registry, "detector_accounts_in_state") == 42


def test_set_model_swaps_the_version_label(
    registry: CollectorRegistry, metrics: DetectorMetrics
) -> None:
    assert value(registry, "detector_model_info", version="v1", role="active") is None
    metrics.set_model("v1")
    assert value(registry, "detector_model_info", version="v1", role="active") == 1
    metrics.set_model("v2")
    assert value(registry, "detector_model_info", version="v2", role="active") == 1
    assert value(registry, "detector_model_info", version="v1", role="active") is None
    infos = [s for f in registry.collect() if f.name == "detector_model_info" for s in f.samples]
    assert len(infos) == 1
    # A shadow is a second series; the active one is untouched; it goes when unset.
    metrics.set_model("v3", "shadow")
    assert value(registry, "detector_model_info", version="v3", role="shadow") == 1
    assert value(registry, "detector_model_info", version="v2", role="active") == 1
    metrics.set_model(None, "shadow")
    assert value(registry, "detector_model_info", version="v3", role="shadow") is None


def test_lag_per_partition(registry: CollectorRegistry, metrics: DetectorMetrics) -> None:
    metrics.set_lag("withdrawals", 0, 12)
    metrics.set_lag("withdrawals", 3, -1)  # stale watermark
    assert value(registry, "detector_consumer_lag", topic="withdrawals", partition="0") == 12
    assert value(registry, "detector_consumer_lag", topic="withdrawals", partition="3") == 0
    metrics.clear_lag()  # revoked partitions stop reporting
    assert value(registry, "detector_consumer_lag", topic="withdrawals", partition="0") is None
    assert value(registry, "detector_consumer_lag", topic="withdrawals", partition="3") is None


def test_commit_age_is_computed_at_scrape_time(
    registry: CollectorRegistry, metrics: DetectorMetrics, clock: FakeClock
) -> None:
    name = "detector_last_offset_commit_age_seconds"
    assert value(registry, name) == 0
    clock.now += 7.5  # no commit yet: age since start
    assert value(registry, name) == 7.5
    metrics.mark_commit()
    assert value(registry, name) == 0
    clock.now += 3
    assert value(registry, name) == 3
    assert metrics.commit_age_s() == 3


def test_render_is_parseable_text_format(metrics: DetectorMetrics) -> None:
    metrics.observe_verdict("delay", 0.7, 0.02)
    payload, content_type = render(metrics.registry)
    assert content_type.startswith("text/plain; version=0.0.4")
    families = {f.name for f in text_string_to_metric_families(payload.decode())}
    assert (
        set(EXPECTED_FAMILIES)
        - {
            "detector_dlq_records",
            "detector_model_info",
            "detector_consumer_lag",
            "detector_kafka_send_errors",
        }
        <= families
    )
    assert b'detector_verdicts_total{verdict="delay"} 1.0' in payload
