"""Render the main graphs of the Grafana dashboard from a live Prometheus into one PNG.

The queries, titles, legends, units, stacking and threshold lines are read from
``deploy/grafana/dashboards/detector.json`` (the panels named in :data:`MAIN_PANELS`), so the
picture shows what the dashboard shows. Data comes from Prometheus's ``/api/v1/query_range``.

Two ways to run it::

    # Render the last 10 minutes of an existing Prometheus that scrapes detector workers.
    python bench/render_dashboard.py --prometheus http://127.0.0.1:9090 --minutes 10

    # Self-contained demo on the local broker (``detector kafka start``): start a worker and
    # Debian's prometheus (the repository's rules, scraping every second), send ~20
    # synthetic withdrawals/s for 150 s with an account-takeover burst in the middle and a
    # few invalid records, then render docs/images/dashboard.png.
    python bench/render_dashboard.py --demo 150

The demo traffic (:class:`Traffic`) stamps every withdrawal's ``requested_at`` with the
send time, so the decision-latency graph measures the real end-to-end latency. The module
also provides the pieces the live Prometheus test (``tests/test_prometheus_live.py``) uses:
:func:`prometheus_config`, :func:`running_prometheus`, :class:`Traffic`, :func:`fetch_graphs`
and :func:`render_png`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml  # type: ignore[import-untyped]

from detector.local.process import log_tail, stop_process, worker_process

__all__ = [
    "DASHBOARD",
    "MAIN_PANELS",
    "Graph",
    "Series",
    "Traffic",
    "fetch_graphs",
    "instance_regex",
    "main",
    "prometheus_config",
    "query_range",
    "render_png",
    "running_prometheus",
]

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "detector.json"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
RULES_GLOB = REPO / "deploy" / "prometheus" / "rules" / "*.yml"
DEFAULT_OUT = REPO / "docs" / "images" / "dashboard.png"

# The dashboard panels drawn, in grid order (two columns).
MAIN_PANELS: tuple[str, ...] = (
    "Withdrawals consumed / s",
    "Verdicts / s by verdict",
    "Decision latency (requested_at → verdict sent)",
    "Consumer lag per partition",
    "DLQ records / s by reason",
    "Anomaly score quantiles",
)
_DETECTOR_JOB = "detector"  # the job name the alert rules match
_HTTP_TIMEOUT_S = 10.0
_READY_TIMEOUT_S = 90.0
_UNITS = {"reqps": "per second", "s": "seconds", "short": "", "none": ""}
# Colours close to Grafana's classic palette, with fixed ones for the verdicts.
_PALETTE = ("#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9")
_FIXED_COLOURS = {"allow": "#56a64b", "delay": "#f2cc0c", "refuse": "#e02f44"}


# Prometheus HTTP API ---------------------------------------------------------------------


def api_get(base_url: str, path: str, **params: str) -> Any:
    """GET ``base_url + path`` with query ``params``; the decoded ``data`` of a success reply.

    Raises ``RuntimeError`` with Prometheus's error message when the status is not success.
    """
    url = f"{base_url}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT_S) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 400/422/503 carry a JSON error body
        body = json.loads(exc.read() or b"{}")
    if body.get("status") != "success":
        raise RuntimeError(f"{url}: {body.get('errorType')}: {body.get('error')}")
    return body["data"]


def query_range(
    base_url: str, expr: str, start: float, end: float, step: float
) -> list[dict[str, Any]]:
    """``/api/v1/query_range`` result (a matrix): ``[{"metric": {...}, "values": [...]}]``."""
    data = api_get(
        base_url,
        "/api/v1/query_range",
        query=expr,
        start=f"{start:.3f}",
        end=f"{end:.3f}",
        step=f"{step:g}",
    )
    result: list[dict[str, Any]] = data["result"]
    return result


# The dashboard's graphs --------------------------------------------------------------------


@dataclass
class Series:
    label: str
    times: list[float]  # epoch seconds
    values: list[float]  # NaN where Prometheus returned NaN


@dataclass
class Graph:
    """One dashboard panel: its title, y unit, stacking, threshold lines and data."""

    title: str
    unit: str
    stacked: bool
    thresholds: list[float]
    series: list[Series] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)


def _panels(dashboard: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    def walk(panels: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", ()))

    yield from walk(dashboard["panels"])


def grafana_vars(expr: str, variables: Mapping[str, str]) -> str:
    """Replace Grafana's ``$name`` / ``${name}`` variables from ``variables``."""

    def replace_var(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise KeyError(f"no value for Grafana variable ${name} in {expr!r}")
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace_var, expr)


def instance_regex(*targets: str) -> str:
    """A ``$instance`` value matching exactly ``targets``, escaped for a PromQL string."""
    regex = "|".join(re.escape(t) for t in targets)
    return regex.replace("\\", "\\\\")  # PromQL strings take Go escapes: \. -> \\.


def _legend(template: str, labels: Mapping[str, str]) -> str:
    if not template:
        inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        return "{" + inner + "}"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


def fetch_graphs(
    base_url: str,
    start: float,
    end: float,
    *,
    step: float = 2.0,
    instance: str = ".*",
    rate_interval: str = "15s",
    titles: Sequence[str] = MAIN_PANELS,
    dashboard_path: Path = DASHBOARD,
) -> list[Graph]:
    """Query Prometheus for the panels ``titles`` of the dashboard over [start, end].

    ``instance`` is the value of the dashboard's ``$instance`` variable (a regex);
    ``rate_interval`` replaces ``$__rate_interval``.
    """
    dashboard = json.loads(dashboard_path.read_text(encoding="utf-8"))
    by_title = {str(p.get("title")): p for p in _panels(dashboard) if p.get("type") != "row"}
    missing = [t for t in titles if t not in by_title]
    if missing:
        raise KeyError(f"panels not on the dashboard {dashboard_path}: {missing}")
    variables = {
        "instance": instance,
        "__rate_interval": rate_interval,
        "__interval": f"{step:g}s",
        "__range": f"{max(1, round(end - start))}s",
    }
    graphs = []
    for title in titles:
        panel = by_title[title]
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        custom = defaults.get("custom", {})
        thresholds: list[float] = []
        if custom.get("thresholdsStyle", {}).get("mode", "off") != "off":
            steps = defaults.get("thresholds", {}).get("steps", [])
            thresholds = [float(s["value"]) for s in steps if s.get("value") is not None]
        graph = Graph(
            title=title,
            unit=str(defaults.get("unit", "")),
            stacked=custom.get("stacking", {}).get("mode", "none") == "normal",
            thresholds=thresholds,
        )
        for target in panel.get("targets", ()):
            expr = grafana_vars(str(target["expr"]), variables)
            graph.queries.append(expr)
            for item in query_range(base_url, expr, start, end, step):
                graph.series.append(
                    Series(
                        label=_legend(str(target.get("legendFormat", "")), item["metric"]),
                        times=[float(t) for t, _ in item["values"]],
                        values=[float(v) for _, v in item["values"]],
                    )
                )
        graph.series.sort(key=lambda s: s.label)
        graphs.append(graph)
    return graphs


def render_png(
    graphs: Sequence[Graph], out: Path, *, title: str = "", subtitle: str = "", columns: int = 2
) -> Path:
    """Draw ``graphs`` in a grid (``columns`` wide) into the PNG ``out``; returns ``out``."""
    from matplotlib.dates import DateFormatter
    from matplotlib.figure import Figure

    rows = max(1, math.ceil(len(graphs) / columns))
    fig = Figure(figsize=(7.0 * columns, 4.0 * rows + 0.8), dpi=110, layout="constrained")
    if title:
        fig.suptitle(f"{title}\n{subtitle}" if subtitle else title, fontsize=12)
    axes = fig.subplots(rows, columns, squeeze=False)
    for index, ax in enumerate(axes.flat):
        if index >= len(graphs):
            ax.set_visible(False)
            continue
        _draw(ax, graphs[index])
        ax.xaxis.set_major_formatter(DateFormatter("%H:%M:%S", tz=UTC))  # type: ignore[no-untyped-call]
        ax.tick_params(labelsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def _draw(ax: Any, graph: Graph) -> None:
    ax.set_title(graph.title, fontsize=10, loc="left")
    ax.grid(True, alpha=0.3)
    unit = _UNITS.get(graph.unit, graph.unit)
    if unit:
        ax.set_ylabel(unit, fontsize=8)
    colours = iter(_PALETTE * 4)
    if not graph.series:
        ax.text(0.5, 0.5, "No data", ha="center", va="center", transform=ax.transAxes)
    if graph.stacked and graph.series:
        times = [datetime.fromtimestamp(t, UTC) for t in graph.series[0].times]
        same_axis = all(s.times == graph.series[0].times for s in graph.series)
        if same_axis:
            cleaned = [[0.0 if math.isnan(v) else v for v in s.values] for s in graph.series]
            ax.stackplot(
                times,
                cleaned,
                labels=[s.label for s in graph.series],
                colors=[_FIXED_COLOURS.get(s.label) or next(colours) for s in graph.series],
                alpha=0.8,
            )
        else:  # differently sampled series cannot be stacked point by point
            graph = replace(graph, stacked=False)
    if not graph.stacked:
        for s in graph.series:
            ax.plot(
                [datetime.fromtimestamp(t, UTC) for t in s.times],
                s.values,
                label=s.label,
                linewidth=1.3,
                color=_FIXED_COLOURS.get(s.label) or next(colours),
            )
    if graph.unit == "s" and any(v > 0 for s in graph.series for v in s.values):
        ax.set_yscale("log")  # p50 in ms and p99 near the SLO both stay readable
        ax.set_ylabel("seconds (log scale)", fontsize=8)
    else:
        ax.set_ylim(bottom=0)
    for value in graph.thresholds:
        ax.axhline(value, color="#e02f44", linestyle="--", linewidth=1.2)
        ax.annotate(
            f"SLO {value * 1000:g} ms" if graph.unit == "s" else f"{value:g}",
            xy=(1.0, value),
            xycoords=("axes fraction", "data"),
            xytext=(-4, 3),
            textcoords="offset points",
            ha="right",
            fontsize=8,
            color="#e02f44",
        )
    if graph.series:  # below the graph, as on the dashboard
        ax.legend(
            fontsize=7,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.1),
            ncol=min(4 if max(len(s.label) for s in graph.series) <= 24 else 2, len(graph.series)),
            frameon=False,
        )


# Prometheus -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prometheus_config(
    targets: Sequence[str],
    rule_files: Sequence[str | Path] = (RULES_GLOB,),
    *,
    interval: str = "1s",
    scrape_timeout: str = "800ms",
) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with its ``detector`` job scraping ``targets``.

    ``rule_files`` (absolute paths or globs) replace the relative ``rules/*.yml``; the scrape
    and evaluation intervals become ``interval`` (the timeout must stay below it).
    """
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    config["global"].update(
        scrape_interval=interval, evaluation_interval=interval, scrape_timeout=scrape_timeout
    )
    config["rule_files"] = [str(p) for p in rule_files]
    jobs = [j for j in config["scrape_configs"] if j["job_name"] == _DETECTOR_JOB]
    if len(jobs) != 1:
        raise ValueError(f"{PROMETHEUS_CONFIG} has no single {_DETECTOR_JOB!r} job")
    jobs[0]["static_configs"] = [{"targets": list(targets)}]
    return config


def prometheus_binary() -> str | None:
    """Debian's prometheus: on PATH, else /usr/bin/prometheus; None when not installed."""
    found = shutil.which("prometheus")
    if found:
        return found
    return "/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None


@contextlib.contextmanager
def running_prometheus(
    binary: str, config: Mapping[str, Any], workdir: Path, *, port: int | None = None
) -> Iterator[str]:
    """Run ``binary`` with ``config`` and a fresh TSDB under ``workdir``; yields its base URL.

    Waits for ``/-/ready``; terminates the process (and reports its log on failure) after.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    port = port or free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {proc.returncode}:\n{log_tail(log_path)}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{base_url}/-/ready", timeout=2.0) as response,
            ):
                if response.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus not ready:\n{log_tail(log_path)}")
            time.sleep(0.2)
        yield base_url
    finally:
        stop_process(proc)


# Synthetic traffic --------------------------------------------------------------------------


class Traffic:
    """A background thread producing synthetic withdrawals to ``topics`` at ``rate``/s.

    Every withdrawal is keyed by its account_id and stamped ``requested_at`` = send time.
    Normal traffic: a large population of accounts (most withdraw once during a short run)
    with personal typical amounts and two habitual destinations, 3 % to a new address.
    During :meth:`attack`, half of the traffic comes from a few taken-over accounts
    draining 20-100x their habit to three attacker addresses. Every ``invalid_every``-th
    record is invalid (malformed JSON, a negative amount or no destination: DLQ), and so is
    a share of them during :meth:`malformed`.
    Each record is sent to every topic of ``topics``.

    Use as a context manager (starts on enter, stops and flushes on exit); errors of the
    thread are kept in :attr:`error` and re-raised by :meth:`stop`.
    """

    _ACCOUNTS = 200_000  # most accounts have no history: normal traffic is rarely flagged
    _TAKEN_OVER = 30
    _NEW_DESTINATION_SHARE = 0.03

    def __init__(
        self,
        bootstrap_servers: Sequence[str],
        topics: Sequence[str],
        *,
        rate: float = 20.0,
        invalid_every: int = 50,
        seed: int = 7,
    ) -> None:
        self.bootstrap_servers = list(bootstrap_servers)
        self.topics = list(topics)
        self.rate = rate
        self.invalid_every = invalid_every
        self.sent_valid = 0
        self.sent_invalid = 0
        self.error: BaseException | None = None
        self._rng = random.Random(seed)
        self._attack_until = 0.0
        self._malformed_until = 0.0
        self._malformed_share = 0.0
        self._stop_event = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._n = 0
        self._run_id = uuid.uuid4().hex[:6]

    def __enter__(self) -> Traffic:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(raise_error=exc is None)

    def start(self) -> None:
        self._thread.start()

    def attack(self, seconds: float) -> None:
        """Mix an account-takeover burst into the traffic for the next ``seconds``."""
        self._attack_until = time.monotonic() + seconds

    def malformed(self, seconds: float, share: float = 0.3) -> None:
        """Make ``share`` of the records invalid for the next ``seconds`` (a bad producer)."""
        self._malformed_share = share
        self._malformed_until = time.monotonic() + seconds

    def stop(self, *, raise_error: bool = True) -> None:
        self._stop_event.set()
        if self._thread.is_alive():
            self._thread.join(60)
        if raise_error and self.error is not None:
            raise RuntimeError(f"traffic thread failed: {self.error!r}") from self.error

    def _account(self, index: int) -> tuple[str, float, tuple[str, str]]:
        rng = random.Random(index * 7919 + 1)
        habit = 10 ** rng.uniform(1.3, 3.7)  # ~$20 .. ~$5,000 typical withdrawal
        dests = (f"T{index:06d}home{rng.randrange(10**6):06d}", f"T{index:06d}alt")
        return f"acct-{index:06d}", habit, dests

    def next_record(self, now: float) -> tuple[bytes, bytes, bool]:
        """``(key, value, valid)`` of the next record, ``requested_at`` = ``now``."""
        from detector.events import format_rfc3339

        self._n += 1
        rng = self._rng
        wid = f"w-{self._run_id}-{self._n}"
        if time.monotonic() < self._attack_until and rng.random() < 0.5:
            account, habit, _ = self._account(rng.randrange(self._TAKEN_OVER))
            usd = habit * rng.uniform(20, 100)
            destination = f"Tattacker{rng.randrange(3)}"
        else:
            account, habit, dests = self._account(rng.randrange(self._ACCOUNTS))
            usd = habit * math.exp(rng.gauss(0, 0.3))
            if rng.random() < self._NEW_DESTINATION_SHARE:
                destination = f"Tnew-{wid}"
            else:
                destination = rng.choice(dests)
        event: dict[str, Any] = {
            "withdrawal_id": wid,
            "account_id": account,
            "asset": "USDT",
            "amount": f"{usd:.2f}",
            "amount_usd": round(usd, 2),
            "destination": destination,
            "requested_at": format_rfc3339(now),
            "metadata": {"source": "render_dashboard"},
        }
        invalid = bool(self.invalid_every) and self._n % self.invalid_every == 0
        if time.monotonic() < self._malformed_until and rng.random() < self._malformed_share:
            invalid = True
        if invalid:
            kind = self._n % 3
            if kind == 0:
                return account.encode(), b"{not json", False
            if kind == 1:
                event["amount"] = "-1"
            else:
                event["destination"] = None
            return account.encode(), json.dumps(event).encode(), False
        return account.encode(), json.dumps(event, separators=(",", ":")).encode(), True

    def _run(self) -> None:
        try:
            from detector.stream.compat import import_kafka

            import_kafka()  # hides kafka-python's import-time DeprecationWarnings
            from kafka import KafkaProducer

            producer = KafkaProducer(
                bootstrap_servers=self.bootstrap_servers, acks="all", linger_ms=2
            )
            try:
                next_at = time.monotonic()
                while not self._stop_event.is_set():
                    key, value, valid = self.next_record(time.time())
                    for topic in self.topics:
                        producer.send(topic, key=key, value=value)
                    if valid:
                        self.sent_valid += 1
                    else:
                        self.sent_invalid += 1
                    next_at += self._rng.expovariate(self.rate)
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        self._stop_event.wait(delay)
                producer.flush(30)
            finally:
                producer.close(timeout=10)
        except BaseException as exc:  # reported by stop()
            self.error = exc


# Demo ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _demo_worker(bootstrap_servers: str, workdir: Path) -> Iterator[tuple[Any, str]]:
    """A ``detector worker`` on topics of its own (deleted after); yields (settings, target)."""
    from detector.config import Settings
    from detector.stream.app import topic_specs
    from detector.stream.topics import delete_topics, ensure_topics

    run = uuid.uuid4().hex[:4]
    settings = replace(
        Settings.from_env(),
        bootstrap_servers=bootstrap_servers,
        app_id=f"demo{run}",
        topic_withdrawals=f"demo{run}-withdrawals",
        topic_decisions=f"demo{run}-decisions",
        topic_dlq=f"demo{run}-withdrawals-dlq",
        topic_labels=f"demo{run}-labels",
        topic_decisions_shadow=f"demo{run}-decisions-shadow",
        topic_review_decisions=f"demo{run}-review-decisions",
        model_dir=REPO / "models" / "default",
        data_dir=workdir / "worker",
        web_port=free_port(),
    )
    specs = topic_specs(settings)
    ensure_topics(bootstrap_servers, specs)
    target = f"127.0.0.1:{settings.web_port}"
    try:
        with worker_process(settings, log_path=settings.data_dir / "worker.log", cwd=REPO):
            yield settings, target
    finally:
        with contextlib.suppress(Exception):
            delete_topics(bootstrap_servers, [s.name for s in specs])


def run_demo(seconds: float, out: Path, *, rate: float, workdir: Path) -> Path:
    """Worker + Prometheus + ``seconds`` of traffic with an attack burst; render ``out``."""
    from detector.config import Settings

    binary = prometheus_binary()
    if binary is None:
        raise SystemExit("prometheus not found: apt-get install -y prometheus")
    bootstrap = Settings.from_env().bootstrap_servers
    with contextlib.ExitStack() as stack:
        settings, target = stack.enter_context(_demo_worker(bootstrap, workdir))
        prom = stack.enter_context(
            running_prometheus(binary, prometheus_config([target]), workdir / "prometheus")
        )
        traffic = stack.enter_context(
            Traffic(
                settings.bootstrap_list,
                [settings.topic_withdrawals],
                rate=rate,
                invalid_every=100,
            )
        )
        start = time.time()
        bad_at, bad_for = 0.25 * seconds, min(15.0, 0.1 * seconds)
        attack_at, attack_for = 0.55 * seconds, min(25.0, 0.15 * seconds)
        print(
            f"demo: {seconds:g} s of traffic at {rate:g}/s, malformed records at "
            f"+{bad_at:.0f} s, attack at +{attack_at:.0f} s"
        )
        time.sleep(bad_at)
        traffic.malformed(bad_for)
        time.sleep(attack_at - bad_at)
        traffic.attack(attack_for)
        time.sleep(max(0.0, seconds - attack_at))
        end = time.time()
        graphs = fetch_graphs(prom, start, end, step=1.0, instance=instance_regex(target))
        subtitle = (
            f"Demo run: one worker on a local Kafka broker, ~{rate:g} synthetic withdrawals/s "
            f"(requested_at = send time); Prometheus scraping every 1 s, "
            f"$__rate_interval = 15s.\n"
            f"30 % malformed records from +{bad_at:.0f} s for {bad_for:.0f} s; "
            f"account-takeover burst from +{attack_at:.0f} s for {attack_for:.0f} s."
        )
        render_png(
            graphs, out, title="Withdrawal detector: main dashboard graphs", subtitle=subtitle
        )
        print(
            f"sent {traffic.sent_valid} valid + {traffic.sent_invalid} invalid records; wrote {out}"
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prometheus", help="base URL of a Prometheus scraping the workers")
    source.add_argument(
        "--demo", type=float, metavar="SECONDS", help="run a worker + Prometheus demo first"
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="window (--prometheus)")
    parser.add_argument("--instance", default=".*", help="$instance regex (--prometheus)")
    parser.add_argument("--rate-interval", default="1m", help="$__rate_interval (--prometheus)")
    parser.add_argument("--rate", type=float, default=20.0, help="withdrawals/s (--demo)")
    parser.add_argument("--workdir", type=Path, help="demo files (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.demo is not None:
        import tempfile

        with contextlib.ExitStack() as stack:
            workdir = args.workdir or Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="render-dashboard-"))
            )
            run_demo(args.demo, args.out, rate=args.rate, workdir=workdir)
        return 0
    end = time.time()
    start = end - args.minutes * 60
    step = max(1.0, (end - start) / 300)
    graphs = fetch_graphs(
        args.prometheus.rstrip("/"),
        start,
        end,
        step=step,
        instance=args.instance,
        rate_interval=args.rate_interval,
    )
    render_png(
        graphs,
        args.out,
        title="Withdrawal detector: main dashboard graphs",
        subtitle=f"{args.prometheus}, last {args.minutes:g} min",
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
