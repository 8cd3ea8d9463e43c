"""A real single-node Apache Kafka broker (KRaft), run from Maven Central jars; no Docker.

Backs ``detector kafka start|stop|status``. Linux only (it reads ``/proc``). The version is
``DETECTOR_KAFKA_VERSION`` (default 3.9.1); 3.x and 4.x differ only in the logging backend:

=========  =====================================  ==========================================
version    Maven profile (logging backend)        logging config passed to the JVM
=========  =====================================  ==========================================
3.x        ``kafka3``: slf4j-reload4j             ``-Dlog4j.configuration=log4j.properties``
4.x        ``kafka4``: log4j-slf4j-impl + core    ``-Dlog4j2.configurationFile=log4j2.properties``
=========  =====================================  ==========================================

Both run ``kafka.tools.StorageTool format`` once per data dir and then ``kafka.Kafka`` with
the same ``server.properties`` (static ``controller.quorum.voters``, KRaft only).

Jars: Maven resolves ``broker_files/pom.xml`` for that version and profile once into
``$XDG_CACHE_HOME/detector/kafka-<version>/lib`` (``~/.cache`` when ``XDG_CACHE_HOME`` is
unset; that is the XDG convention, not a detector setting). A marker file holding the SHA-256
of the pom, version and profile makes later starts skip Maven, and work offline.

Everything else lives under ``<DETECTOR_DATA_DIR>/kafka/``::

    server.properties   rendered from broker_files/server.properties.template on every start
    cluster.id          KRaft cluster id the data dir was formatted with (StorageTool, once)
    data/               log.dirs; data/meta.properties marks a formatted dir
    broker.log          the JVM's stdout and stderr (log4j console appender); .1 = previous run
    broker.pid          pid of the broker JVM
    version             the Kafka version the data dir was formatted with

"Ready" means a kafka-python admin client fetched cluster metadata listing a broker, not merely
that the port accepts connections. A pid is only ever signalled after ``/proc/<pid>/cmdline``
shows ``kafka.Kafka`` and this data dir's ``server.properties``.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import os
import re
import shutil
import socket
import string
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from detector.config import Settings, cache_home, child_environment, parse_bootstrap
from detector.errors import KafkaSetupError
from detector.local.process import pid_alive, terminate
from detector.stream.topics import admin_client, quiet_kafka_logging

__all__ = [
    "FILES_DIR",
    "SUPPORTED_MAJORS",
    "BrokerPaths",
    "BrokerRuntime",
    "KafkaStatus",
    "broker_paths",
    "broker_runtime",
    "jar_cache_dir",
    "render_server_properties",
    "resolve_jars",
    "start",
    "status",
    "stop",
    "wait_ready",
]

Log = Callable[[str], None]

# The pom, the properties template and the logging config ship inside the package (package
# data), so `detector kafka start` works from an installed wheel as well as from a clone.
FILES_DIR = Path(__file__).resolve().parent / "broker_files"
_POM = FILES_DIR / "pom.xml"
_TEMPLATE = FILES_DIR / "server.properties.template"
_LOG4J = FILES_DIR / "log4j.properties"  # Kafka 3.x (reload4j)
_LOG4J2 = FILES_DIR / "log4j2.properties"  # Kafka 4.x (log4j2)

_BROKER_MAIN = "kafka.Kafka"  # main class; also how /proc/<pid>/cmdline identifies our broker
_STORAGE_TOOL_MAIN = "kafka.tools.StorageTool"
_JARS_MARKER = ".complete"  # written into the lib dir after a successful copy: the pom's sha256
_HEAP_RE = re.compile(r"^[1-9][0-9]*[kKmMgG]?$")  # -Xmx syntax; anything else is refused
_VERSION_RE = re.compile(r"^([0-9]+)\.([0-9]+)\.([0-9]+)$")  # a release like 3.9.1 or 4.4.0
SUPPORTED_MAJORS = (3, 4)  # Kafka 3.x (KRaft) and 4.x (KRaft only)
_JVM_FLAGS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",  # ms; Kafka's own kafka-run-class default
    "-XX:+ExitOnOutOfMemoryError",  # die visibly rather than limp along
    "-Djava.awt.headless=true",
)

_POLL_INTERVAL_S = 0.25  # pause between readiness probes / exit checks during start and stop
_PROBE_TIMEOUT_S = 3.0  # one metadata probe (TCP connect + admin bootstrap) gives up after this
_STATUS_PROBE_TIMEOUT_S = 3.0  # `status` waits at most this long for metadata
_ABORT_GRACE_S = 10.0  # a half-started broker gets this long after SIGTERM before SIGKILL
_STORAGE_FORMAT_TIMEOUT_S = 120.0  # StorageTool is a short JVM run (~2 s)
_MVN_TIMEOUT_S = 1800.0  # first resolution downloads ~60 MB from Maven Central (~15 s)
_LOG_TAIL_LINES = 30  # broker.log lines quoted in a startup failure
_MVN_TAIL_LINES = 40  # Maven output lines quoted in a resolution failure
_CMDLINE_SHOWN = 240  # characters of a port squatter's command line quoted in the error


@dataclass(frozen=True)
class BrokerPaths:
    """Files of the local broker for one data dir (all absolute)."""

    root: Path
    properties: Path
    log_dirs: Path
    log_file: Path
    pid_file: Path
    cluster_id_file: Path
    version_file: Path


def broker_paths(settings: Settings) -> BrokerPaths:
    root = settings.data_dir.expanduser().resolve() / "kafka"
    return BrokerPaths(
        root=root,
        properties=root / "server.properties",
        log_dirs=root / "data",
        log_file=root / "broker.log",
        pid_file=root / "broker.pid",
        cluster_id_file=root / "cluster.id",
        version_file=root / "version",
    )


@dataclass(frozen=True)
class BrokerRuntime:
    """How one Kafka version is resolved and started: its Maven profile and logging flag."""

    version: str
    major: int
    maven_profile: str
    logging_flag: str  # the JVM system property that points the backend at our config


def broker_runtime(version: str) -> BrokerRuntime:
    """The runtime of Kafka ``version`` (``DETECTOR_KAFKA_VERSION``); anything but a 3.x or
    4.x release number raises :class:`KafkaSetupError`."""
    match = _VERSION_RE.match(version.strip())
    if match is None:
        raise KafkaSetupError(
            f"DETECTOR_KAFKA_VERSION={version!r} is not a Kafka release number like 4.4.0"
        )
    major = int(match.group(1))
    if major not in SUPPORTED_MAJORS:
        raise KafkaSetupError(
            f"DETECTOR_KAFKA_VERSION={version!r}: the local broker runs Kafka "
            f"{' or '.join(f'{m}.x' for m in SUPPORTED_MAJORS)} (KRaft), not {major}.x"
        )
    if major == 3:
        return BrokerRuntime(version.strip(), 3, "kafka3", f"-Dlog4j.configuration=file:{_LOG4J}")
    return BrokerRuntime(version.strip(), major, "kafka4", f"-Dlog4j2.configurationFile={_LOG4J2}")


@dataclass(frozen=True)
class KafkaStatus:
    """What ``detector kafka status`` reports."""

    running: bool
    ready: bool
    pid: int | None
    bootstrap: str
    data_dir: Path
    log_file: Path
    version: str = ""  # the running broker's Kafka version ("" when not running or unknown)

    def __str__(self) -> str:
        if not self.running:
            return (
                f"kafka: not running (would listen on {self.bootstrap}; "
                f"data {self.data_dir}; log {self.log_file})"
            )
        health = "ready" if self.ready else "NOT ready (starting, or unhealthy: see the log)"
        kafka = f"kafka {self.version}" if self.version else "kafka"
        return (
            f"{kafka}: running, {health}, at {self.bootstrap} "
            f"(pid {self.pid}; data {self.data_dir}; log {self.log_file})"
        )


def _local_bootstrap(settings: Settings) -> str:
    return f"127.0.0.1:{settings.kafka_port}"


# --------------------------------------------------------------------------- jars (Maven)


def jar_cache_dir(version: str) -> Path:
    """``$XDG_CACHE_HOME/detector/kafka-<version>/lib`` (``~/.cache`` by default)."""
    return cache_home() / f"kafka-{version}" / "lib"


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        return _tail(path.read_text(errors="replace"), lines) or "(empty)"
    except OSError as exc:
        return f"(cannot read {path}: {exc})"


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _require_tool(name: str, debian_package: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise KafkaSetupError(
            f"`{name}` not found on PATH; the local Kafka broker needs it "
            f"(Debian/Ubuntu: apt-get install {debian_package})"
        )
    return found


def resolve_jars(settings: Settings, *, log: Log = print) -> Path:
    """Return the directory holding the broker's runtime jars, running Maven if needed.

    The jars are cached in ``$XDG_CACHE_HOME/detector/kafka-<version>/lib`` (default
    ``~/.cache/...``), ``<version>`` being ``settings.kafka_version``. Maven is skipped when
    the cache's marker file matches the current pom, version and profile. Only the version is
    read from ``settings``: the cache is per machine, not per data dir.
    """
    runtime = broker_runtime(settings.kafka_version)
    if not _POM.is_file():
        raise KafkaSetupError(
            f"{_POM} not found: `detector kafka` runs from a clone of the repository"
        )
    version = runtime.version
    digest = _jars_digest(runtime)
    lib = jar_cache_dir(version)
    marker = lib / _JARS_MARKER
    if marker.is_file() and marker.read_text().strip() == digest:
        return lib

    _require_tool("java", "openjdk-17-jre-headless")
    mvn = _require_tool("mvn", "maven")
    lib.parent.mkdir(parents=True, exist_ok=True)
    staging = lib.parent / f"lib.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    log(f"kafka: resolving Kafka {version} jars with Maven into {lib} (first run downloads)")
    cmd = [
        mvn,
        "-B",
        "-q",
        "-Dstyle.color=never",
        "-f",
        str(_POM),
        f"-Dkafka.version={version}",
        f"-P{runtime.maven_profile}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_MVN_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise KafkaSetupError(f"Maven did not finish within {_MVN_TIMEOUT_S:.0f}s") from exc
    broker_jar = staging / f"kafka_2.13-{version}.jar"
    if proc.returncode != 0 or not broker_jar.is_file():
        shutil.rmtree(staging, ignore_errors=True)
        output = _tail(proc.stdout + proc.stderr, _MVN_TAIL_LINES) or "(no output)"
        raise KafkaSetupError(
            f"Maven could not resolve the Kafka jars (exit {proc.returncode}): "
            f"{' '.join(cmd)}\n--- last lines of Maven's output ---\n{output}",
            retriable=True,
        )
    if lib.is_dir() and _jar_listing(lib) == _jar_listing(staging):
        # Same jars as before (only the marker was stale, e.g. a pom edit that changes nothing
        # for this version): keep the files in place, a broker running from them is untouched.
        shutil.rmtree(staging, ignore_errors=True)
    else:
        shutil.rmtree(lib, ignore_errors=True)
        staging.rename(lib)
    (lib / _JARS_MARKER).write_text(digest + "\n")
    log(f"kafka: {len(list(lib.glob('*.jar')))} jars cached in {lib}")
    return lib


def _jar_listing(directory: Path) -> dict[str, int]:
    """``{jar name: size}`` of a jar directory."""
    return {jar.name: jar.stat().st_size for jar in directory.glob("*.jar")}


def _jars_digest(runtime: BrokerRuntime) -> str:
    """What the jar cache's marker holds: the pom, the version and the profile, hashed."""
    digest = hashlib.sha256(_POM.read_bytes())
    digest.update(f"\0{runtime.version}\0{runtime.maven_profile}".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- configuration


def render_server_properties(settings: Settings) -> str:
    """``server.properties`` for ``settings`` from ``broker_files/server.properties.template``."""
    if settings.kafka_port == settings.kafka_controller_port:
        raise KafkaSetupError(
            f"DETECTOR_KAFKA_PORT and DETECTOR_KAFKA_CONTROLLER_PORT are both "
            f"{settings.kafka_port}; they must differ"
        )
    paths = broker_paths(settings)
    # Java properties treat backslash as an escape character.
    log_dirs = str(paths.log_dirs).replace("\\", "\\\\")
    try:
        return string.Template(_TEMPLATE.read_text()).substitute(
            kafka_port=settings.kafka_port,
            controller_port=settings.kafka_controller_port,
            log_dirs=log_dirs,
        )
    except (KeyError, ValueError) as exc:
        raise KafkaSetupError(f"{_TEMPLATE}: bad placeholder: {exc}") from exc


def _new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's Uuid)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):  # Kafka avoids these too (they look like CLI options)
            return cid


def _java_base(java: str, lib: Path, runtime: BrokerRuntime) -> list[str]:
    return [java, runtime.logging_flag, "-cp", f"{lib}/*"]


def _check_data_dir_version(paths: BrokerPaths, runtime: BrokerRuntime) -> None:
    """Refuse to start Kafka ``runtime.version`` on a data dir another major version wrote.

    A 3.x data dir cannot go back after a 4.x broker upgraded its metadata, and mixing them
    in tests is always a mistake: separate versions get separate DETECTOR_DATA_DIRs.
    """
    formatted = _read_text(paths.version_file)
    if formatted is None or not (paths.log_dirs / "meta.properties").is_file():
        return
    previous = formatted.strip()
    match = _VERSION_RE.match(previous)
    if match is not None and int(match.group(1)) != runtime.major:
        raise KafkaSetupError(
            f"{paths.log_dirs} was formatted by Kafka {previous}, not {runtime.major}.x: use "
            f"another DETECTOR_DATA_DIR for Kafka {runtime.version} (or delete {paths.root})"
        )


def _format_storage(
    paths: BrokerPaths, java: str, lib: Path, runtime: BrokerRuntime, log: Log
) -> None:
    if (paths.log_dirs / "meta.properties").is_file():
        return
    if paths.cluster_id_file.is_file():
        cluster_id = paths.cluster_id_file.read_text().strip()
    else:
        cluster_id = _new_cluster_id()
        paths.cluster_id_file.write_text(cluster_id + "\n")
    log(f"kafka: formatting {paths.log_dirs} (Kafka {runtime.version}, cluster id {cluster_id})")
    cmd = [
        *_java_base(java, lib, runtime),
        "-Xmx256m",  # StorageTool is tiny; do not reserve the broker's heap
        _STORAGE_TOOL_MAIN,
        "format",
        "-t",
        cluster_id,
        "-c",
        str(paths.properties),
    ]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_STORAGE_FORMAT_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise KafkaSetupError(f"StorageTool format timed out: {' '.join(cmd)}") from exc
    if proc.returncode != 0:
        raise KafkaSetupError(
            f"StorageTool format failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            + _tail(proc.stdout + proc.stderr, _LOG_TAIL_LINES)
        )
    paths.version_file.write_text(runtime.version + "\n")


# --------------------------------------------------------------------------- processes


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _is_our_broker(pid: int, properties: Path) -> bool:
    """Is ``pid`` a live ``kafka.Kafka`` JVM started with exactly this ``server.properties``?"""
    args = _cmdline(pid)
    return _BROKER_MAIN in args and str(properties) in args and pid_alive(pid)


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _find_broker_pid(paths: BrokerPaths) -> int | None:
    """Our broker's pid: from the pid file, else by scanning /proc (pid file lost)."""
    pid = _read_pid(paths.pid_file)
    if pid is not None and _is_our_broker(pid, paths.properties):
        return pid
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _is_our_broker(int(entry.name), paths.properties):
            return int(entry.name)
    return None


def _port_owner(port: int) -> str | None:
    """``"pid N (cmdline)"`` of the process listening on TCP ``port``, if /proc tells."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rpartition(":")[2], 16) == port:  # 0A = LISTEN
                    inodes.add(f"socket:[{inode}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        cmd = " ".join(_cmdline(int(proc.name)))
                        if len(cmd) > _CMDLINE_SHOWN:  # keep both ends: program and its config
                            half = _CMDLINE_SHOWN // 2
                            cmd = f"{cmd[:half]} ... {cmd[-half:]}"
                        return f"pid {proc.name} ({cmd})"
    return "a process this user cannot inspect"


def _check_port_free(port: int, role: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option the JVM sets: a TIME_WAIT left by our previous broker is not "taken".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise KafkaSetupError(f"cannot bind 127.0.0.1:{port}: {exc}") from exc
            owner = _port_owner(port) or "another process"
            raise KafkaSetupError(
                f"port {port} ({role}) is already in use by {owner}, which is not the broker "
                f"of this data dir. Stop it, or pick other ports with DETECTOR_KAFKA_PORT / "
                f"DETECTOR_KAFKA_CONTROLLER_PORT (or point KAFKA_BOOTSTRAP_SERVERS at a running "
                f"cluster and skip `detector kafka start`)."
            ) from exc


def _running_version(pid: int) -> str | None:
    """The Kafka version a running broker was started with (from its ``-cp`` jar cache dir)."""
    for arg in _cmdline(pid):
        match = re.search(r"/kafka-([0-9][^/]*)/lib/\*$", arg)
        if match is not None:
            return match.group(1)
    return None


def _spawn_broker(
    paths: BrokerPaths, java: str, lib: Path, runtime: BrokerRuntime, heap: str
) -> int:
    """Start the broker JVM in its own session, output appended to broker.log; return its pid."""
    if paths.log_file.exists():
        paths.log_file.replace(paths.log_file.with_name(paths.log_file.name + ".1"))
    argv = [
        *_java_base(java, lib, runtime),
        f"-Xms{heap}",
        f"-Xmx{heap}",
        *_JVM_FLAGS,
        f"-Dkafka.logs.dir={paths.root}",
        _BROKER_MAIN,
        str(paths.properties),
    ]
    out_flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    # posix_spawn rather than Popen: a Popen object dropped while its child runs warns.
    return os.posix_spawn(
        java,
        argv,
        child_environment(),
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(paths.log_file), out_flags, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )


# --------------------------------------------------------------------------- readiness


def _probe_metadata(bootstrap_servers: str, timeout: float) -> str | None:
    """None when cluster metadata lists a broker, else why not."""
    try:
        with admin_client(bootstrap_servers, timeout=timeout) as admin:
            brokers = admin.describe_cluster().get("brokers") or []
    except KafkaSetupError as exc:
        return str(exc)
    except Exception as exc:  # any failure just means "not ready yet"
        return f"{type(exc).__name__}: {exc}"
    # DescribeCluster may include fenced brokers (not yet serving partitions): skip them.
    serving = [b for b in brokers if not b.get("is_fenced", False)]
    return None if serving else "cluster metadata lists no unfenced broker"


def _wait_ready(
    bootstrap_servers: str, timeout: float, alive: Callable[[], bool] | None = None
) -> None:
    parse_bootstrap(bootstrap_servers)  # a malformed list fails now, not after the timeout
    deadline = time.monotonic() + timeout
    with quiet_kafka_logging():
        while True:
            if alive is not None and not alive():
                raise KafkaSetupError("the broker process exited during startup")
            remaining = deadline - time.monotonic()
            reason = _probe_metadata(bootstrap_servers, max(min(remaining, _PROBE_TIMEOUT_S), 0.1))
            if reason is None:
                return
            if time.monotonic() >= deadline:
                raise KafkaSetupError(
                    f"Kafka at {bootstrap_servers} not ready after {timeout:.0f}s: {reason}",
                    retriable=True,
                )
            time.sleep(min(_POLL_INTERVAL_S, max(deadline - time.monotonic(), 0.0)))


def wait_ready(bootstrap_servers: str, timeout: float) -> None:
    """Block until a kafka-python client fetches cluster metadata from ``bootstrap_servers``.

    Works against any cluster. Polls with short timeouts; raises :class:`KafkaSetupError`
    (``retriable=True``) with the last failure reason after ``timeout`` seconds.
    """
    _wait_ready(bootstrap_servers, timeout)


# --------------------------------------------------------------------------- commands


def status(settings: Settings) -> KafkaStatus:
    """Is this data dir's broker running, and does it serve metadata?"""
    paths = broker_paths(settings)
    bootstrap = _local_bootstrap(settings)
    pid = _find_broker_pid(paths)
    ready = False
    if pid is not None:
        with quiet_kafka_logging():
            ready = _probe_metadata(bootstrap, _STATUS_PROBE_TIMEOUT_S) is None
    return KafkaStatus(
        running=pid is not None,
        ready=ready,
        pid=pid,
        bootstrap=bootstrap,
        data_dir=paths.root.parent,
        log_file=paths.log_file,
        version=(_running_version(pid) or "") if pid is not None else "",
    )


def _startup_failure(paths: BrokerPaths, what: str) -> KafkaSetupError:
    return KafkaSetupError(
        f"{what}\n--- last {_LOG_TAIL_LINES} lines of {paths.log_file} ---\n"
        f"{_log_tail(paths.log_file)}"
    )


def start(settings: Settings, *, log: Log = print, timeout: float = 90.0) -> bool:
    """Start this data dir's broker and wait until it serves metadata.

    Idempotent: returns False (and says so) when the broker is already running; True when this
    call started it. On failure the half-started JVM is stopped and :class:`KafkaSetupError`
    quotes the last lines of ``broker.log``.
    """
    paths = broker_paths(settings)
    bootstrap = _local_bootstrap(settings)
    heap = settings.kafka_heap.strip()
    if not _HEAP_RE.match(heap):
        raise KafkaSetupError(f"DETECTOR_KAFKA_HEAP={heap!r} is not a JVM size like 768m or 1g")
    runtime = broker_runtime(settings.kafka_version)

    running = _find_broker_pid(paths)
    if running is not None:
        if _read_text(paths.properties) != render_server_properties(settings):
            raise KafkaSetupError(
                f"the broker of {paths.root} (pid {running}) runs with other settings than the "
                f"current ones (ports?); run `detector kafka stop` first"
            )
        running_version = _running_version(running)
        if running_version not in (None, runtime.version):
            raise KafkaSetupError(
                f"the broker of {paths.root} (pid {running}) runs Kafka {running_version}, not "
                f"DETECTOR_KAFKA_VERSION={runtime.version}; run `detector kafka stop` first"
            )
        log(f"kafka: already running (pid {running}) at {bootstrap}; data {paths.root}")
        try:
            _wait_ready(bootstrap, timeout, alive=lambda: pid_alive(running))
        except KafkaSetupError as exc:
            raise _startup_failure(paths, f"the running broker is not ready: {exc}") from exc
        return False
    if paths.pid_file.exists():
        log(f"kafka: removing stale pid file {paths.pid_file}")
        paths.pid_file.unlink()

    properties = render_server_properties(settings)  # validates the ports differ
    _check_data_dir_version(paths, runtime)
    _check_port_free(settings.kafka_port, "DETECTOR_KAFKA_PORT")
    _check_port_free(settings.kafka_controller_port, "DETECTOR_KAFKA_CONTROLLER_PORT")
    lib = resolve_jars(settings, log=log)
    java = _require_tool("java", "openjdk-17-jre-headless")
    paths.log_dirs.mkdir(parents=True, exist_ok=True)
    paths.properties.write_text(properties)
    _format_storage(paths, java, lib, runtime, log)

    started = time.monotonic()
    pid = _spawn_broker(paths, java, lib, runtime, heap)
    paths.pid_file.write_text(f"{pid}\n")
    log(
        f"kafka: started Kafka {runtime.version} pid {pid} (heap {heap}); "
        f"waiting up to {timeout:.0f}s for {bootstrap}"
    )
    try:
        _wait_ready(bootstrap, timeout, alive=lambda: pid_alive(pid))
    except KafkaSetupError as exc:
        if pid_alive(pid):
            log(f"kafka: stopping the half-started broker (pid {pid})")
            terminate(pid, _ABORT_GRACE_S, what="kafka", log=log)
        paths.pid_file.unlink(missing_ok=True)
        raise _startup_failure(paths, f"Kafka did not become ready: {exc}") from exc
    log(
        f"kafka: ready at {bootstrap} after {time.monotonic() - started:.1f}s "
        f"(pid {pid}; log {paths.log_file})"
    )
    return True


def stop(settings: Settings, *, log: Log = print, timeout: float = 30.0) -> bool:
    """Stop this data dir's broker: SIGTERM (controlled shutdown), SIGKILL after ``timeout``.

    Idempotent: returns False when nothing was running. Only a process whose command line shows
    ``kafka.Kafka`` and this data dir's ``server.properties`` is ever signalled.
    """
    paths = broker_paths(settings)
    pid = _find_broker_pid(paths)
    if pid is None:
        stale = _read_pid(paths.pid_file)
        if paths.pid_file.exists():
            paths.pid_file.unlink()
            log(f"kafka: removed stale pid file (pid {stale} is not this data dir's broker)")
        log(f"kafka: not running (data {paths.root})")
        return False
    log(f"kafka: stopping pid {pid} (controlled shutdown, SIGKILL after {timeout:.0f}s)")
    started = time.monotonic()
    terminate(pid, timeout, what="kafka", log=log)
    paths.pid_file.unlink(missing_ok=True)
    log(f"kafka: stopped in {time.monotonic() - started:.1f}s")
    return True
