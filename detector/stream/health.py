"""Liveness and readiness as plain logic, plus the HTTP endpoints that expose them.

Nothing here imports Faust: the worker feeds a :class:`Health` with what it observes
(progress, lag, model, partition assignment, table recovery) and serves
:func:`http_response` from Faust's web server.

* **Liveness** (``/healthz``) catches the known Faust failure where a consumer silently stops
  fetching after a broker outage (faust-streaming #175, #523, #629): records are waiting
  (lag > 0) but none has been processed for more than ``stuck_after_s``. An idle worker with
  no lag is alive. The check is armed only while partitions are assigned and tables are
  recovered: before that the worker cannot make progress, and waiting is readiness's
  business (a liveness failure restarts the pod, which would restart a long recovery).
* **Readiness** (``/readyz``): the model is loaded, partitions are assigned and the tables
  are recovered; the reason lists what is missing.

Endpoints: ``/metrics`` (Prometheus text format), ``/healthz`` and ``/readyz`` (200 or 503
with a one-line plain-text reason), 404 for anything else.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry

from detector.stream.metrics import render

__all__ = [
    "HEALTH_PATH",
    "METRICS_PATH",
    "READY_PATH",
    "TEXT_CONTENT_TYPE",
    "Health",
    "http_response",
]

METRICS_PATH = "/metrics"
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"

_OK = 200
_NOT_FOUND = 404
_SERVER_ERROR = 500
_UNAVAILABLE = 503  # probes treat any status >= 400 as failure; 503 says "try again later"


class Health:
    """What the worker knows about its own health; thread-safe, clock injectable for tests.

    ``stuck_after_s`` is the longest time (seconds) the worker may have lag without
    processing a single event before liveness fails (``Settings.stuck_after_s``).
    """

    def __init__(self, stuck_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if stuck_after_s <= 0:
            raise ValueError(f"stuck_after_s must be > 0, got {stuck_after_s}")
        self.stuck_after_s = stuck_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._processed = 0
        self._last_progress = clock()
        self._lag = 0
        self._lag_since: float | None = None  # when lag last went from 0 to > 0
        self._armed_since: float | None = None  # when the worker last became able to consume
        self._model_loaded = False
        self._partitions_assigned = False
        self._tables_recovered = False
        # partition -> [committed offset, when it last advanced, when its lag appeared]
        self._partitions: dict[str, list[float]] = {}
        self._dead_agents: dict[str, str] = {}  # agent name -> what killed it

    # Inputs from the worker --------------------------------------------------------------

    def record_progress(self, n: int = 1) -> None:
        """``n`` events were processed (a verdict or a DLQ record each); n <= 0 is no progress."""
        if n <= 0:
            return
        now = self._clock()
        with self._lock:
            self._processed += n
            self._last_progress = now

    def set_lag(self, total_lag: int) -> None:
        """Total records behind the high watermarks of the assigned partitions."""
        lag = max(0, total_lag)  # a stale watermark can make the difference negative
        now = self._clock()
        with self._lock:
            if lag > 0 and self._lag == 0:
                self._lag_since = now
            elif lag == 0:
                self._lag_since = None
            self._lag = lag

    def observe_partitions(self, partitions: Mapping[str, tuple[int, int]]) -> None:
        """Per source partition: ``(committed offset, lag)``, replacing the previous set.

        A partition whose committed offset does not advance while it has lag is stuck even
        when other partitions (or another stage of the pipeline) still make progress: the
        liveness check fails for it after ``stuck_after_s``.
        """
        now = self._clock()
        with self._lock:
            seen = {}
            for key, (committed, lag) in partitions.items():
                entry = self._partitions.get(key)
                if entry is None:
                    entry = [float(committed), now, now if lag > 0 else -1.0]
                else:
                    if committed > entry[0]:
                        entry[0], entry[1] = float(committed), now
                    if lag <= 0:
                        entry[2] = -1.0
                    elif entry[2] < 0:
                        entry[2] = now
                seen[key] = entry
            self._partitions = seen

    def agent_died(self, name: str, reason: str) -> None:
        """An agent stopped on an exception (records no longer flow through it): the
        worker must be restarted, so liveness fails from now on."""
        with self._lock:
            self._dead_agents[name] = reason

    def set_model_loaded(self, loaded: bool) -> None:
        with self._lock:
            self._model_loaded = loaded

    def set_partitions_assigned(self, assigned: bool) -> None:
        with self._lock:
            self._partitions_assigned = assigned
            self._rearm()

    def set_tables_recovered(self, recovered: bool) -> None:
        with self._lock:
            self._tables_recovered = recovered
            self._rearm()

    def _rearm(self) -> None:
        """Start the stuck clock afresh whenever the worker (again) becomes able to consume."""
        able = self._partitions_assigned and self._tables_recovered
        if able and self._armed_since is None:
            self._armed_since = self._clock()
        elif not able:
            self._armed_since = None

    # Read side ---------------------------------------------------------------------------

    @property
    def processed(self) -> int:
        """Events processed since start."""
        with self._lock:
            return self._processed

    @property
    def lag(self) -> int:
        with self._lock:
            return self._lag

    def liveness(self) -> tuple[bool, str]:
        """``(alive, reason)``: dead only when records wait and none was processed for long,
        or when one partition's committed offset stands still while it has lag."""
        now = self._clock()
        with self._lock:
            if self._dead_agents:
                name, reason = next(iter(self._dead_agents.items()))
                return False, f"dead: agent {name!r} stopped: {reason}"
            lag = self._lag
            if self._armed_since is None:
                return True, "ok: not consuming yet (partitions unassigned or tables recovering)"
            for key, (committed, advanced_at, lag_since) in self._partitions.items():
                if lag_since < 0:
                    continue
                waited = now - max(advanced_at, lag_since, self._armed_since)
                if waited > self.stuck_after_s:
                    return False, (
                        f"stuck: partition {key} has lag and its committed offset "
                        f"{committed:.0f} has not advanced for {waited:.1f} s "
                        f"(limit {self.stuck_after_s:g} s)"
                    )
            if lag == 0:
                return True, "ok: no lag"
            # The stuck clock starts at the latest of: last progress, lag appearing, arming.
            since = max(self._last_progress, self._lag_since or 0.0, self._armed_since)
        waited = now - since
        if waited > self.stuck_after_s:
            return False, (
                f"stuck: {lag} records behind and no progress for {waited:.1f} s "
                f"(limit {self.stuck_after_s:g} s)"
            )
        return True, f"ok: {lag} records behind, progressing"

    def readiness(self) -> tuple[bool, str]:
        """``(ready, reason)``: ready once the model is loaded, partitions assigned, tables
        recovered; otherwise the reason lists what is missing."""
        with self._lock:
            missing = [
                what
                for what, done in (
                    ("model not loaded", self._model_loaded),
                    ("partitions not assigned", self._partitions_assigned),
                    ("tables not recovered", self._tables_recovered),
                )
                if not done
            ]
        if missing:
            return False, "not ready: " + ", ".join(missing)
        return True, "ready"


def http_response(path: str, registry: CollectorRegistry, health: Health) -> tuple[int, bytes, str]:
    """``(status, body, content_type)`` for a GET of ``path`` (the query string is ignored)."""
    route = path.split("?", 1)[0]
    if route == METRICS_PATH:
        payload, content_type = render(registry)
        return _OK, payload, content_type
    if route in (HEALTH_PATH, READY_PATH):
        ok, reason = health.liveness() if route == HEALTH_PATH else health.readiness()
        return (_OK if ok else _UNAVAILABLE), (reason + "\n").encode(), TEXT_CONTENT_TYPE
    return _NOT_FOUND, b"not found\n", TEXT_CONTENT_TYPE
