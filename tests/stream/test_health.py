"""Health: liveness (stuck consumer) and readiness, the HTTP responses, the standalone server."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from detector.stream.health import (
    TEXT_CONTENT_TYPE,
    Health,
    http_response,
)
from detector.stream.metrics import DetectorMetrics

STUCK_AFTER_S = 60.0


class FakeClock:
    def __init__(self, now: float = 5000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def health(clock: FakeClock) -> Health:
    return Health(STUCK_AFTER_S, clock=clock)


@pytest.fixture
def consuming(health: Health) -> Health:
    """A worker that has its partitions and recovered tables: the stuck check is armed."""
    health.set_model_loaded(True)
    health.set_partitions_assigned(True)
    health.set_tables_recovered(True)
    return health


# Liveness -------------------------------------------------------------------------------


def test_idle_without_lag_is_alive_forever(consuming: Health, clock: FakeClock) -> None:
    consuming.set_lag(0)
    clock.advance(10 * STUCK_AFTER_S)
    assert consuming.liveness() == (True, "ok: no lag")


def test_lag_without_progress_past_the_threshold_fails(consuming: Health, clock: FakeClock) -> None:
    consuming.set_lag(500)
    clock.advance(STUCK_AFTER_S)  # exactly at the limit: still alive
    assert consuming.liveness()[0] is True
    clock.advance(1)
    alive, reason = consuming.liveness()
    assert alive is False
    assert reason == "stuck: 500 records behind and no progress for 61.0 s (limit 60 s)"


def test_progress_resets_the_stuck_clock(consuming: Health, clock: FakeClock) -> None:
    consuming.set_lag(500)
    clock.advance(STUCK_AFTER_S - 1)
    consuming.record_progress(10)
    clock.advance(STUCK_AFTER_S - 1)
    assert consuming.liveness() == (True, "ok: 500 records behind, progressing")
    clock.advance(2)
    assert consuming.liveness()[0] is False
    consuming.record_progress()  # it recovers by itself
    assert consuming.liveness()[0] is True
    assert consuming.processed == 11


def test_zero_progress_is_no_progress(consuming: Health, clock: FakeClock) -> None:
    consuming.set_lag(5)
    clock.advance(STUCK_AFTER_S + 1)
    consuming.record_progress(0)
    assert consuming.liveness()[0] is False
    assert consuming.processed == 0


def test_stuck_clock_starts_when_lag_appears_not_at_last_progress(
    consuming: Health, clock: FakeClock
) -> None:
    consuming.record_progress()
    clock.advance(10 * STUCK_AFTER_S)  # a long quiet period
    consuming.set_lag(3)  # traffic arrives
    assert consuming.liveness()[0] is True
    clock.advance(STUCK_AFTER_S + 1)
    assert consuming.liveness()[0] is False
    consuming.set_lag(0)  # caught up (lag drained by another path, e.g. a rebalance)
    assert consuming.liveness() == (True, "ok: no lag")


def test_growing_lag_does_not_restart_the_stuck_clock(consuming: Health, clock: FakeClock) -> None:
    consuming.set_lag(3)
    clock.advance(40)
    consuming.set_lag(300)
    clock.advance(40)
    assert consuming.liveness()[0] is False


def test_not_armed_before_partitions_and_tables(health: Health, clock: FakeClock) -> None:
    health.set_lag(10_000)  # recovering tables with a backlog waiting
    clock.advance(10 * STUCK_AFTER_S)
    alive, reason = health.liveness()
    assert alive is True and reason.startswith("ok: not consuming yet")
    health.set_partitions_assigned(True)
    health.set_tables_recovered(True)  # now able to consume: the clock starts here
    clock.advance(STUCK_AFTER_S)
    assert health.liveness()[0] is True
    clock.advance(1)
    assert health.liveness()[0] is False


def test_rebalance_rearms_the_stuck_clock(consuming: Health, clock: FakeClock) -> None:
    consuming.set_lag(100)
    clock.advance(STUCK_AFTER_S - 5)
    consuming.set_partitions_assigned(False)  # revoked ...
    consuming.set_partitions_assigned(True)  # ... and reassigned
    clock.advance(STUCK_AFTER_S - 5)
    assert consuming.liveness()[0] is True


def test_negative_lag_is_zero(consuming: Health) -> None:
    consuming.set_lag(-4)
    assert consuming.lag == 0
    assert consuming.liveness() == (True, "ok: no lag")


def test_stuck_after_must_be_positive() -> None:
    with pytest.raises(ValueError, match="stuck_after_s"):
        Health(0)


# Readiness ------------------------------------------------------------------------------


def test_readiness_lists_what_is_missing(health: Health) -> None:
    assert health.readiness() == (
        False,
        "not ready: model not loaded, partitions not assigned, tables not recovered",
    )
    health.set_model_loaded(True)
    assert health.readiness() == (False, "not ready: partitions not assigned, tables not recovered")
    health.set_partitions_assigned(True)
    assert health.readiness() == (False, "not ready: tables not recovered")
    health.set_tables_recovered(True)
    assert health.readiness() == (True, "ready")
    health.set_partitions_assigned(False)  # a rebalance takes readiness away again
    assert health.readiness() == (False, "not ready: partitions not assigned")


# http_response --------------------------------------------------------------------------


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    DetectorMetrics(registry).observe_consumed(3)
    return registry


def test_metrics_endpoint(registry: CollectorRegistry, health: Health) -> None:
    status, body, content_type = http_response("/metrics", registry, health)
    assert status == 200
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert b"detector_withdrawals_consumed_total 3.0" in body


def test_healthz(registry: CollectorRegistry, consuming: Health, clock: FakeClock) -> None:
    assert http_response("/healthz", registry, consuming) == (
        200,
        b"ok: no lag\n",
        TEXT_CONTENT_TYPE,
    )
    consuming.set_lag(9)
    clock.advance(STUCK_AFTER_S + 1)
    status, body, content_type = http_response("/healthz", registry, consuming)
    assert status == 503
    assert body.startswith(b"stuck: 9 records behind")
    assert content_type == TEXT_CONTENT_TYPE


def test_readyz(registry: CollectorRegistry, health: Health) -> None:
    status, body, _ = http_response("/readyz", registry, health)
    assert (status, body) == (
        503,
        b"not ready: model not loaded, partitions not assigned, tables not recovered\n",
    )
    health.set_model_loaded(True)
    health.set_partitions_assigned(True)
    health.set_tables_recovered(True)
    assert http_response("/readyz", registry, health) == (200, b"ready\n", TEXT_CONTENT_TYPE)


def test_query_string_is_ignored(registry: CollectorRegistry, health: Health) -> None:
    assert http_response("/metrics?name[]=x", registry, health)[0] == 200


@pytest.mark.parametrize("path", ["/", "/metric", "/healthz/extra", "/READYZ", ""])
def test_unknown_paths_are_404(registry: CollectorRegistry, health: Health, path: str) -> None:
    assert http_response(path, registry, health) == (404, b"not found\n", TEXT_CONTENT_TYPE)
