"""One supervised OS process: spawn it in its own process group, watch it, signal it.

Owns: ``ProcessSpec`` (what to run), ``Child`` (one running instance) and ``Exit`` (how it
ended: code, signal, OOM kill). Every signal goes to the whole process group, so helpers
the job forked (data loader workers) stop with it.

Must never: restart anything (``_supervisor`` decides that), or use a shell.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bastion.errors import UsageError
from bastion.supervise._heartbeat import HEARTBEAT_ENV, heartbeat_age

__all__ = ["Child", "ChildStatistics", "Exit", "ProcessSpec", "pid_alive"]


@dataclass(frozen=True, slots=True)
class ChildStatistics:
    """One child process, now."""

    name: str
    pid: int
    #: still running (not exited, not reaped)
    running: bool
    #: seconds since it was started
    uptime_s: float
    #: seconds since its last heartbeat, None when it has no heartbeat file
    heartbeat_age_s: float | None
    #: how it exited (``Exit.to_json()``), None while it runs
    exit: dict[str, Any] | None


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie (one of another user counts).

    ``kill(pid, 0)`` alone says yes to a zombie, which has exited and only waits to be
    reaped, so a waiter polling it would wait forever; psutil reads its state."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


@dataclass(frozen=True, kw_only=True)
class ProcessSpec:
    """What to run. ``env`` is added to (not a replacement for) the supervisor's env."""

    argv: Sequence[str]
    cwd: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    name: str = "child"
    log_path: Path | None = None  # stdout and stderr appended here; None: inherit
    #: Linux: SIGKILL the child when the thread that started it dies, so a supervisor
    #: killed with SIGKILL leaves no orphan (serving replicas; not training jobs, which
    #: outlive their supervisor on purpose and are picked up by the next one)
    die_with_parent: bool = False

    def __post_init__(self) -> None:
        if not self.argv:
            raise UsageError(f"{self.name}: the command is empty; give the program to run")


@dataclass(frozen=True)
class Exit:
    """How a child ended. ``code`` is set for a normal exit, ``signal`` for a kill."""

    code: int | None
    signal: int | None
    oom_killed: bool = False
    runtime_s: float = 0.0
    #: an adopted child (``Child.adopt``) is not ours to reap: how it ended is unknown
    unknown: bool = False

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def reason(self) -> str:
        if self.unknown:
            return "gone"
        if self.oom_killed:
            return "oom_kill"
        if self.signal is not None:
            return f"signal:{signal.Signals(self.signal).name}"
        return f"exit:{self.code}"

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "signal": self.signal,
            "oom_killed": self.oom_killed,
            "reason": self.reason,
            "runtime_s": round(self.runtime_s, 4),
        }


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks the kernel to SIGKILL the child when its parent dies.

    Why prctl and not something else: a SIGKILLed supervisor runs no cleanup at all, so
    only the kernel can stop its children; ``PR_SET_PDEATHSIG`` is the kernel's own
    answer, it survives ``execve``, and Python has no wrapper for it, hence ctypes. The
    function is looked up here, in the parent, so the child between fork and exec only
    makes one foreign call (a ``preexec_fn`` must not import or take locks: other threads
    may hold them at the fork). The signal follows the *thread* that forked, which for a
    ``Supervisor`` is its own thread, alive as long as the child it watches. If the
    parent died before the call took effect, the child kills itself at once.

    None off Linux, or where libc has no ``prctl``.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()
    kill = int(signal.SIGKILL)

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), kill)

    return arm


def _oom_kills() -> int | None:
    """The kernel's OOM-kill counter for our cgroup (v2), or None where unreadable.

    A child that dies of SIGKILL while this counter rose was OOM-killed; nothing else in
    the exit status tells the two apart.
    """
    with contextlib.suppress(OSError, ValueError):
        cgroup = Path("/proc/self/cgroup").read_text().strip().split("::", 1)[-1]
        events = Path("/sys/fs/cgroup") / cgroup.lstrip("/") / "memory.events"
        for line in events.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    return None


class Child:
    """A running process started from a ``ProcessSpec``. Non-blocking ``poll()`` makes it
    usable from asyncio code (call it from a periodic task); ``wait()`` blocks.

    A subclass may run the process elsewhere (``bastion.train``'s Ray child runs it on a
    node of a Ray cluster) by overriding ``poll``, ``wait``, ``signal``,
    ``first_beat_seen`` and ``placement``; it sets ``local = False`` so no local warm
    standby is kept for it."""

    #: the process runs on this machine (a warm standby here can replace it)
    local = True

    def placement(self) -> dict[str, Any]:
        """Where the process runs, for events (empty: here)."""
        return {}

    def __init__(
        self,
        spec: ProcessSpec,
        *,
        heartbeat_path: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
        standby_preload: Sequence[str] | None = None,
    ) -> None:
        self.spec = spec
        self.heartbeat_path = heartbeat_path
        self.is_standby = standby_preload is not None
        env = self._env(spec, extra_env)
        argv = list(spec.argv)
        self.ready_path: Path | None = None
        if standby_preload is not None:
            if heartbeat_path is not None:
                self.ready_path = heartbeat_path.with_name(f"{heartbeat_path.name}.standby")
                with contextlib.suppress(FileNotFoundError):
                    self.ready_path.unlink()
                env["BASTION_STANDBY_READY_FILE"] = str(self.ready_path)
            argv = [sys.executable, "-m", "bastion.supervise._standby"]
            argv += ["--preload", ",".join(standby_preload)]
        else:
            self._reset_heartbeat()
        self._oom_before = _oom_kills()
        self._log: IO[bytes] | None = None
        out: Any = None
        if spec.log_path is not None:
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = spec.log_path.open("ab")
            out = self._log
        self.started_mono = time.monotonic()
        try:
            self._proc = subprocess.Popen(
                argv,
                cwd=spec.cwd,
                env=env,
                stdin=subprocess.PIPE if self.is_standby else subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if out is not None else None,
                start_new_session=True,  # own process group: signals reach its helpers too
                preexec_fn=_die_with_parent() if spec.die_with_parent else None,  # noqa: PLW1509
            )
        except FileNotFoundError:
            self._close_log()
            raise UsageError(
                f"{spec.name}: command {spec.argv[0]!r} not found"
                f"{f' (in {spec.cwd})' if spec.cwd else ''}; check the job's command "
                "and PATH"
            ) from None
        except PermissionError:
            self._close_log()
            raise UsageError(
                f"{spec.name}: command {spec.argv[0]!r} is not executable; "
                "check its permissions or run it through its interpreter"
            ) from None
        self.pid = self._proc.pid
        self.exit: Exit | None = None

    def _env(self, spec: ProcessSpec, extra_env: Mapping[str, str] | None) -> dict[str, str]:
        env = {**os.environ, **spec.env, **(extra_env or {})}
        if self.heartbeat_path is not None:
            env[HEARTBEAT_ENV] = str(self.heartbeat_path)
        return env

    def _reset_heartbeat(self) -> None:
        if self.heartbeat_path is not None:
            self.heartbeat_path.parent.mkdir(parents=True, exist_ok=True)
            # Emptied, so progress read back belongs to this process, not the last one;
            # the heartbeat timeout counts from here.
            self.heartbeat_path.write_bytes(b"")
            self._reset_mtime = self.heartbeat_path.stat().st_mtime_ns

    _reset_mtime = 0

    @classmethod
    def adopt(
        cls,
        spec: ProcessSpec,
        pid: int,
        *,
        create_time: float,
        heartbeat_path: Path | None = None,
    ) -> Child | None:
        """Take over process ``pid``, which a supervisor killed before us started from
        ``spec`` in its own process group; ``None`` unless that very process (same pid
        and same start time, so a reused pid is never taken for it) still runs.

        It is not our child, so its exit is seen by polling, not reaped, and its
        ``Exit`` says ``unknown`` (code and signal went to the process that is gone)."""
        import psutil

        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - create_time) > 0.05:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except psutil.Error:
            return None
        self = cls.__new__(cls)
        self.spec = spec
        self.heartbeat_path = heartbeat_path
        self.is_standby = False
        self.ready_path = None
        self._oom_before = None
        self._log = None
        self.started_mono = time.monotonic() - max(0.0, time.time() - create_time)
        self._proc = None  # type: ignore[assignment]  # adopted: not ours to wait(2) for
        self._adopted = proc
        self.pid = pid
        self.exit = None
        return self

    _adopted: Any = None

    @property
    def create_time(self) -> float:
        """When the process started (wall clock, as ``psutil`` reads it from the kernel)."""
        import psutil

        if self._adopted is not None:
            return float(self._adopted.create_time())
        try:
            return float(psutil.Process(self.pid).create_time())
        except psutil.Error:
            return 0.0

    def _adopted_exit(self) -> Exit:
        self.exit = Exit(
            code=None, signal=None, unknown=True, runtime_s=time.monotonic() - self.started_mono
        )
        return self.exit

    @staticmethod
    def can_stand_by(spec: ProcessSpec) -> bool:
        """A warm standby can become ``spec`` if it is ``<this python> script.py ...`` or
        ``<this python> -m module ...``."""
        argv = list(spec.argv)
        if len(argv) < 2 or os.path.abspath(argv[0]) != os.path.abspath(sys.executable):  # noqa: PTH100
            return False
        return (argv[1] == "-m" and len(argv) > 2) or not argv[1].startswith("-")

    def activate(self, spec: ProcessSpec, *, extra_env: Mapping[str, str] | None = None) -> bool:
        """Turn a warm standby into ``spec``; ``False`` if the standby is gone."""
        if not self.is_standby or self.poll() is not None or self._proc.stdin is None:
            return False
        self._reset_heartbeat()
        request = {
            "argv": list(spec.argv[1:]),
            "cwd": str(spec.cwd) if spec.cwd else None,
            "env": self._env(spec, extra_env),
        }
        try:
            self._proc.stdin.write(json.dumps(request).encode() + b"\n")
            self._proc.stdin.close()
        except (BrokenPipeError, OSError):
            return False
        self.spec = spec
        self.is_standby = False
        self.started_mono = time.monotonic()
        self._oom_before = _oom_kills()
        return True

    def discard(self) -> None:
        """End a standby that will not be used. It holds no state, so SIGKILL at once."""
        with contextlib.suppress(OSError):
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        self.signal(signal.SIGKILL)
        self.wait(10.0)

    def standby_ready(self) -> bool:
        """A standby has finished its imports (it says so by creating its ready file)."""
        return (
            self.is_standby
            and self.ready_path is not None
            and self.ready_path.exists()
            and self.poll() is None
        )

    def first_beat_seen(self) -> bool:
        """Has the process beaten since it started (or was activated)?"""
        if self.heartbeat_path is None:
            return False
        try:
            return self.heartbeat_path.stat().st_mtime_ns > self._reset_mtime
        except OSError:
            return False

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _finish(self, returncode: int) -> Exit:
        if self.exit is None:
            sig = -returncode if returncode < 0 else None
            oom = False
            if sig == signal.SIGKILL and self._oom_before is not None:
                after = _oom_kills()
                oom = after is not None and after > self._oom_before
            self.exit = Exit(
                code=returncode if returncode >= 0 else None,
                signal=sig,
                oom_killed=oom,
                runtime_s=time.monotonic() - self.started_mono,
            )
            self._close_log()
        return self.exit

    def poll(self) -> Exit | None:
        """Non-blocking: the ``Exit`` if the process has ended, else ``None``."""
        if self.exit is not None:
            return self.exit
        if self._proc is None:
            import psutil

            try:
                alive = self._adopted.is_running() and self._adopted.status() != "zombie"
            except psutil.Error:
                alive = False
            return None if alive else self._adopted_exit()
        rc = self._proc.poll()
        return None if rc is None else self._finish(rc)

    def wait(self, timeout: float | None = None) -> Exit | None:
        """Block up to ``timeout`` seconds for the exit; ``None`` if still running."""
        if self._proc is None:
            deadline = None if timeout is None else time.monotonic() + timeout
            while self.poll() is None:
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                time.sleep(0.02)  # not ours to wait(2) for: poll its liveness
            return self.exit
        try:
            return self._finish(self._proc.wait(timeout))
        except subprocess.TimeoutExpired:
            return None

    @property
    def running(self) -> bool:
        return self.poll() is None

    def signal(self, sig: int) -> bool:
        """Send ``sig`` to the child's process group; ``False`` if it is already gone."""
        if self.poll() is not None:
            return False
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def terminate(self, grace_s: float) -> Exit:
        """SIGTERM, up to ``grace_s`` seconds to exit cleanly, then SIGKILL. Blocking.

        A stopped (SIGSTOP) process cannot act on SIGTERM, so it gets SIGCONT too.
        """
        self.signal(signal.SIGTERM)
        self.signal(signal.SIGCONT)
        done = self.wait(grace_s)
        if done is not None:
            return done
        self.signal(signal.SIGKILL)
        done = self.wait(30.0)
        if done is None:  # pragma: no cover - a process that survives SIGKILL is a kernel bug
            raise RuntimeError(f"{self.spec.name}: pid {self.pid} survived SIGKILL")
        return done

    def heartbeat_age(self) -> float | None:
        return None if self.heartbeat_path is None else heartbeat_age(self.heartbeat_path)

    def statistics(self) -> ChildStatistics:
        return ChildStatistics(
            name=self.spec.name,
            pid=self.pid,
            running=self.exit is None and self.poll() is None,
            uptime_s=round(time.monotonic() - self.started_mono, 3),
            heartbeat_age_s=self.heartbeat_age(),
            exit=self.exit.to_json() if self.exit else None,
        )
