"""The local Kafka broker (detector.local.broker) and explicit topics (detector.stream.topics).

Unit tests need neither Java nor a broker: they render properties and exercise the pid-safety
logic against harmless stand-in processes. ``broker`` tests run a real broker (a private one
on free ports for the lifecycle test; ``KAFKA_BOOTSTRAP_SERVERS`` for the topic tests).
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from detector.config import Settings
from detector.config import parse_bootstrap as split_bootstrap
from detector.errors import ConfigError, KafkaSetupError
from detector.local import broker, process
from detector.stream.compat import import_kafka
from detector.stream.topics import (
    TopicSpec,
    admin_client,
    delete_topics,
    ensure_topics,
)

# A stand-in "broker": a Python process whose command line looks like ours. It prints a line
# once its signal disposition is set, then sleeps. argv[1] chooses how it treats SIGTERM.
_FAKE_BROKER = """
import signal, sys, time
if sys.argv[1] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("up", flush=True)
time.sleep(120)
"""


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _settings(data_dir: Path, **overrides: object) -> Settings:
    kafka_port, controller_port = _free_ports(2)
    values: dict[str, object] = {
        "data_dir": data_dir,
        "kafka_port": kafka_port,
        "kafka_controller_port": controller_port,
        "kafka_heap": "512m",
        "bootstrap_servers": f"127.0.0.1:{kafka_port}",
        # The version under test: DETECTOR_KAFKA_VERSION (the 4.x CI leg sets it).
        "kafka_version": Settings.from_env().kafka_version,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def _parse_properties(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


class _Logs(list[str]):
    def __call__(self, message: str) -> None:
        self.append(message)

    def text(self) -> str:
        return "\n".join(self)


# --------------------------------------------------------------------------- properties


def test_rendered_properties_use_the_settings_ports_and_data_dir(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "state")
    props = _parse_properties(broker.render_server_properties(settings))
    kp, cp = settings.kafka_port, settings.kafka_controller_port

    assert props["listeners"] == f"PLAINTEXT://127.0.0.1:{kp},CONTROLLER://127.0.0.1:{cp}"
    assert props["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{kp}"
    assert props["controller.quorum.voters"] == f"1@127.0.0.1:{cp}"
    assert props["log.dirs"] == str((tmp_path / "state" / "kafka" / "data").resolve())
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["auto.create.topics.enable"] == "false"
    assert props["num.partitions"] == "1"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert "${" not in broker.render_server_properties(settings)


def test_relative_data_dir_becomes_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    paths = broker.broker_paths(_settings(Path(".detector")))
    assert paths.root == tmp_path.resolve() / ".detector" / "kafka"
    assert paths.properties.is_absolute() and paths.pid_file.parent == paths.root


def test_equal_ports_are_refused(tmp_path: Path) -> None:
    settings = _settings(tmp_path, kafka_port=29999, kafka_controller_port=29999)
    with pytest.raises(KafkaSetupError, match="must differ"):
        broker.render_server_properties(settings)


def test_cluster_id_looks_like_a_kafka_uuid() -> None:
    cid = broker._new_cluster_id()
    assert len(cid) == 22 and not cid.startswith("-")
    assert set(cid) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_log4j_and_template_ship_with_the_pom() -> None:
    for name in ("pom.xml", "server.properties.template", "log4j.properties", "log4j2.properties"):
        assert (broker.FILES_DIR / name).is_file(), name


def test_kafka_3_logs_through_reload4j_and_kafka_4_through_log4j2() -> None:
    three, four = broker.broker_runtime("3.9.1"), broker.broker_runtime("4.4.0")
    assert (three.major, three.maven_profile) == (3, "kafka3")
    assert three.logging_flag == f"-Dlog4j.configuration=file:{broker.FILES_DIR}/log4j.properties"
    assert (four.major, four.maven_profile) == (4, "kafka4")
    log4j2 = broker.FILES_DIR / "log4j2.properties"
    assert four.logging_flag == f"-Dlog4j2.configurationFile={log4j2}"
    pom = (broker.FILES_DIR / "pom.xml").read_text()
    for profile in ("<id>kafka3</id>", "<id>kafka4</id>", "slf4j-reload4j", "log4j-slf4j-impl"):
        assert profile in pom


def test_the_poms_default_version_is_the_settings_default() -> None:
    pom = (broker.FILES_DIR / "pom.xml").read_text()
    assert f"<kafka.version>{Settings().kafka_version}</kafka.version>" in pom


@pytest.mark.parametrize("version", ["2.8.2", "5.0.0", "4.4", "latest", "4.4.0; rm -rf /"])
def test_a_kafka_version_other_than_a_3_or_4_release_is_refused(version: str) -> None:
    with pytest.raises(KafkaSetupError, match="DETECTOR_KAFKA_VERSION"):
        broker.broker_runtime(version)


def test_a_data_dir_formatted_by_another_major_version_is_refused(tmp_path: Path) -> None:
    settings = _settings(tmp_path, kafka_version="4.4.0")
    paths = broker.broker_paths(settings)
    paths.log_dirs.mkdir(parents=True)
    (paths.log_dirs / "meta.properties").write_text("version=1\n")
    paths.version_file.write_text("3.9.1\n")
    with pytest.raises(KafkaSetupError, match=r"formatted by Kafka 3\.9\.1, not 4\.x"):
        broker.start(settings, log=_Logs())
    paths.version_file.write_text("4.3.1\n")  # same major: a minor upgrade is allowed
    broker._check_data_dir_version(paths, broker.broker_runtime("4.4.0"))


# --------------------------------------------------------------------------- jars


def test_jar_cache_follows_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert broker.jar_cache_dir("3.9.1") == tmp_path / "detector" / "kafka-3.9.1" / "lib"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # XDG: relative paths are invalid
    assert broker.jar_cache_dir("3.9.1") == (
        Path.home() / ".cache" / "detector" / "kafka-3.9.1" / "lib"
    )


def test_complete_jar_cache_skips_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no mvn, no java: must not be needed
    settings = Settings()
    runtime = broker.broker_runtime(settings.kafka_version)
    lib = broker.jar_cache_dir(settings.kafka_version)
    lib.mkdir(parents=True)
    (lib / ".complete").write_text(broker._jars_digest(runtime) + "\n")

    assert broker.resolve_jars(settings) == lib


def test_each_kafka_version_has_its_own_jar_cache_marker() -> None:
    pom = (broker.FILES_DIR / "pom.xml").read_bytes()
    digests = {broker._jars_digest(broker.broker_runtime(v)) for v in ("3.9.1", "3.9.2", "4.4.0")}
    assert len(digests) == 3
    assert hashlib.sha256(pom).hexdigest() not in digests  # a marker of the old layout reruns


def test_missing_maven_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_java = bin_dir / "java"
    fake_java.write_text("#!/bin/sh\nexit 0\n")
    fake_java.chmod(0o755)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(KafkaSetupError, match=r"`mvn` not found.*apt-get install maven"):
        broker.resolve_jars(Settings(), log=_Logs())


def _fake_tools(bin_dir: Path, mvn_script: str) -> None:
    bin_dir.mkdir()
    for name, body in (("java", "exit 0"), ("mvn", mvn_script)):
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\n{body}\n")
        tool.chmod(0o755)


def test_maven_failure_quotes_its_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_tools(tmp_path / "bin", 'echo "[ERROR] Could not resolve kafka_2.13"; exit 1')
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(KafkaSetupError, match=r"exit 1(.|\n)*Could not resolve") as info:
        broker.resolve_jars(Settings(), log=_Logs())
    assert info.value.retriable
    assert not any((tmp_path / "cache").rglob("*.jar"))


@pytest.mark.parametrize(("version", "profile"), [("3.9.1", "kafka3"), ("4.4.0", "kafka4")])
def test_jars_are_copied_once(
    version: str, profile: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "mvn-calls"
    # A stand-in Maven: records its arguments, "copies" the broker jar into -DoutputDirectory.
    _fake_tools(
        tmp_path / "bin",
        f'echo "$@" >> {calls}\nfor a in "$@"; do case "$a" in -DoutputDirectory=*) '
        f'd="${{a#-DoutputDirectory=}}"; mkdir -p "$d"; touch "$d/kafka_2.13-{version}.jar";; '
        "esac; done",
    )
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin")
    settings = Settings(kafka_version=version)

    lib = broker.resolve_jars(settings, log=_Logs())
    assert lib == broker.jar_cache_dir(version)
    assert (lib / f"kafka_2.13-{version}.jar").is_file() and (lib / ".complete").is_file()
    assert broker.resolve_jars(settings, log=_Logs()) == lib
    lines = calls.read_text().splitlines()
    assert len(lines) == 1  # the second call used the cache
    assert f"-Dkafka.version={version}" in lines[0].split()
    assert f"-P{profile}" in lines[0].split()
    assert [p.name for p in lib.parent.iterdir()] == ["lib"]  # no staging dir left behind


def test_a_rerun_that_resolves_the_same_jars_leaves_them_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = Settings().kafka_version
    _fake_tools(
        tmp_path / "bin",
        'for a in "$@"; do case "$a" in -DoutputDirectory=*) '
        f'd="${{a#-DoutputDirectory=}}"; mkdir -p "$d"; '
        f'printf jar > "$d/kafka_2.13-{version}.jar";; '
        "esac; done",
    )
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin")
    lib = broker.jar_cache_dir(version)
    lib.mkdir(parents=True)
    jar = lib / f"kafka_2.13-{version}.jar"
    jar.write_text("jar")  # what a running broker has open
    (lib / ".complete").write_text("digest-of-an-older-pom\n")
    inode = jar.stat().st_ino

    assert broker.resolve_jars(Settings(), log=_Logs()) == lib
    assert jar.stat().st_ino == inode  # not replaced: the same file
    assert (lib / ".complete").read_text().strip() == broker._jars_digest(
        broker.broker_runtime(version)
    )
    assert [p.name for p in lib.parent.iterdir()] == ["lib"]


def test_stale_pom_digest_reruns_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    lib = broker.jar_cache_dir(Settings().kafka_version)
    lib.mkdir(parents=True)
    (lib / ".complete").write_text("digest-of-an-older-pom\n")
    with pytest.raises(KafkaSetupError, match="not found on PATH"):
        broker.resolve_jars(Settings(), log=_Logs())


# --------------------------------------------------------------------------- start guards


def test_start_refuses_a_port_taken_by_someone_else(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", settings.kafka_port))
        squatter.listen()
        with pytest.raises(KafkaSetupError) as info:
            broker.start(settings, log=_Logs())
    message = str(info.value)
    assert f"port {settings.kafka_port}" in message and "already in use" in message
    assert f"pid {os.getpid()}" in message  # names the squatter
    assert not broker.broker_paths(settings).pid_file.exists()


def test_start_refuses_a_malformed_heap(tmp_path: Path) -> None:
    settings = _settings(tmp_path, kafka_heap="1g -XX:+Evil")
    with pytest.raises(KafkaSetupError, match="DETECTOR_KAFKA_HEAP"):
        broker.start(settings, log=_Logs())


def test_wait_ready_fails_fast_and_retriable_on_a_closed_port() -> None:
    (port,) = _free_ports(1)
    started = time.monotonic()
    with pytest.raises(KafkaSetupError, match="not ready after") as info:
        broker.wait_ready(f"127.0.0.1:{port}", timeout=0.5)
    assert info.value.retriable
    assert time.monotonic() - started < 5


# --------------------------------------------------------------------------- pid safety

Spawn = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start stand-in processes; kill and reap whatever is left at teardown."""
    procs: list[subprocess.Popen[str]] = []

    def start(*argv: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        if argv[0] == sys.executable:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "up"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _fake_broker(spawn: Spawn, settings: Settings, mode: str = "honour-term") -> int:
    props = broker.broker_paths(settings).properties
    return spawn(sys.executable, "-c", _FAKE_BROKER, mode, "kafka.Kafka", str(props)).pid


def _write_pid(settings: Settings, pid: int) -> Path:
    pid_file = broker.broker_paths(settings).pid_file
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{pid}\n")
    return pid_file


def test_only_our_command_line_counts_as_our_broker(tmp_path: Path, spawn: Spawn) -> None:
    ours, other = _settings(tmp_path / "a"), _settings(tmp_path / "b")
    props = broker.broker_paths(ours).properties
    fake = _fake_broker(spawn, ours)
    sleeper = spawn("sleep", "120").pid

    assert broker._is_our_broker(fake, props)
    assert not broker._is_our_broker(fake, broker.broker_paths(other).properties)
    assert not broker._is_our_broker(sleeper, props)
    assert not broker._is_our_broker(2**22 + 12345, props)  # above pid_max: no such pid


def test_stop_never_signals_a_foreign_pid(tmp_path: Path, spawn: Spawn) -> None:
    settings = _settings(tmp_path)
    bystander = spawn("sleep", "120")
    pid_file = _write_pid(settings, bystander.pid)
    logs = _Logs()

    assert broker.stop(settings, log=logs) is False
    assert bystander.poll() is None  # still alive
    assert not pid_file.exists()
    assert "stale pid file" in logs.text() and "not running" in logs.text()


def test_stop_terminates_our_broker(tmp_path: Path, spawn: Spawn) -> None:
    settings = _settings(tmp_path)
    pid = _fake_broker(spawn, settings)
    pid_file = _write_pid(settings, pid)

    assert broker.stop(settings, log=_Logs()) is True
    assert not process.pid_alive(pid)
    assert not pid_file.exists()
    assert broker.stop(settings, log=_Logs()) is False  # idempotent


def test_stop_sigkills_a_broker_ignoring_sigterm(tmp_path: Path, spawn: Spawn) -> None:
    settings = _settings(tmp_path)
    pid = _fake_broker(spawn, settings, mode="ignore-term")
    _write_pid(settings, pid)
    logs = _Logs()

    assert broker.stop(settings, log=logs, timeout=0.5) is True
    assert not process.pid_alive(pid)
    assert "SIGKILL" in logs.text()


def test_broker_is_found_without_its_pid_file(tmp_path: Path, spawn: Spawn) -> None:
    settings = _settings(tmp_path)
    pid = _fake_broker(spawn, settings)  # no pid file written

    st = broker.status(settings)
    assert st.running and st.pid == pid and not st.ready  # nothing listens on its port
    assert "NOT ready" in str(st)
    assert broker.stop(settings, log=_Logs()) is True


def test_start_refuses_a_running_broker_with_other_ports(tmp_path: Path, spawn: Spawn) -> None:
    settings = _settings(tmp_path)
    paths = broker.broker_paths(settings)
    paths.root.mkdir(parents=True)
    paths.properties.write_text(broker.render_server_properties(settings))
    _fake_broker(spawn, settings)
    (new_port,) = _free_ports(1)
    moved = _settings(tmp_path, kafka_port=new_port)
    with pytest.raises(KafkaSetupError, match="other settings"):
        broker.start(moved, log=_Logs(), timeout=1)


def test_status_of_nothing(tmp_path: Path) -> None:
    st = broker.status(_settings(tmp_path))
    assert (st.running, st.ready, st.pid) == (False, False, None)
    assert str(st).startswith("kafka: not running")
    assert st.log_file == tmp_path.resolve() / "kafka" / "broker.log"


# --------------------------------------------------------------------------- topic specs


def test_topic_spec_validates() -> None:
    assert TopicSpec("t", 3).config == {}
    with pytest.raises(ConfigError, match="partitions"):
        TopicSpec("t", 0)
    with pytest.raises(ConfigError, match="replication"):
        TopicSpec("t", 1, replication=0)


def test_conflicting_specs_for_one_topic_are_refused() -> None:
    with pytest.raises(ConfigError, match="twice"):
        ensure_topics("127.0.0.1:1", [TopicSpec("t", 1), TopicSpec("t", 2)])


def test_split_bootstrap() -> None:
    assert split_bootstrap(" a:1, [::1]:2 ,b") == [("a", 1), ("::1", 2), ("b", 9092)]
    with pytest.raises(ConfigError):
        split_bootstrap("a:notaport")


# --------------------------------------------------------------------------- broker tier


def _round_trip(bootstrap: str, topic: str, group: str) -> bytes:
    import_kafka()
    from kafka import KafkaConsumer, KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        producer.send(topic, key=b"k", value=b"hello").get(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest"
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    return bytes(record.value)
    finally:
        consumer.close()
    raise AssertionError(f"nothing consumed from {topic} within 30 s")


@pytest.mark.broker
def test_local_broker_lifecycle(tmp_path: Path, unique_group: str) -> None:
    settings = _settings(tmp_path / "state")
    bootstrap = settings.bootstrap_servers
    logs = _Logs()
    try:
        assert broker.start(settings, log=logs) is True
        st = broker.status(settings)
        assert st.running and st.ready and st.pid is not None, str(st)
        assert st.bootstrap == bootstrap

        again = _Logs()
        assert broker.start(settings, log=again) is False
        assert "already running" in again.text()

        topic = f"lifecycle-{uuid.uuid4().hex[:8]}"
        assert ensure_topics(bootstrap, [TopicSpec(topic, 2)]) == [topic]
        assert _round_trip(bootstrap, topic, unique_group) == b"hello"

        assert broker.stop(settings, log=logs) is True
        assert not process.pid_alive(st.pid)
        assert not broker.status(settings).running

        final = _Logs()
        assert broker.stop(settings, log=final) is False
        assert "not running" in final.text()
    finally:
        broker.stop(settings, log=_Logs())


@pytest.mark.broker
def test_a_broker_that_dies_at_startup_is_reported_with_its_log(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "state", kafka_heap="1k")  # the JVM refuses this heap
    with pytest.raises(KafkaSetupError) as info:
        broker.start(settings, log=_Logs(), timeout=60)
    message = str(info.value)
    assert "exited during startup" in message and "broker.log" in message
    assert "heap" in message.lower()  # the JVM's own complaint, quoted from the log
    assert not broker.status(settings).running
    assert not broker.broker_paths(settings).pid_file.exists()


@pytest.mark.broker
def test_ensure_topics_creates_partitions_and_config(bootstrap_servers: str) -> None:
    import_kafka()
    from kafka.admin import ConfigResource, ConfigResourceType

    from detector.stream.topics import admin_client

    name = f"test-ensure-{uuid.uuid4().hex[:12]}"
    spec = TopicSpec(name, 3, config={"cleanup.policy": "compact"})
    try:
        assert ensure_topics(bootstrap_servers, [spec]) == [name]
        assert ensure_topics(bootstrap_servers, [spec]) == []  # idempotent
        with admin_client(bootstrap_servers) as admin:
            (info,) = admin.describe_topics([name])
            assert len(info["partitions"]) == 3
            assert all(p["leader_id"] >= 0 for p in info["partitions"])
            configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
        assert configs["topic"][name]["cleanup.policy"]["value"] == "compact"
    finally:
        delete_topics(bootstrap_servers, [name])


@pytest.mark.broker
def test_ensure_topics_rejects_a_partition_mismatch(
    bootstrap_servers: str, topic_factory: Callable[..., str]
) -> None:
    existing = topic_factory(partitions=2)
    with pytest.raises(KafkaSetupError) as info:
        ensure_topics(bootstrap_servers, [TopicSpec(existing, 3)])
    assert f"topic '{existing}' has 2 partitions, expected 3" in str(info.value)


@pytest.mark.broker
def test_ensure_topics_creates_only_the_missing_ones(
    bootstrap_servers: str, topic_factory: Callable[..., str]
) -> None:
    existing = topic_factory(partitions=2)
    new = f"test-new-{uuid.uuid4().hex[:12]}"
    try:
        created = ensure_topics(bootstrap_servers, [TopicSpec(existing, 2), TopicSpec(new, 4)])
        assert created == [new]
    finally:
        delete_topics(bootstrap_servers, [new, "test-never-existed-" + uuid.uuid4().hex])


@pytest.mark.broker
def test_faust_creates_a_topic_on_this_broker(bootstrap_servers: str) -> None:
    # faust-streaming#667 reports Faust's own topic creation (Topic.declare, which the
    # assignor leader uses) failing on Kafka 4.x. The worker does not depend on it (it runs
    # with topic_allow_declare=False, topics come from ensure_topics), but the tier checks
    # that path on whichever broker it runs against (the 3.9 and the 4.x legs).
    import asyncio

    import faust

    from detector.stream.compat import close_unstarted_consumer

    name = f"test-faust-declare-{uuid.uuid4().hex[:12]}"
    app = faust.App(
        f"test-declare-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{bootstrap_servers}",
        store="memory://",
        web_enabled=False,
    )

    async def declare() -> None:
        topic = app.topic(name, partitions=3, internal=True, value_serializer="raw")
        await app.producer.start()
        try:
            await topic.declare()
        finally:
            await app.producer.stop()

    try:
        asyncio.run(declare())
        with admin_client(bootstrap_servers) as admin:
            (described,) = admin.describe_topics([name])
        assert len(described["partitions"]) == 3
    finally:
        close_unstarted_consumer(app)
        delete_topics(bootstrap_servers, [name])
