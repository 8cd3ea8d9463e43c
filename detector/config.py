"""One frozen, typed settings object; every environment variable is read here.

All variables carry the ``DETECTOR_`` prefix except ``KAFKA_BOOTSTRAP_SERVERS``, the
conventional name shared with other Kafka tools. The README's settings table lists them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from detector.errors import ConfigError

__all__ = [
    "DEFAULT_KAFKA_PORT",
    "ENV_PREFIX",
    "Settings",
    "bootstrap_configured",
    "cache_home",
    "child_environment",
    "parse_bootstrap",
    "settings_table",
]

ENV_PREFIX = "DETECTOR_"
DEFAULT_KAFKA_PORT = 9092  # port assumed for a bootstrap entry written without one
_BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
# Faust's broker_request_timeout (default kept): the session timeout may not exceed it.
_FAUST_REQUEST_TIMEOUT_S = 90.0
_LOG_LEVELS = frozenset({"debug", "info", "warning", "error", "critical"})
_T = TypeVar("_T")


def _env(name: str, help_: str, *, env: str | None = None) -> dict[str, Any]:
    """Field metadata: the environment variable name and its one-line description."""
    return {"env": env or ENV_PREFIX + name.upper(), "help": help_}


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of the detector. Build with :meth:`from_env` or directly in tests."""

    bootstrap_servers: str = field(
        default="127.0.0.1:9092",
        metadata=_env("", "Kafka bootstrap servers (host:port[,host:port])", env=_BOOTSTRAP_ENV),
    )
    app_id: str = field(
        default="withdrawal-detector",
        metadata=_env("app_id", "Faust app id: consumer group and changelog topic prefix"),
    )
    topic_withdrawals: str = field(
        default="withdrawals", metadata=_env("topic_withdrawals", "input topic (raw JSON)")
    )
    topic_decisions: str = field(
        default="decisions", metadata=_env("topic_decisions", "verdict topic")
    )
    topic_dlq: str = field(
        default="withdrawals-dlq", metadata=_env("topic_dlq", "dead-letter topic")
    )
    partitions: int = field(
        default=4,
        metadata=_env("partitions", "partition count of every topic the worker creates"),
    )
    replication_factor: int = field(
        default=1, metadata=_env("replication_factor", "replication factor of created topics")
    )
    model_dir: Path = field(
        default=Path("models/default"),
        metadata=_env("model_dir", "directory of the verified model artifact to serve"),
    )
    data_dir: Path = field(
        default=Path(".detector"),
        metadata=_env("data_dir", "local state: Kafka data, Faust data dir, logs"),
    )
    batch_max: int = field(
        default=500, metadata=_env("batch_max", "largest micro-batch the scorer takes")
    )
    batch_within_ms: float = field(
        default=2.0,
        metadata=_env("batch_within_ms", "longest wait for a micro-batch to fill (ms)"),
    )
    web_port: int = field(
        default=6066,
        metadata=_env("web_port", "HTTP port of /metrics, /healthz and /readyz"),
    )
    web_host: str = field(default="127.0.0.1", metadata=_env("web_host", "HTTP bind address"))
    stuck_after_s: float = field(
        default=60.0,
        metadata=_env(
            "stuck_after_s", "/healthz fails after this many seconds of lag without progress"
        ),
    )
    hold_seconds: int = field(
        default=3600, metadata=_env("hold_seconds", "hold_seconds put on `delay` verdicts")
    )
    session_timeout_s: float = field(
        default=10.0,
        metadata=_env(
            "session_timeout_s",
            "a worker silent this long (s) leaves the group: failover time after a crash "
            "(broker bounds: group.min/max.session.timeout.ms, 6 s..30 min by default)",
        ),
    )
    heartbeat_interval_s: float = field(
        default=1.0,
        metadata=_env(
            "heartbeat_interval_s", "heartbeat to the group coordinator (s), <= session / 3"
        ),
    )
    rebalance_timeout_s: float = field(
        default=30.0,
        metadata=_env(
            "rebalance_timeout_s",
            "longest a rebalance waits for live workers to rejoin (s), >= session timeout",
        ),
    )
    group_instance_id: str = field(
        default="",
        metadata=_env(
            "group_instance_id",
            "static group membership: a unique, stable id per worker (e.g. the pod name); "
            "empty: dynamic membership (see README: failover)",
        ),
    )
    kafka_port: int = field(
        default=9092, metadata=_env("kafka_port", "port of the local broker (detector kafka)")
    )
    kafka_controller_port: int = field(
        default=9093, metadata=_env("kafka_controller_port", "KRaft controller port, local broker")
    )
    kafka_heap: str = field(
        default="768m", metadata=_env("kafka_heap", "JVM heap of the local broker")
    )
    log_level: str = field(default="info", metadata=_env("log_level", "worker log level"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every setting from ``environ`` (default ``os.environ``); bad values raise."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f.name, f.metadata["env"], raw, _type_of(f))
        values.update(overrides)
        return cls(**values)  # __post_init__ validates

    def to_env(self) -> dict[str, str]:
        """The environment that :meth:`from_env` reads back into these settings (for
        starting worker processes: the demo, tests, benchmarks)."""
        return {f.metadata["env"]: str(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values no worker could run with (every constructor
        goes through here, not only :meth:`from_env`)."""
        if self.partitions < 1:
            raise ConfigError(f"partitions must be >= 1, got {self.partitions}")
        if self.replication_factor < 1:
            raise ConfigError("replication_factor must be >= 1")
        if self.batch_max < 1:
            raise ConfigError("batch_max must be >= 1")
        if self.batch_within_ms <= 0:
            raise ConfigError("batch_within_ms must be > 0")
        parse_bootstrap(self.bootstrap_servers)  # raises for an empty or malformed list
        if not 0 < self.web_port < 65536:
            raise ConfigError(f"web_port must be in 1..65535, got {self.web_port}")
        if self.stuck_after_s <= 0:
            raise ConfigError(f"stuck_after_s must be > 0, got {self.stuck_after_s}")
        if not 0 < self.heartbeat_interval_s * 3 <= self.session_timeout_s:
            raise ConfigError(
                f"heartbeat_interval_s ({self.heartbeat_interval_s}) must be > 0 and at most a "
                f"third of session_timeout_s ({self.session_timeout_s})"
            )
        if not self.session_timeout_s <= self.rebalance_timeout_s <= _FAUST_REQUEST_TIMEOUT_S:
            raise ConfigError(
                f"rebalance_timeout_s ({self.rebalance_timeout_s}) must be between "
                f"session_timeout_s ({self.session_timeout_s}) and {_FAUST_REQUEST_TIMEOUT_S}"
            )
        if self.hold_seconds < 0:
            raise ConfigError(f"hold_seconds must be >= 0, got {self.hold_seconds}")
        if self.log_level.lower() not in _LOG_LEVELS:
            raise ConfigError(
                f"log_level must be one of {sorted(_LOG_LEVELS)}, got {self.log_level!r}"
            )

    # Names derived from the settings, in one place.
    @property
    def topic_by_destination(self) -> str:
        """Internal repartition topic: validated events keyed by destination (fan-in)."""
        return f"{self.app_id}-withdrawals-by-destination"

    def changelog_topic(self, table: str) -> str:
        return f"{self.app_id}-{table}-changelog"

    @property
    def broker_url(self) -> str:
        """Faust's broker URL: ``kafka://h1:9092;kafka://h2:9092``."""
        return ";".join(f"kafka://{hp}" for hp in self.bootstrap_list)

    @property
    def bootstrap_list(self) -> list[str]:
        """``["h1:9092", "[::1]:9093"]``: what Kafka clients take (ports filled in)."""
        return [
            f"[{h}]:{p}" if ":" in h else f"{h}:{p}"
            for h, p in parse_bootstrap(self.bootstrap_servers)
        ]


def parse_bootstrap(bootstrap_servers: str) -> list[tuple[str, int]]:
    """``"h1:9092,[::1]:9093,h3"`` -> ``[("h1", 9092), ("::1", 9093), ("h3", 9092)]``.

    The one parser of bootstrap lists; an empty or malformed list raises ConfigError.
    """
    if not bootstrap_servers.strip():
        raise ConfigError(f"{_BOOTSTRAP_ENV} is empty")
    out: list[tuple[str, int]] = []
    for raw in bootstrap_servers.split(","):
        entry = raw.strip()
        if not entry:
            continue
        if entry.startswith("["):  # [ipv6]:port
            host, _, rest = entry[1:].partition("]")
            port = rest.lstrip(":") or str(DEFAULT_KAFKA_PORT)
        elif entry.count(":") == 1:
            host, port = entry.split(":")
        else:
            host, port = entry, str(DEFAULT_KAFKA_PORT)
        try:
            number = int(port)
        except ValueError:
            number = -1
        if not host or not 0 < number < 65536:
            raise ConfigError(f"bad bootstrap server {entry!r} in {bootstrap_servers!r}")
        out.append((host, number))
    if not out:
        raise ConfigError(
            f"no bootstrap servers in {bootstrap_servers!r} (KAFKA_BOOTSTRAP_SERVERS)"
        )
    return out


def bootstrap_configured(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``KAFKA_BOOTSTRAP_SERVERS`` names a cluster (the demo then starts no broker)."""
    environ = os.environ if environ is None else environ
    return bool(environ.get(_BOOTSTRAP_ENV, "").strip())


def cache_home(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/detector`` (``~/.cache/detector`` when unset or relative): where the
    local broker's jars are cached (the XDG convention, not a detector setting)."""
    environ = os.environ if environ is None else environ
    xdg = environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "detector"


def child_environment(settings: Settings | None = None, **extra: str) -> dict[str, str]:
    """The environment for a child process: ours, then ``settings`` as variables, then
    ``extra`` (how the tools start workers and the broker)."""
    env = dict(os.environ)
    if settings is not None:
        env.update(settings.to_env())
    env.update(extra)
    return env


def _type_of(f: dataclasses.Field[Any]) -> Callable[[str], Any]:
    return {"int": int, "float": float, "Path": Path, "str": str}[str(f.type)]


def _convert(name: str, env: str, raw: str, conv: Callable[[str], _T]) -> _T:
    try:
        return conv(raw.strip())
    except ValueError as exc:
        raise ConfigError(f"{env}={raw!r} is not a valid {name}: {exc}") from exc


def settings_table() -> str:
    """The README's settings table, generated from the dataclass (kept in sync by a test)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(Settings):
        rows.append(f"| `{f.metadata['env']}` | `{f.default}` | {f.metadata['help']} |")
    return "\n".join(rows)
