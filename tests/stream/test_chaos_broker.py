"""The chaos suite (broker tier, sized for CI): real workers, kill -9, a broker restart,
scaling 1 -> 2 -> 1, audited with a second Kafka client (``bench/chaos.py --ci``).

Every run must end with no withdrawal without a verdict, every duplicate verdict message
byte-identical to the first, no contradiction, every verdict equal to ``replay`` over the
same events (the destination stage's order taken from the by-destination topic), every input
partition committed to its end, and verdicts for a killed worker's partitions back within
``MAX_FAILOVER_S``. The longer version (100,000 withdrawals, 5 kills) is the same script run on
demand; its figures are in the README.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.broker

REPO = Path(__file__).resolve().parents[2]
# The target is 15 s (README: failover); CI machines are slower and shared.
MAX_FAILOVER_S = 30.0


def _bench(bootstrap_servers: str, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``bench/<script> args`` against the suite's broker."""
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args],
        cwd=REPO,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _chaos(
    tmp_path: Path, bootstrap_servers: str, *args: str, max_replay_mismatches: int = 0
) -> dict[str, Any]:
    run_dir = tmp_path / "chaos"
    result = _bench(
        bootstrap_servers,
        "chaos.py",
        "--ci",
        "--max-failover",
        str(MAX_FAILOVER_S),
        "--max-contradictions",
        "0",
        "--max-replay-mismatches",
        str(max_replay_mismatches),
        "--run-dir",
        str(run_dir),
        *args,
    )
    summary = result.stdout[-4000:] + result.stderr[-2000:]
    assert result.returncode == 0, summary
    report: dict[str, Any] = json.loads((run_dir / "result.json").read_text())
    assert report["lost"] == 0, summary
    assert report["with_verdict"] == report["sent"], summary
    assert report["duplicates_identical"] == report["duplicate_messages"], summary
    assert report["contradictions"] == 0, summary
    assert report["replay_mismatches"] <= max_replay_mismatches, summary
    assert report["group_committed_to_end"], summary
    return report


def test_kill_minus_nine_twice_and_a_broker_restart(bootstrap_servers: str, tmp_path: Path) -> None:
    """Two workers; one is kill -9'd, the broker restarts, the other is kill -9'd (a broker
    of its own: the suite's broker stays up)."""
    report = _chaos(tmp_path, bootstrap_servers, "--n", "3000", "--schedule", "kill,broker,kill")
    kills = [s for s in report["steps"] if s["step"] == "kill"]
    assert len(kills) == 2 and all(s["failover_s"] is not None for s in kills)
    assert max(s["failover_s"] for s in kills) <= MAX_FAILOVER_S


def test_kill_minus_nine_with_the_kubernetes_settings(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    """What deploy/k8s runs: RocksDB state kept on disk, a 6 s session, heartbeat 1 s. A
    restarted worker fetched withdrawals[0]@1318.. before its seek to the committed 1127 and
    then dropped 1127..1317 as already read (919 withdrawals lost in one run of three kills);
    its consumer now passes each stream partition's records on only in order."""
    report = _chaos(
        tmp_path,
        bootstrap_servers,
        "--n",
        "3000",
        "--schedule",
        "kill,kill",
        "--set",
        "store=rocksdb",
        "--set",
        "session_timeout_s=6",
        "--set",
        "heartbeat_interval_s=1",
    )
    kills = [s for s in report["steps"] if s["step"] == "kill"]
    assert len(kills) == 2 and all(s["failover_s"] is not None for s in kills)


def test_scaling_one_to_two_to_one_worker(bootstrap_servers: str, tmp_path: Path) -> None:
    # Once 348 of 2,500 first verdicts differed from replay here (281 redelivered): a hot
    # account's redelivery beyond its 64 remembered ids, applied twice, most likely (the
    # same pattern traced in the kill -9 test). Fixed by the
    # account's last applied offset (tests/stream/test_idempotency.py); 0 again.
    report = _chaos(
        tmp_path,
        bootstrap_servers,
        "--n",
        "2500",
        "--workers",
        "1",
        "--schedule",
        "add,remove",
    )
    assert [s["step"] for s in report["steps"]] == ["add", "remove"]


def test_two_workers_starting_on_a_backlog_lose_nothing(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    """20,000 preloaded withdrawals on fresh partitions; the second worker joins while the
    first drains. Before the fix (aiokafka never rewound a partition without a committed
    offset) this lost ~2,000 of them in every run: 5,827 over 3 runs of
    ``bench/startup_loss.py``."""
    result = _bench(bootstrap_servers, "startup_loss.py", "--trials", "1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trial = json.loads(result.stdout.splitlines()[0].partition(": ")[2])
    assert trial["lost"] == 0 and trial["decided"] == trial["sent"] == 20_000
