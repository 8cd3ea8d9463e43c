"""The Java wallet client (deploy/clients/java/WalletClient.java) against a real worker.

Proves the contract is language-neutral: a withdrawal published by Apache Kafka's own Java
client (plain JSON, default partitioner) lands where kafka-python's murmur2 says, the Python
worker decides it, and the Java client reads the same verdict kafka-python reads.

Compiled with ``javac`` against the kafka-clients jar of the local broker's jar cache
(``detector.local.broker.resolve_jars``: the version is DETECTOR_KAFKA_VERSION, so the 4.x
leg also runs kafka-clients 4.x). Broker tier: it needs Java, the jars and a broker.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka_io import REPO, records_of

from detector.client.transport import murmur2_partition
from detector.config import Settings
from detector.events import format_rfc3339
from detector.local import broker
from detector.local.process import stop_process
from detector.stream.app import topic_specs
from detector.stream.topics import delete_topics, ensure_topics

pytestmark = pytest.mark.broker

SOURCE = REPO / "deploy" / "clients" / "java" / "WalletClient.java"
# Only what a wallet service would ship: the Kafka client, its compression codecs, slf4j's
# API (no logging backend: slf4j falls back to its no-op logger, stdout stays the verdict).
CLASSPATH_JARS = ("kafka-clients-", "slf4j-api-", "lz4-java-", "snappy-java-", "zstd-jni-")
WORKER_DEADLINE_MS = 30_000
STOPPED_DEADLINE_MS = 8_000  # long enough to publish first on a busy machine
ANSWER_SLACK_MS = 2_000  # how late past its deadline the Java client may answer (busy CI)

# Java's producer partitioner itself (BuiltInPartitioner.partitionForKey: what a keyed
# ProducerRecord without a partition gets), one "<partitions>\t<key>" per stdin line.
PARTITIONS_SNIPPET = """
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import org.apache.kafka.clients.producer.internals.BuiltInPartitioner;

public final class JavaPartitions {
    public static void main(String[] args) throws Exception {
        BufferedReader in =
            new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line; (line = in.readLine()) != null; ) {
            String[] f = line.split("\\t", 2);
            byte[] key = f[1].getBytes(StandardCharsets.UTF_8);
            System.out.println(BuiltInPartitioner.partitionForKey(key, Integer.parseInt(f[0])));
        }
    }
}
"""


@pytest.fixture(scope="module")
def classpath() -> str:
    if shutil.which("javac") is None or shutil.which("java") is None:
        pytest.fail("the Java client tests need a JDK (javac, java)", pytrace=False)
    lib = broker.resolve_jars(Settings.from_env(), log=lambda _: None)
    jars = sorted(str(j) for j in lib.glob("*.jar") if j.name.startswith(CLASSPATH_JARS))
    assert any("kafka-clients-" in j for j in jars), f"no kafka-clients jar in {lib}"
    return ":".join(jars)


def _compile(source: Path, classpath: str, out: Path) -> None:
    proc = subprocess.run(
        ["javac", "-Xlint:all", "-cp", classpath, "-d", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning" not in proc.stderr, proc.stderr  # e.g. an API deprecated in a newer 4.x


@pytest.fixture(scope="module")
def java_client(classpath: str, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The command that runs the compiled WalletClient."""
    out = tmp_path_factory.mktemp("java-wallet-client")
    _compile(SOURCE, classpath, out)
    return ["java", "-Xmx128m", "-cp", f"{out}:{classpath}", "WalletClient"]


def run_java(
    command: list[str], settings: Settings, event: dict[str, Any], deadline_ms: int
) -> subprocess.CompletedProcess[str]:
    args = [
        "--bootstrap",
        settings.bootstrap_servers,
        "--withdrawals",
        settings.topic_withdrawals,
        "--decisions",
        settings.topic_decisions,
        "--deadline-ms",
        str(deadline_ms),
    ]
    for name in ("withdrawal_id", "account_id", "asset", "amount", "destination", "requested_at"):
        args += [f"--{name.replace('_', '-')}", str(event[name])]
    args += ["--amount-usd", str(event["amount_usd"])]
    return subprocess.run(
        command + args, capture_output=True, text=True, timeout=deadline_ms / 1000 + 60, check=False
    )


def withdrawal(account: str) -> dict[str, Any]:
    return {
        "withdrawal_id": str(uuid.uuid4()),
        "account_id": account,
        "asset": "ETH",
        "amount": "0.25",
        "amount_usd": 812.5,
        "destination": f"0x{uuid.uuid4().hex}",
        "requested_at": format_rfc3339(time.time()),
    }


def test_the_java_client_publishes_by_murmur2_and_reads_the_workers_verdict(
    java_client: list[str],
    worker_settings: Callable[..., Settings],
    start_worker: Callable[[Settings], subprocess.Popen[bytes]],
) -> None:
    settings = worker_settings("java")
    start_worker(settings)
    event = withdrawal("acct-java-7")

    proc = run_java(java_client, settings, event, WORKER_DEADLINE_MS)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    # The withdrawal as Java wrote it: plain JSON, key = account_id, murmur2 partition.
    (sent,) = records_of(settings, settings.topic_withdrawals, event["withdrawal_id"])
    assert sent.key == b"acct-java-7"
    assert sent.partition == murmur2_partition(b"acct-java-7", settings.partitions)
    assert json.loads(sent.value) == event
    # The worker decided it, and Java printed exactly what kafka-python reads on decisions.
    verdicts = records_of(settings, settings.topic_decisions, event["withdrawal_id"])
    assert verdicts, "the worker wrote no verdict"
    theirs = json.loads(verdicts[0].value)
    assert verdicts[0].partition == murmur2_partition(b"acct-java-7", settings.partitions)
    assert (printed["withdrawal_id"], printed["verdict"], printed["score"]) == (
        theirs["withdrawal_id"],
        theirs["verdict"],
        theirs["score"],
    )
    assert printed == theirs and "source" not in printed


def test_the_java_client_says_delay_when_no_worker_answers(
    java_client: list[str],
    worker_settings: Callable[..., Settings],
    start_worker: Callable[[Settings], subprocess.Popen[bytes]],
) -> None:
    settings = worker_settings("java-stopped")
    stop_process(start_worker(settings))  # topics exist, nobody decides
    event = withdrawal("acct-java-stopped")

    proc = run_java(java_client, settings, event, STOPPED_DEADLINE_MS)

    assert proc.returncode == 3, proc.stdout + proc.stderr
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert printed["verdict"] == "delay" and printed["reason"] == "client_timeout"
    assert printed["source"] == "client" and printed["withdrawal_id"] == event["withdrawal_id"]
    # Measured by the client from its start (a JVM's own start-up on a busy machine is not
    # the client's deadline): the answer comes at the deadline, not after a long wait.
    answered = re.search(r"answered after (\d+) ms \(deadline (\d+) ms\)", proc.stderr)
    assert answered is not None, proc.stderr
    assert STOPPED_DEADLINE_MS <= int(answered.group(1)) <= STOPPED_DEADLINE_MS + ANSWER_SLACK_MS
    (sent,) = records_of(settings, settings.topic_withdrawals, event["withdrawal_id"])
    assert sent.partition == murmur2_partition(b"acct-java-stopped", settings.partitions)


def test_the_java_client_without_a_decisions_topic_says_delay_with_client_error(
    java_client: list[str], bootstrap_servers: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:10]
    settings = Settings(
        bootstrap_servers=bootstrap_servers,
        topic_withdrawals=f"t-{run}-withdrawals",
        topic_decisions=f"t-{run}-missing-decisions",
        data_dir=tmp_path,
    )
    withdrawals = [s for s in topic_specs(settings) if s.name == settings.topic_withdrawals]
    ensure_topics(bootstrap_servers, withdrawals)
    try:
        # A generous deadline: a missing topic is reported at once, not by timing out.
        proc = run_java(java_client, settings, withdrawal("acct-java-none"), WORKER_DEADLINE_MS)
    finally:
        delete_topics(bootstrap_servers, [settings.topic_withdrawals])
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert (printed["verdict"], printed["reason"]) == ("delay", "client_error")
    assert "does not exist" in printed["detail"]


def test_javas_partitioner_and_kafka_pythons_murmur2_agree(classpath: str, tmp_path: Path) -> None:
    source = tmp_path / "JavaPartitions.java"
    source.write_text(PARTITIONS_SNIPPET)
    _compile(source, classpath, tmp_path)
    rng = random.Random(20261124)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_:äöü€漢字"
    keys = ["acct-000334", "a", "ab", "abc", "abcd", "acct-java-7"] + [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(300)
    ]
    cases = [(n, key) for key in keys for n in (1, 3, 4, 12, 97)]

    proc = subprocess.run(
        ["java", "-Xmx64m", "-cp", f"{tmp_path}:{classpath}", "JavaPartitions"],
        input="".join(f"{n}\t{key}\n" for n, key in cases),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    java = [int(line) for line in proc.stdout.split()]
    python = [murmur2_partition(key.encode("utf-8"), n) for n, key in cases]
    assert len(java) == len(cases) and java == python
