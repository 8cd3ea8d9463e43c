"""Processes the local tools start: a worker process, and the one way to stop a process.

:func:`worker_process` is how the demo, the tests and the benchmarks start a ``detector
worker`` *process* and wait for it to be ready; :func:`stop_process` and :func:`terminate`
are the one SIGTERM-then-SIGKILL in the project (the local broker uses it too).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from detector.config import Settings, child_environment
from detector.errors import DetectorError

__all__ = [
    "KILL_WAIT_S",
    "log_tail",
    "pid_alive",
    "stop_process",
    "terminate",
    "wait_exit",
    "worker_process",
]

Log = Callable[[str], None]


def _quiet(message: str) -> None:
    """The default ``log`` of :func:`terminate`: say nothing."""


# A worker is ready in ~4 s on 2 cores; a slow CI machine gets a generous margin (s).
READY_TIMEOUT_S = 90.0
# Faust's clean shutdown (flush, leave group) takes ~1-3 s; then SIGKILL (s).
STOP_TIMEOUT_S = 30.0
_POLL_S = 0.25
# After SIGKILL, how long a process may take to vanish before we give up (s).
KILL_WAIT_S = 10.0


@contextlib.contextmanager
def worker_process(
    settings: Settings,
    *,
    log_path: Path,
    log_level: str = "warning",
    ready_timeout: float = READY_TIMEOUT_S,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m detector worker`` with ``settings``; yield once /readyz answers 200.

    The process is stopped (SIGTERM, then SIGKILL) when the block exits, whatever happens.
    A worker that exits or is not ready in time raises DetectorError with its log's tail.
    """
    env = child_environment(settings, DETECTOR_LOG_LEVEL=log_level)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "detector", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )
    url = f"http://{settings.web_host}:{settings.web_port}/readyz"
    try:
        deadline = time.monotonic() + ready_timeout
        while not _answers_200(url):
            if proc.poll() is not None:
                raise DetectorError(f"worker exited with {proc.returncode}:\n{log_tail(log_path)}")
            if time.monotonic() > deadline:
                raise DetectorError(
                    f"worker not ready after {ready_timeout:.0f} s:\n{log_tail(log_path)}"
                )
            time.sleep(_POLL_S)
        yield proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> None:
    """:func:`terminate` a child we started, and reap it."""
    if proc.poll() is not None:
        return
    terminate(proc.pid, timeout, what="worker")
    with contextlib.suppress(ChildProcessError):
        proc.wait()


def terminate(pid: int, timeout: float, *, what: str = "process", log: Log = _quiet) -> None:
    """The one way anything here stops a process: SIGCONT (a stopped process cannot act on
    SIGTERM), SIGTERM (a clean shutdown: Kafka's controlled shutdown, Faust leaving its
    group), then SIGKILL after ``timeout`` seconds. Raises DetectorError if it survives."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGTERM)
    if wait_exit(pid, timeout):
        return
    log(f"{what}: pid {pid} still running {timeout:.0f}s after SIGTERM; sending SIGKILL")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not wait_exit(pid, KILL_WAIT_S):
        raise DetectorError(f"{what}: pid {pid} survived SIGKILL for {KILL_WAIT_S:.0f}s")


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (reaps it if it is our exited child)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in {"Z", "X"}


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` is gone; False if it is still alive after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S / 2)
    return True


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return int(response.status) == 200
    except OSError:
        return False
