"""One frozen, typed settings object; every environment variable is read here.

All variables carry the ``DETECTOR_`` prefix except ``KAFKA_BOOTSTRAP_SERVERS``, the
conventional name shared with other Kafka tools. The README's settings table lists them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from detector.errors import ConfigError

if TYPE_CHECKING:
    from detector.features import Structuring
    from detector.model import Model
    from detector.pipeline import Feedback

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
_STORES = ("memory", "rocksdb")
_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
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
    kafka_security_protocol: str = field(
        default="PLAINTEXT",
        metadata=_env(
            "kafka_security_protocol",
            "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (every Kafka client of the detector)",
        ),
    )
    kafka_sasl_mechanism: str = field(
        default="SCRAM-SHA-512",
        metadata=_env(
            "kafka_sasl_mechanism", "SASL mechanism: SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN"
        ),
    )
    kafka_sasl_username: str = field(
        default="", metadata=_env("kafka_sasl_username", "SASL user name")
    )
    kafka_sasl_password_file: str = field(
        default="",
        metadata=_env(
            "kafka_sasl_password_file",
            "file holding the SASL password (a mounted secret; never the password itself)",
        ),
    )
    kafka_ssl_cafile: str = field(
        default="",
        metadata=_env("kafka_ssl_cafile", "CA bundle (PEM) that signs the brokers' certificates"),
    )
    kafka_ssl_certfile: str = field(
        default="", metadata=_env("kafka_ssl_certfile", "client certificate (PEM), for mutual TLS")
    )
    kafka_ssl_keyfile: str = field(
        default="", metadata=_env("kafka_ssl_keyfile", "client private key (PEM), for mutual TLS")
    )
    kafka_ssl_check_hostname: bool = field(
        default=True,
        metadata=_env(
            "kafka_ssl_check_hostname", "verify that broker certificates name the broker host"
        ),
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
    topic_decisions_shadow: str = field(
        default="decisions-shadow",
        metadata=_env(
            "topic_decisions_shadow", "the shadow model's verdicts (never read by wallets)"
        ),
    )
    topic_labels: str = field(
        default="labels",
        metadata=_env(
            "topic_labels",
            "labels topic: fraud/legit reports (analysts, customers, chain analytics)",
        ),
    )
    topic_review_decisions: str = field(
        default="review-decisions",
        metadata=_env(
            "topic_review_decisions", "final decisions on held withdrawals (`detector review`)"
        ),
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
    model_store: Path = field(
        default=Path("models/store"),
        metadata=_env(
            "model_store",
            "directory of immutable model versions that `detector models promote` picks from",
        ),
    )
    model_verify_key: str = field(
        default="",
        metadata=_env(
            "model_verify_key",
            "key file (Ed25519 public key PEM or HMAC secret): when set, only models signed "
            "with it load",
        ),
    )
    data_dir: Path = field(
        default=Path(".detector"),
        metadata=_env("data_dir", "local state: Kafka data, Faust data dir, logs"),
    )
    store: str = field(
        default="memory",
        metadata=_env(
            "store",
            "where table state lives between changelog reads: memory (recovered from the "
            "changelogs at every start) or rocksdb (kept on disk in the data dir; a restart "
            "recovers only what it missed)",
        ),
    )
    batch_max: int = field(
        default=2000, metadata=_env("batch_max", "largest micro-batch the scorer takes")
    )
    batch_within_ms: float = field(
        default=2.0,
        metadata=_env(
            "batch_within_ms",
            "longest wait for a micro-batch to fill (ms); 0: take what is queued, never wait",
        ),
    )
    gc_young_threshold: int = field(
        default=10_000,
        metadata=_env(
            "gc_young_threshold",
            "allocations between the worker's young-generation garbage collections (Python's "
            "default is 700; 0 keeps it); what startup built is frozen either way",
        ),
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
    review_host: str = field(
        default="127.0.0.1",
        metadata=_env("review_host", "bind address of the review queue (`detector review`)"),
    )
    review_port: int = field(
        default=6070, metadata=_env("review_port", "HTTP port of the review queue")
    )
    review_users_file: str = field(
        default="",
        metadata=_env(
            "review_users_file",
            "analysts' credentials: one `name:scrypt$...` line each "
            "(`detector review --hash-user NAME` prints one); required by `detector review`",
        ),
    )
    review_public_url: str = field(
        default="",
        metadata=_env(
            "review_public_url",
            "URL analysts open, e.g. https://review.example.com: POSTs must come from this "
            "origin, https makes cookies Secure (empty: the request's own host)",
        ),
    )
    review_lookback_s: float = field(
        default=86400.0,
        metadata=_env(
            "review_lookback_s",
            "the review queue is rebuilt from this much history of its topics (s); older "
            "held withdrawals leave it",
        ),
    )
    review_session_ttl_s: float = field(
        default=8 * 3600.0,
        metadata=_env("review_session_ttl_s", "an analyst's login lasts this long (s)"),
    )

    max_event_age_s: float = field(
        default=7 * 86400.0,
        metadata=_env(
            "max_event_age_s",
            "the worker dead-letters withdrawals whose requested_at is older than this "
            "(s; 0: no limit)",
        ),
    )
    max_event_ahead_s: float = field(
        default=300.0,
        metadata=_env(
            "max_event_ahead_s",
            "... or further ahead of its clock than this (s; 0: no limit)",
        ),
    )
    dedupe_window_s: float = field(
        default=3600.0,
        metadata=_env(
            "dedupe_window_s",
            "a withdrawal_id seen again within this window gets its first verdict again, "
            "byte for byte, and changes no state (s; the account remembers at most 64 ids "
            "within this much of its own newest withdrawal time, the verdicts on record are "
            "kept this long by the worker's clock), and a redelivered record at or below the "
            "input offset the account last applied changes nothing whatever its age",
        ),
    )
    state_ttl_s: float = field(
        default=180 * 86400.0,
        metadata=_env(
            "state_ttl_s",
            "accounts and destinations idle this long (event time) are forgotten (s)",
        ),
    )
    structuring_limits: str = field(
        default="",
        metadata=_env(
            "structuring_limits",
            "structuring rule, off when empty: per-asset limits in the asset's units, e.g. "
            "`USDT=10000,USDC=10000`; withdrawals just under a limit are counted",
        ),
    )
    structuring_band: float = field(
        default=0.9,
        metadata=_env("structuring_band", '"just under" the limit means at least this share of it'),
    )
    structuring_count: int = field(
        default=3,
        metadata=_env(
            "structuring_count",
            "this many just under the limit within the long window (5 time units of the "
            "model) hold the withdrawal, reason `structuring`",
        ),
    )
    feedback_cooldown_s: float = field(
        default=86400.0,
        metadata=_env(
            "feedback_cooldown_s",
            "after a fraud report on an account, its withdrawals are held this long (s)",
        ),
    )
    feedback_report_s: float = field(
        default=30 * 86400.0,
        metadata=_env(
            "feedback_report_s", "a destination reported as fraud stays reported this long (s)"
        ),
    )
    feedback_reported_verdict: str = field(
        default="refuse",
        metadata=_env(
            "feedback_reported_verdict",
            "verdict for withdrawals to a reported destination: refuse or delay",
        ),
    )
    feedback_release_s: float = field(
        default=7 * 86400.0,
        metadata=_env(
            "feedback_release_s",
            "after an analyst releases a held withdrawal, the same destination and amount "
            "are not held again for this long (s)",
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
    standby_replicas: int = field(
        default=1,
        metadata=_env(
            "standby_replicas",
            "each state partition is also kept warm by this many other workers (they follow "
            "its changelog), so a failover reads only the tail; 0 saves their memory and "
            "the CPU of following (with two workers, within the spread of their runs: README, "
            "sizing)",
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
    kafka_version: str = field(
        default="3.9.1",
        metadata=_env(
            "kafka_version",
            "Apache Kafka version of the local broker, 3.x or 4.x (resolved from Maven Central)",
        ),
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

    # Kafka security: the one place every client (Faust, kafka-python) gets it from -------

    @property
    def kafka_uses_ssl(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    @property
    def kafka_uses_sasl(self) -> bool:
        return self.kafka_security_protocol.startswith("SASL_")

    def kafka_sasl_password(self) -> str:
        """The SASL password, read from :attr:`kafka_sasl_password_file` (one line)."""
        path = Path(self.kafka_sasl_password_file)
        try:
            return path.read_text().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"DETECTOR_KAFKA_SASL_PASSWORD_FILE={path}: cannot read it: {exc.strerror}"
            ) from None

    def kafka_ssl_context(self) -> ssl.SSLContext | None:
        """A TLS context verifying brokers against :attr:`kafka_ssl_cafile` (or the system's
        CAs), with the client certificate when one is configured; None without TLS."""
        if not self.kafka_uses_ssl:
            return None
        try:
            context = ssl.create_default_context(cafile=self.kafka_ssl_cafile or None)
            context.check_hostname = self.kafka_ssl_check_hostname
            if self.kafka_ssl_certfile:
                context.load_cert_chain(self.kafka_ssl_certfile, self.kafka_ssl_keyfile or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"Kafka TLS settings: {exc}") from None
        return context

    def kafka_python_config(self) -> dict[str, Any]:
        """Security settings as kafka-python's producer/consumer/admin take them."""
        config: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_uses_ssl:
            config["ssl_context"] = self.kafka_ssl_context()
        if self.kafka_uses_sasl:
            config["sasl_mechanism"] = self.kafka_sasl_mechanism
            config["sasl_plain_username"] = self.kafka_sasl_username
            config["sasl_plain_password"] = self.kafka_sasl_password()
        return config

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values no worker could run with (every constructor
        goes through here, not only :meth:`from_env`)."""
        if self.partitions < 1:
            raise ConfigError(f"partitions must be >= 1, got {self.partitions}")
        if self.replication_factor < 1:
            raise ConfigError("replication_factor must be >= 1")
        if self.batch_max < 1:
            raise ConfigError("batch_max must be >= 1")
        if self.standby_replicas < 0:
            raise ConfigError(f"standby_replicas must be >= 0, got {self.standby_replicas}")
        if not self.batch_within_ms >= 0:  # NaN too
            raise ConfigError(f"batch_within_ms must be >= 0, got {self.batch_within_ms}")
        if self.gc_young_threshold < 0:
            raise ConfigError(f"gc_young_threshold must be >= 0, got {self.gc_young_threshold}")
        parse_bootstrap(self.bootstrap_servers)  # raises for an empty or malformed list
        if not 0 < self.web_port < 65536:
            raise ConfigError(f"web_port must be in 1..65535, got {self.web_port}")
        if self.stuck_after_s <= 0:
            raise ConfigError(f"stuck_after_s must be > 0, got {self.stuck_after_s}")
        if self.max_event_age_s < 0 or self.max_event_ahead_s < 0:
            raise ConfigError("max_event_age_s and max_event_ahead_s must be >= 0 (0: no limit)")
        if self.kafka_security_protocol not in _PROTOCOLS:
            raise ConfigError(
                f"kafka_security_protocol must be one of {list(_PROTOCOLS)}, "
                f"got {self.kafka_security_protocol!r}"
            )
        if self.kafka_uses_sasl:
            if self.kafka_sasl_mechanism not in _MECHANISMS:
                raise ConfigError(
                    f"kafka_sasl_mechanism must be one of {list(_MECHANISMS)}, "
                    f"got {self.kafka_sasl_mechanism!r}"
                )
            if not self.kafka_sasl_username or not self.kafka_sasl_password_file:
                raise ConfigError(
                    "SASL needs DETECTOR_KAFKA_SASL_USERNAME and DETECTOR_KAFKA_SASL_PASSWORD_FILE"
                )
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ConfigError("mutual TLS needs both DETECTOR_KAFKA_SSL_CERTFILE and _KEYFILE")
        if self.store not in _STORES:
            raise ConfigError(f"store must be one of {sorted(_STORES)}, got {self.store!r}")
        if self.dedupe_window_s <= 0 or self.state_ttl_s <= 0:
            raise ConfigError("dedupe_window_s and state_ttl_s must be > 0")
        if self.feedback_reported_verdict not in ("refuse", "delay"):
            raise ConfigError("feedback_reported_verdict must be refuse or delay")
        if min(self.feedback_cooldown_s, self.feedback_report_s, self.feedback_release_s) < 0:
            raise ConfigError("feedback durations must be >= 0")
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
        if not 0 < self.review_port < 65536:
            raise ConfigError(f"review_port must be in 1..65535, got {self.review_port}")
        if self.review_lookback_s <= 0 or self.review_session_ttl_s <= 0:
            raise ConfigError("review_lookback_s and review_session_ttl_s must be > 0")
        if self.review_public_url and not self.review_public_url.startswith(
            ("http://", "https://")
        ):
            raise ConfigError(
                f"review_public_url must start with http:// or https://, "
                f"got {self.review_public_url!r}"
            )
        _parse_limits(self.structuring_limits)
        if not 0 < self.structuring_band < 1 or self.structuring_count < 1:
            raise ConfigError(
                "structuring_band must be in (0, 1) and structuring_count >= 1, got "
                f"{self.structuring_band} and {self.structuring_count}"
            )
        if self.log_level.lower() not in _LOG_LEVELS:
            raise ConfigError(
                f"log_level must be one of {sorted(_LOG_LEVELS)}, got {self.log_level!r}"
            )

    def feedback(self) -> Feedback:
        """What labels do to later withdrawals, from the DETECTOR_FEEDBACK_* settings."""
        from detector.pipeline import Feedback

        verdict: Any = self.feedback_reported_verdict
        return Feedback(
            cooldown_s=self.feedback_cooldown_s,
            report_s=self.feedback_report_s,
            release_s=self.feedback_release_s,
            reported_verdict=verdict,
        )

    def structuring(self) -> Structuring | None:
        """The structuring rule from the DETECTOR_STRUCTURING_* settings (None: off)."""
        from detector.features import Structuring

        limits = _parse_limits(self.structuring_limits)
        if not limits:
            return None
        return Structuring(limits, self.structuring_band, self.structuring_count)

    def load_model(self, directory: Path | None = None) -> Model:
        """The verified model at ``directory`` (default ``model_dir``), signature required
        when ``model_verify_key`` is set."""
        from detector.model import Model, load_verifier

        verifier = load_verifier(Path(self.model_verify_key)) if self.model_verify_key else None
        return Model.load(self.model_dir if directory is None else directory, verifier=verifier)

    # Names derived from the settings, in one place.
    @property
    def topic_by_destination(self) -> str:
        """Internal repartition topic: validated events keyed by destination (fan-in)."""
        return f"{self.app_id}-withdrawals-by-destination"

    @property
    def topic_model_control(self) -> str:
        """Compacted, one partition: which model version is active and which is the shadow."""
        return f"{self.app_id}-model-control"

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


def _parse_limits(text: str) -> dict[str, float]:
    """``ASSET=LIMIT,...`` -> {asset: limit}; ConfigError says which entry is wrong."""
    limits: dict[str, float] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        asset, sep, value = entry.partition("=")
        try:
            limit = float(value)
        except ValueError:
            limit = math.nan
        if not sep or not asset.strip() or not math.isfinite(limit) or limit <= 0:
            raise ConfigError(
                f"structuring_limits: {entry!r} is not ASSET=LIMIT with a positive limit"
            )
        limits[asset.strip()] = limit
    return limits


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
    converters: dict[str, Callable[[str], Any]] = {
        "int": int,
        "float": float,
        "Path": Path,
        "str": str,
        "bool": _bool,
    }
    return converters[str(f.type)]


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


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
