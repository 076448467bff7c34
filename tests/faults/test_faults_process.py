"""Process faults send real signals to real processes and revert cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from bastion.drill.faults import (
    CpuHog,
    HangProcess,
    KillProcess,
    MemoryHog,
    RestartProcess,
    Scope,
    wait_exit,
)
from bastion.errors import UsageError

# A worker that counts; a hang shows as a counter that stops moving.
_COUNTER = "import sys,time\ni=0\nwhile True:\n    i+=1; print(i, flush=True); time.sleep(0.02)\n"


def _wait(pred: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def worker() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", _COUNTER], stdout=subprocess.PIPE, text=True)
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


def test_sigkill(worker: subprocess.Popen[str], seed: int) -> None:
    fault = KillProcess(worker.pid, scope=Scope.of(pids=[worker.pid]))
    fault.inject()
    assert worker.wait(timeout=10) == -signal.SIGKILL
    fault.revert()  # a kill has nothing to undo; recovery is the supervisor's job
    assert not fault.revertible


def test_sigterm(worker: subprocess.Popen[str], seed: int) -> None:
    KillProcess(worker.pid, scope=Scope.of(pids=[worker.pid]), sig=signal.SIGTERM).inject()
    assert worker.wait(timeout=10) == -signal.SIGTERM


def test_hang_stops_and_continue_resumes(worker: subprocess.Popen[str], seed: int) -> None:
    status = psutil.Process(worker.pid)
    fault = HangProcess(worker.pid, scope=Scope.of(pids=[worker.pid]))
    fault.inject()
    assert _wait(lambda: status.status() == psutil.STATUS_STOPPED)
    fault.revert()
    assert _wait(lambda: status.status() != psutil.STATUS_STOPPED)
    assert worker.stdout is not None
    assert int(worker.stdout.readline()) >= 1  # it counts again
    assert worker.poll() is None


def test_restart_starts_a_new_process(worker: subprocess.Popen[str], seed: int) -> None:
    fault = RestartProcess(
        worker.pid,
        [sys.executable, "-c", "import time; time.sleep(60)"],
        scope=Scope.of(pids=[worker.pid]),
        grace_s=5,
    )
    fault.inject()
    try:
        assert worker.wait(timeout=10) is not None
        assert fault.proc is not None
        assert fault.new_pid != worker.pid
        assert fault.proc.poll() is None
    finally:
        if fault.proc is not None:
            fault.proc.kill()
            fault.proc.wait()


def test_cpu_hog_burns_and_stops(seed: int) -> None:
    fault = CpuHog(workers=1, duration_s=30)
    fault.inject()
    pids = [p.pid for p in fault.procs]
    try:
        proc = psutil.Process(pids[0])
        proc.cpu_percent(None)
        assert _wait(lambda: proc.cpu_percent(0.2) > 20.0, timeout=10)
    finally:
        fault.revert()
    assert all(wait_exit(pid, 5) for pid in pids)


def test_memory_hog_holds_and_frees(seed: int) -> None:
    fault = MemoryHog(megabytes=64, duration_s=30)
    fault.inject()
    pid = fault.procs[0].pid
    try:
        assert psutil.Process(pid).memory_info().rss > 60 * (1 << 20)
    finally:
        fault.revert()
    assert wait_exit(pid, 5)


def test_hog_blast_radius() -> None:
    with pytest.raises(UsageError):
        CpuHog(workers=1000)
    with pytest.raises(UsageError):
        MemoryHog(megabytes=10**9)
