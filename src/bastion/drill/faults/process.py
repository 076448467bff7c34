"""Process faults: SIGKILL, SIGTERM, a hang (SIGSTOP / SIGCONT), restart, CPU and memory hogs.

Owns: sending real signals to processes in scope, and running hog processes that it
starts and stops itself. Scope: a signal goes only to a pid the ``Scope`` holds (or a
descendant of one); hogs are bounded by their own blast radius (``workers``,
``megabytes``, ``duration_s``) and are always children of the drill.

Must never: signal a process outside the scope, the drill itself, or pid 1; leave a
process stopped (a hang's revert always sends SIGCONT) or a hog running after revert.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.drill.faults._base import Fault
from bastion.errors import UsageError
from bastion.supervise import pid_alive

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from bastion.drill.faults.scope import Scope
    from bastion.events import Emit

__all__ = ["CpuHog", "HangProcess", "KillProcess", "MemoryHog", "RestartProcess", "wait_exit"]


def wait_exit(pid: int, timeout_s: float = 10.0) -> bool:
    """Wait (polling, with a deadline) until ``pid`` is gone; True if it went."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.02)
    return not pid_alive(pid)


class KillProcess(Fault):
    """Send ``sig`` (SIGKILL by default; SIGTERM for a polite stop) to a process in scope.

    A kill cannot be undone; its revert is a no-op, and recovery is the supervisor's job
    (which is what the drill measures). ``RestartProcess`` kills and starts it again.
    """

    kind = "process.kill"
    revertible = False

    def __init__(
        self,
        pid: int,
        *,
        scope: Scope,
        sig: int = signal.SIGKILL,
        events: Emit | None = None,
        subject: str = "",
    ) -> None:
        super().__init__(events=events, subject=subject)
        self.pid = scope.check_pid(pid, fault=self.kind)
        self.sig = signal.Signals(sig)

    def describe(self) -> dict[str, Any]:
        return {"pid": self.pid, "signal": self.sig.name}

    def _inject(self) -> dict[str, Any]:
        os.kill(self.pid, self.sig)
        return {}

    def _revert(self) -> dict[str, Any]:
        return {}


class HangProcess(Fault):
    """Freeze a process with SIGSTOP (a hang: alive, silent, holding its sockets);
    revert sends SIGCONT. Children are frozen too when ``tree`` is set."""

    kind = "process.hang"

    def __init__(
        self,
        pid: int,
        *,
        scope: Scope,
        tree: bool = False,
        events: Emit | None = None,
        subject: str = "",
    ) -> None:
        super().__init__(events=events, subject=subject)
        self.pid = scope.check_pid(pid, fault=self.kind)
        self.tree = tree
        self._stopped: list[int] = []

    def describe(self) -> dict[str, Any]:
        return {"pid": self.pid, "tree": self.tree}

    def _inject(self) -> dict[str, Any]:
        pids = [self.pid]
        if self.tree:
            import psutil

            pids += [c.pid for c in psutil.Process(self.pid).children(recursive=True)]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            self._stopped.append(pid)
        return {"stopped": len(pids)}

    def _revert(self) -> dict[str, Any]:
        for pid in reversed(self._stopped):
            # Killed meanwhile (a supervisor's heartbeat timeout): nothing to wake.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._stopped.clear()
        return {}


class RestartProcess(Fault):
    """Stop a process (SIGTERM, then SIGKILL after ``grace_s``) and start ``command``
    again in its place. ``new_pid`` is the replacement; ``proc`` its Popen handle."""

    kind = "process.restart"
    revertible = False

    def __init__(
        self,
        pid: int,
        command: Sequence[str],
        *,
        scope: Scope,
        cwd: str | Path | None = None,
        env: dict[str, str] | None = None,
        grace_s: float = 5.0,
        on_restarted: Callable[[subprocess.Popen[bytes]], None] | None = None,
        quiet: bool = False,
        events: Emit | None = None,
        subject: str = "",
    ) -> None:
        super().__init__(events=events, subject=subject)
        self.pid = scope.check_pid(pid, fault=self.kind)
        self.on_restarted = on_restarted
        self.quiet = quiet
        if not command:
            raise UsageError(f"{self.kind}: a restart needs the command to start again")
        self.command = list(command)
        self.cwd = cwd
        self.env = env
        self.grace_s = grace_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.new_pid: int | None = None

    def describe(self) -> dict[str, Any]:
        return {"pid": self.pid, "command": self.command[:4]}

    def _inject(self) -> dict[str, Any]:
        os.kill(self.pid, signal.SIGTERM)
        if not wait_exit(self.pid, self.grace_s):
            os.kill(self.pid, signal.SIGKILL)
            wait_exit(self.pid, 5.0)
        out = subprocess.DEVNULL if self.quiet else None
        self.proc = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env={**os.environ, **(self.env or {})},
            stdout=out,
            stderr=out,
        )
        self.new_pid = self.proc.pid
        if self.on_restarted is not None:
            self.on_restarted(self.proc)
        return {"new_pid": self.new_pid}

    def _revert(self) -> dict[str, Any]:
        return {}


_CPU_BURN = "import time\nend = time.monotonic() + {d}\nwhile time.monotonic() < end: pass\n"
_MEM_HOLD = (
    "import sys, time\n"
    "block = bytearray({n})\n"
    "for i in range(0, len(block), 4096): block[i] = 1\n"  # touch every page: resident, not virtual
    "print('ready', flush=True)\n"
    "time.sleep({d})\n"
)


class _Hog(Fault):
    """Common part of the hogs: child processes the fault starts and always stops."""

    def __init__(self, *, events: Emit | None, subject: str, duration_s: float) -> None:
        super().__init__(events=events, subject=subject)
        self.duration_s = duration_s
        self.procs: list[subprocess.Popen[bytes]] = []

    def _stop_all(self) -> int:
        stopped = 0
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                stopped += 1
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        self.procs.clear()
        return stopped

    def _revert(self) -> dict[str, Any]:
        return {"stopped": self._stop_all()}


class CpuHog(_Hog):
    """Burn ``workers`` CPUs for up to ``duration_s`` (the hogs end themselves even if the
    drill dies). Blast radius: at most ``os.cpu_count()`` workers."""

    kind = "process.cpu_hog"

    def __init__(
        self,
        *,
        workers: int = 1,
        duration_s: float = 60.0,
        events: Emit | None = None,
        subject: str = "",
    ) -> None:
        super().__init__(events=events, subject=subject, duration_s=duration_s)
        cpus = os.cpu_count() or 1
        if not 1 <= workers <= cpus:
            raise UsageError(f"{self.kind}: workers must be between 1 and {cpus}, got {workers}")
        self.workers = workers

    def describe(self) -> dict[str, Any]:
        return {"workers": self.workers, "duration_s": self.duration_s}

    def _inject(self) -> dict[str, Any]:
        code = _CPU_BURN.format(d=float(self.duration_s))
        self.procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(self.workers)]
        return {"pids": [p.pid for p in self.procs]}


class MemoryHog(_Hog):
    """Hold ``megabytes`` of resident memory in a child process for up to ``duration_s``.
    Blast radius: refuses more than half of the memory available now."""

    kind = "process.memory_hog"

    def __init__(
        self,
        *,
        megabytes: int = 256,
        duration_s: float = 60.0,
        events: Emit | None = None,
        subject: str = "",
    ) -> None:
        super().__init__(events=events, subject=subject, duration_s=duration_s)
        import psutil

        available_mb = psutil.virtual_memory().available // (1 << 20)
        if not 1 <= megabytes <= available_mb // 2:
            raise UsageError(
                f"{self.kind}: {megabytes} MB is outside the blast radius (1 to half of the "
                f"{available_mb} MB available); ask for less"
            )
        self.megabytes = megabytes

    def describe(self) -> dict[str, Any]:
        return {"megabytes": self.megabytes, "duration_s": self.duration_s}

    def _inject(self) -> dict[str, Any]:
        code = _MEM_HOLD.format(n=self.megabytes << 20, d=float(self.duration_s))
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        self.procs = [proc]
        assert proc.stdout is not None
        ready = proc.stdout.readline()  # blocks until the memory is touched (or it died)
        if ready.strip() != b"ready":
            self._stop_all()
            raise UsageError(f"{self.kind}: the hog could not allocate {self.megabytes} MB")
        return {"pids": [proc.pid]}
