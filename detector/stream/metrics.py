"""Every Prometheus metric of the detector, declared in one place.

:class:`DetectorMetrics` registers its metrics on a ``CollectorRegistry`` passed in by the
caller (never the process-global one), so each worker and each test owns its registry. The
metric names are a contract with the dashboards and alert rules under ``deploy/``; a test
checks that every name those reference is declared here, and that every metric declared here
is on the dashboard.

Naming follows the Prometheus conventions: ``detector_`` prefix, base units (seconds), counters
end in ``_total``. Histogram buckets are sized for a millisecond-scale service rather than the
library defaults (5 ms .. 10 s), which would put every event into the first bucket.

Metrics (exposed sample names)::

    detector_withdrawals_consumed_total                 counter   records read from the input
    detector_verdicts_total{verdict}                    counter   allow / delay / refuse
    detector_dlq_records_total{reason}                  counter   records sent to the DLQ
    detector_decision_latency_seconds                   histogram requested_at -> verdict sent
    detector_event_processing_seconds                   histogram processing time of one event
    detector_batch_processing_seconds                   histogram processing time of a batch
    detector_batch_size                                 histogram events per micro-batch
    detector_anomaly_score                              histogram scores in [0, 1]
    detector_model_info{version,role}                   gauge     1 per served model (active/shadow)
    detector_model_switch_failures_total{role}          counter   named versions that did not verify
    detector_shadow_verdicts_total{verdict}             counter   the shadow model's verdicts
    detector_shadow_agreement_total{agree}              counter   shadow verdict == active verdict?
    detector_consumer_lag{topic,partition}              gauge     records behind high watermark
    detector_last_offset_commit_age_seconds             gauge     seconds since the last commit
    detector_accounts_in_state                          gauge     accounts in the state table
    detector_kafka_send_errors_total{topic}             counter   failed produce requests
    detector_duplicate_withdrawals_total                counter   repeats given their verdict
    detector_feedback_effect_seconds                    histogram label reported -> in effect
    detector_gc_pause_seconds{generation}               histogram the garbage collector's pauses

The review queue (``detector review``, :class:`ReviewMetrics`, its own process and registry)::

    detector_review_queue_depth                         gauge     held withdrawals to review
    detector_review_oldest_held_age_seconds             gauge     age of the oldest of them
    detector_review_overdue_withdrawals                 gauge     held past their hold_seconds
    detector_review_decisions_total{outcome}            counter   release / refuse
"""

from __future__ import annotations

import enum
import gc
import math
import re
import threading
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from detector.policy import VERDICTS

__all__ = [
    "ANOMALY_SCORE_BUCKETS",
    "BATCH_PROCESSING_BUCKETS_S",
    "BATCH_SIZE_BUCKETS",
    "DECISION_LATENCY_BUCKETS_S",
    "EVENT_PROCESSING_BUCKETS_S",
    "FEEDBACK_EFFECT_BUCKETS_S",
    "GC_PAUSE_BUCKETS_S",
    "METRIC_PREFIX",
    "OTHER_REASON",
    "REVIEW_OUTCOMES",
    "VERDICTS",
    "DetectorMetrics",
    "ReviewMetrics",
    "declare_all",
    "render",
]

METRIC_PREFIX = "detector_"

# The verdicts (detector.policy.VERDICTS) are pre-initialised to 0 so that rate() and the
# verdict-share recording rules have a series from the first scrape on.

# Seconds from the event's `requested_at` to the verdict being handed to the producer. It
# includes queueing in Kafka, so the tail reaches far past the processing time: buckets go to
# 60 s to show a backlog's size, and are dense around the 0.25 s SLO of the latency alert
# (0.25 must stay a bucket bound: histogram_quantile interpolates linearly inside a bucket).
DECISION_LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

# Seconds of processing per event: a compiled forest scores one row in microseconds, so the
# buckets start at 0.1 ms; anything above a second is a stall, not a slow event.
EVENT_PROCESSING_BUCKETS_S: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

# Seconds per micro-batch (up to `batch_max` = 2,000 records by default): 0.5 ms .. 10 s.
BATCH_PROCESSING_BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

# Withdrawals per micro-batch: 1 .. 10,000 on a 1-2-5 scale (a stage-2 batch of `batch_max`
# forwarded records can hold several withdrawals each; +Inf catches the rest).
BATCH_SIZE_BUCKETS: tuple[float, ...] = (
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000,
)  # fmt: skip

# Isolation-forest scores (paper convention, higher = more anomalous, in [0, 1]). Normal
# traffic sits around 0.4-0.5 and the delay/refuse thresholds are expected in 0.55-0.8, so the
# buckets are 0.05 wide there and coarse at the ends.
ANOMALY_SCORE_BUCKETS: tuple[float, ...] = (
    0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 1.0,
)  # fmt: skip

# Seconds from a label's `reported_at` (an analyst's decision, a customer's report) to the
# worker applying it to its state: the target is p99 <= 2 s, so 2.0 must stay a bucket bound
# (histogram_quantile interpolates linearly inside a bucket); the tail shows a backlog.
FEEDBACK_EFFECT_BUCKETS_S: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

# Seconds the garbage collector holds the process (the event loop with it), per collection:
# ~1 ms for a young generation of 10,000 objects, ~50-150 ms for a full collection of a large
# state (detector/gctune.py).
GC_PAUSE_BUCKETS_S: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip

# The final decisions of the review queue (detector.review.records.DECISIONS), pre-initialised
# to 0 so rate() has a series from the first scrape.
REVIEW_OUTCOMES: tuple[str, ...] = ("release", "refuse")

# Label value used for a DLQ reason that is not a stable snake_case code, so a free-text
# message can never create unbounded label cardinality.
OTHER_REASON = "other"
_REASON_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def _label(value: str) -> str:
    """Label value of a plain string or of an enum member (``str(Enum)`` is the member name)."""
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


class DetectorMetrics:
    """The detector's metrics, registered on ``registry``.

    ``clock`` is the monotonic clock behind the commit-age gauge (injectable for tests).
    ``dlq_reasons`` and ``send_topics`` pre-initialise those labelled counters to 0 so that
    rate() over them works from the start (pass the known DLQ codes and the output topics).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = time.monotonic,
        dlq_reasons: Iterable[str] = (),
        send_topics: Iterable[str] = (),
    ) -> None:
        self.registry = registry
        self._clock = clock
        self._lock = threading.Lock()
        self._last_commit = clock()  # before any commit, the age counts from start-up

        p = METRIC_PREFIX
        self.withdrawals_consumed = Counter(
            f"{p}withdrawals_consumed_total",
            "Records read from the withdrawals topic, valid or not.",
            registry=registry,
        )
        self.verdicts = Counter(
            f"{p}verdicts_total",
            "Verdicts sent to the decisions topic, by verdict.",
            ["verdict"],
            registry=registry,
        )
        self.dlq_records = Counter(
            f"{p}dlq_records_total",
            "Records sent to the dead-letter topic, by stable reason code.",
            ["reason"],
            registry=registry,
        )
        self.decision_latency = Histogram(
            f"{p}decision_latency_seconds",
            "Seconds from the event's requested_at to its verdict being sent.",
            buckets=DECISION_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.event_processing = Histogram(
            f"{p}event_processing_seconds",
            "Seconds spent processing one event (validation, features, scoring, policy).",
            buckets=EVENT_PROCESSING_BUCKETS_S,
            registry=registry,
        )
        self.batch_processing = Histogram(
            f"{p}batch_processing_seconds",
            "Seconds spent processing one micro-batch.",
            buckets=BATCH_PROCESSING_BUCKETS_S,
            registry=registry,
        )
        self.batch_size = Histogram(
            f"{p}batch_size",
            "Events per micro-batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.anomaly_score = Histogram(
            f"{p}anomaly_score",
            "Anomaly scores of scored events (0 = normal, 1 = most anomalous).",
            buckets=ANOMALY_SCORE_BUCKETS,
            registry=registry,
        )
        self.model_info = Gauge(
            f"{p}model_info",
            "1 for each model version served, by role (active decides, shadow only scores).",
            ["version", "role"],
            registry=registry,
        )
        self.model_switch_failures = Counter(
            f"{p}model_switch_failures_total",
            "Model versions the control topic named that did not verify (the current stayed).",
            ["role"],
            registry=registry,
        )
        self.shadow_verdicts = Counter(
            f"{p}shadow_verdicts_total",
            "Verdicts of the shadow model (published to decisions-shadow only).",
            ["verdict"],
            registry=registry,
        )
        self.shadow_agreement = Counter(
            f"{p}shadow_agreement_total",
            "Withdrawals scored by both models: whether the shadow's verdict is the active's.",
            ["agree"],
            registry=registry,
        )
        self.consumer_lag = Gauge(
            f"{p}consumer_lag",
            "Records between this worker's position and the high watermark, per partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.last_offset_commit_age = Gauge(
            f"{p}last_offset_commit_age_seconds",
            "Seconds since the last successful offset commit (since start before the first).",
            registry=registry,
        )
        self.last_offset_commit_age.set_function(self.commit_age_s)
        self.accounts_in_state = Gauge(
            f"{p}accounts_in_state",
            "Accounts held in this worker's state table.",
            registry=registry,
        )
        self.kafka_send_errors = Counter(
            f"{p}kafka_send_errors_total",
            "Produce requests that failed, by destination topic.",
            ["topic"],
            registry=registry,
        )
        self.feedback_effect = Histogram(
            f"{p}feedback_effect_seconds",
            "Seconds from a label's reported_at to the worker applying it (report -> effect).",
            buckets=FEEDBACK_EFFECT_BUCKETS_S,
            registry=registry,
        )

        self.gc_pause = Histogram(
            f"{p}gc_pause_seconds",
            "Seconds each garbage collection held the worker, by generation (2 = full).",
            ["generation"],
            buckets=GC_PAUSE_BUCKETS_S,
            registry=registry,
        )
        # Pauses timed by the gc callback, observed later (see watch_gc).
        self._gc_pending: list[list[float]] = [[], [], []]
        self._gc_started = 0.0

        self.duplicates = Counter(
            f"{p}duplicate_withdrawals_total",
            "Withdrawals decided again (a redelivery or a producer's retry): their first "
            "verdict was published again, byte for byte, and no state changed.",
            registry=registry,
        )

        for verdict in VERDICTS:
            self.verdicts.labels(verdict=verdict)
            self.shadow_verdicts.labels(verdict=verdict)
        for agree in ("yes", "no"):
            self.shadow_agreement.labels(agree=agree)
        for role in ("active", "shadow"):
            self.model_switch_failures.labels(role=role)
        for reason in dlq_reasons:
            self.dlq_records.labels(reason=self._reason(reason))
        for topic in send_topics:
            self.kafka_send_errors.labels(topic=topic)

    # Helpers the worker calls ------------------------------------------------------------

    def observe_consumed(self, n: int = 1) -> None:
        """Count ``n`` records read from the withdrawals topic (valid or not)."""
        self.withdrawals_consumed.inc(n)

    def observe_verdict(self, verdict: str, score: float, latency_s: float) -> None:
        """Count one verdict sent, with its anomaly score and decision latency.

        ``verdict`` must be one of :data:`VERDICTS` (a str-valued enum member works too).
        A negative latency (the producer's clock runs ahead of ours) is recorded as 0; a
        non-finite score or latency is not observed, since one NaN would poison ``_sum``.
        """
        label = _label(verdict)
        if label not in VERDICTS:
            raise ValueError(f"unknown verdict {label!r}; expected one of {VERDICTS}")
        self.verdicts.labels(verdict=label).inc()
        if math.isfinite(score):
            self.anomaly_score.observe(score)
        if math.isfinite(latency_s):
            self.decision_latency.observe(max(0.0, latency_s))

    def observe_dlq(self, reason: str) -> None:
        """Count one record sent to the DLQ; ``reason`` is a stable code (``InvalidEvent.code``).

        A reason that is not a snake_case code of at most 64 characters is counted as
        :data:`OTHER_REASON`.
        """
        self.dlq_records.labels(reason=self._reason(reason)).inc()

    def observe_event(self, seconds: float) -> None:
        """Record the processing time of one event."""
        self.event_processing.observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        """Record one micro-batch: its number of events and its processing time."""
        self.batch_size.observe(size)
        self.batch_processing.observe(seconds)

    def watch_gc(self) -> Callable[[], None]:
        """Time every garbage collection of this process (``gc.callbacks``); returns the
        function that stops it. The callback only appends to a list: it may run inside any
        allocation, also one made while a metric's lock is held, so the pauses reach the
        histogram in :meth:`flush_gc` (the worker's gauge timer), never from the callback."""
        pending = self._gc_pending

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                self._gc_started = time.perf_counter()
            else:
                pending[info["generation"]].append(time.perf_counter() - self._gc_started)

        gc.callbacks.append(on_gc)
        return lambda: gc.callbacks.remove(on_gc)

    def flush_gc(self) -> None:
        """Observe the pauses timed since the last call."""
        for generation, pauses in enumerate(self._gc_pending):
            if pauses:
                done, self._gc_pending[generation] = pauses, []
                child = self.gc_pause.labels(generation=str(generation))
                for seconds in done:
                    child.observe(seconds)

    def observe_duplicate(self) -> None:
        self.duplicates.inc()

    def observe_send_error(self, topic: str) -> None:
        """Count one failed produce request to ``topic``."""
        self.kafka_send_errors.labels(topic=topic).inc()

    def observe_feedback_effect(self, seconds: float) -> None:
        """Record one label taking effect ``seconds`` after its ``reported_at`` (a negative
        value, from a reporter's clock ahead of ours, counts as 0; NaN is not observed)."""
        if math.isfinite(seconds):
            self.feedback_effect.observe(max(0.0, seconds))

    def set_model(self, version: str | None, role: str = "active") -> None:
        """Mark ``version`` as the model served in ``role`` (None: no shadow); the previous
        version's series of that role goes away."""
        with self._lock:
            for labels in [s.labels for m in self.model_info.collect() for s in m.samples]:
                if labels.get("role") == role:
                    self.model_info.remove(labels["version"], role)
            if version is not None:
                self.model_info.labels(version=version, role=role).set(1)

    def observe_model_switch_failure(self, role: str) -> None:
        self.model_switch_failures.labels(role=role).inc()

    def observe_shadow(self, verdict: str, agrees: bool) -> None:
        self.shadow_verdicts.labels(verdict=verdict).inc()
        self.shadow_agreement.labels(agree="yes" if agrees else "no").inc()

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        """Set the lag of one partition (negative values, from a stale watermark, become 0)."""
        self.consumer_lag.labels(topic=topic, partition=str(partition)).set(max(0, lag))

    def clear_lag(self) -> None:
        """Drop every lag series (e.g. when all partitions are revoked)."""
        self.consumer_lag.clear()

    def set_accounts_in_state(self, n: int) -> None:
        """Set the number of accounts held in the state table."""
        self.accounts_in_state.set(n)

    def mark_commit(self) -> None:
        """Record a successful offset commit now.

        Call it after every commit that succeeded, including one that found nothing new to
        commit, so the age measures whether the commit loop is alive.
        """
        now = self._clock()
        with self._lock:
            self._last_commit = now

    def commit_age_s(self) -> float:
        """Seconds since the last :meth:`mark_commit` (since construction before the first)."""
        with self._lock:
            last = self._last_commit
        return max(0.0, self._clock() - last)

    @staticmethod
    def _reason(reason: str) -> str:
        label = _label(reason)
        return label if _REASON_RE.fullmatch(label) else OTHER_REASON


class ReviewMetrics:
    """The review queue's metrics (``detector review``), registered on ``registry``.

    The three gauges are read from the queue when Prometheus scrapes (``depth``,
    ``oldest_age_s`` and ``overdue`` are called then, on the scraping thread), so they are
    never stale; by default they read 0 until :meth:`bind` connects a queue.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = METRIC_PREFIX
        self.queue_depth = Gauge(
            f"{p}review_queue_depth",
            "Held (delay) withdrawals waiting for an analyst's decision.",
            registry=registry,
        )
        self.oldest_held_age = Gauge(
            f"{p}review_oldest_held_age_seconds",
            "Seconds since the oldest withdrawal waiting for review was held (0: none waits).",
            registry=registry,
        )
        self.overdue = Gauge(
            f"{p}review_overdue_withdrawals",
            "Held withdrawals past their hold_seconds without a review decision.",
            registry=registry,
        )
        self.decisions = Counter(
            f"{p}review_decisions_total",
            "Review decisions written to the review-decisions topic, by outcome.",
            ["outcome"],
            registry=registry,
        )
        for outcome in REVIEW_OUTCOMES:
            self.decisions.labels(outcome=outcome)
        self.bind(lambda: 0, lambda: 0.0, lambda: 0)

    def bind(
        self,
        depth: Callable[[], float],
        oldest_age_s: Callable[[], float],
        overdue: Callable[[], float],
    ) -> None:
        """Read the gauges from these functions at every scrape."""
        self.queue_depth.set_function(depth)
        self.oldest_held_age.set_function(oldest_age_s)
        self.overdue.set_function(overdue)

    def observe_decision(self, outcome: str) -> None:
        """Count one decision written to Kafka; ``outcome`` is one of :data:`REVIEW_OUTCOMES`."""
        if outcome not in REVIEW_OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {REVIEW_OUTCOMES}")
        self.decisions.labels(outcome=outcome).inc()


def declare_all(registry: CollectorRegistry) -> CollectorRegistry:
    """Register every metric the detector's processes expose (worker and review queue) on
    ``registry``: what the dashboard and the alert rules may reference (tests)."""
    DetectorMetrics(registry)
    ReviewMetrics(registry)
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in the Prometheus text format: ``(payload, content_type)``.

    The content type is the classic ``text/plain; version=0.0.4``, which both Prometheus 2.x
    (Debian's 2.42) and 3.x parse; the payload is that format. Note for aiohttp: pass it as a
    ``Content-Type`` header, since ``content_type=`` refuses a value carrying a charset.
    """
    return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4
