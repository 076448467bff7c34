"""The live state of one drill run, shared by the runner and the Chaos Toolkit extension.

Owns: ``DrillContext``: the run's ``Scope`` (widened only by processes, proxies and
upstreams the experiment itself starts), its event log, the faults injected so far (for
rollback and the safety net), the processes/proxies/upstreams it started, background
load statistics and steady-state samples. The runner installs one with ``activate``;
the extension's activities reach it with ``current()``.

Must never: outlive its run (``close`` reverts every fault still injected and stops
everything it started), or widen its scope to anything the experiment did not start.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.errors import ScopeError, UsageError

if TYPE_CHECKING:
    from bastion.drill.faults import Fault, FaultyUpstream, Scope, TcpFaultProxy
    from bastion.drill.faults._base import FaultStatistics
    from bastion.drill.faults.http import UpstreamStatistics
    from bastion.drill.faults.network import ProxyStatistics
    from bastion.events import EventLog

__all__ = ["DrillContext", "DrillStatistics", "Sample", "activate", "current"]


@dataclass(frozen=True, slots=True)
class DrillStatistics:
    """A live drill run, now."""

    faults: dict[str, FaultStatistics]
    #: processes the drill started, by name: pid
    processes: dict[str, int]
    proxies: dict[str, ProxyStatistics]
    upstreams: dict[str, UpstreamStatistics]
    #: steady-state samples taken, and how many of them failed
    samples: int
    samples_broken: int
    #: actions the scope refused
    refusals: int
    #: why the run was aborted, or None
    aborted: str | None
    #: what the drill may touch
    scope: str


@dataclass(frozen=True, slots=True)
class Sample:
    """One steady-state check: when it finished (monotonic ns) and whether it held."""

    mono_ns: int
    met: bool
    phase: str  # before | during | after | wait


@dataclass
class DrillContext:
    base: Path
    scope: Scope
    events: EventLog
    subject: str = ""
    seed: int | None = None
    faults: list[tuple[str, Fault]] = field(default_factory=list)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    proxies: dict[str, TcpFaultProxy] = field(default_factory=dict)
    upstreams: dict[str, FaultyUpstream] = field(default_factory=dict)
    load: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    refusals: list[ScopeError] = field(default_factory=list)
    baselines: dict[str, dict[str, str]] = field(default_factory=dict)
    started_event_id: int = 0
    aborted: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def resolve(self, path: str | Path) -> Path:
        """A path from the experiment, relative to the experiment file's directory."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base / p)

    def widen_pid(self, pid: int) -> None:
        with self.lock:
            self.scope = self.scope.with_pids(pid)

    def widen_port(self, port: int) -> None:
        with self.lock:
            self.scope = self.scope.with_ports(port)

    def add_fault(self, name: str, fault: Fault) -> None:
        with self.lock:
            if any(n == name for n, _ in self.faults):
                raise UsageError(f"drill: a fault named {name!r} is already injected")
            self.faults.append((name, fault))

    def record_sample(self, met: bool, phase: str) -> Sample:
        sample = Sample(time.monotonic_ns(), met, phase)
        with self.lock:
            self.samples.append(sample)
        return sample

    def last_sample(self) -> Sample | None:
        with self.lock:
            return self.samples[-1] if self.samples else None

    def process(self, name: str) -> subprocess.Popen[bytes]:
        try:
            return self.processes[name]
        except KeyError:
            raise UsageError(
                f"drill: no process named {name!r} was started by this experiment "
                f"(started: {sorted(self.processes) or 'none'})"
            ) from None

    def statistics(self) -> DrillStatistics:
        with self.lock:
            return DrillStatistics(
                faults={n: f.statistics() for n, f in self.faults},
                processes={n: p.pid for n, p in self.processes.items()},
                proxies={n: p.statistics() for n, p in self.proxies.items()},
                upstreams={n: u.statistics() for n, u in self.upstreams.items()},
                samples=len(self.samples),
                samples_broken=sum(1 for s in self.samples if not s.met),
                refusals=len(self.refusals),
                aborted=self.aborted,
                scope=self.scope.describe(),
            )

    def revert_all(self) -> list[str]:
        """Revert every injected fault, newest first; return their names."""
        with self.lock:
            pending = list(reversed(self.faults))
        done = []
        for name, fault in pending:
            if fault.injected and not fault.reverted:
                fault.revert()
                if fault.revertible:  # a kill has nothing to undo: not worth reporting
                    done.append(name)
        return done

    def close(self) -> list[str]:
        """The safety net: revert what is left, stop what this run started."""
        self.stop.set()
        left = self.revert_all()
        for proxy in self.proxies.values():
            proxy.stop()
        for upstream in self.upstreams.values():
            upstream.stop()
        for proc in self.processes.values():
            _stop_tree(proc)
        return left


def _stop_tree(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """SIGTERM (a supervisor then stops its workers), SIGKILL after ``grace_s``, and
    SIGKILL for any descendant left behind: a drill leaves no orphans."""
    import psutil

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        children = []
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
    _, alive = psutil.wait_procs(children, timeout=grace_s)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()


_current: DrillContext | None = None
_current_lock = threading.Lock()


class _NotInADrill(SystemExit):
    """A Bastion activity run by plain ``chaos run``, outside a drill: the run must stop.

    Why SystemExit: chaoslib turns every ``Exception`` an activity raises into a failed
    activity and carries on, so the experiment ended "completed" and ``chaos run`` exited
    0 although no fault was injected: a pass that did not happen. A SystemExit is not an
    ``Exception``: chaoslib's runner marks the run "interrupted", and ``chaos run`` exits 1.
    """


def _called_by_chaos_toolkit() -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith("chaoslib."):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def current() -> DrillContext:
    """The running drill's context; a clear error when an activity runs outside a drill.

    Called by Chaos Toolkit outside a drill (plain ``chaos run``), it stops the whole run
    (``_NotInADrill``), so the run can never be reported as passed."""
    if _current is None:
        message = (
            "no drill is running: Bastion's activities run inside `bastion drill run` "
            "(or bastion.drill.run_experiment), which sets up their scope"
        )
        if _called_by_chaos_toolkit():
            message += (
                "; plain `chaos run` cannot run this experiment (nothing was injected, so "
                "it did not pass): run it with `bastion drill run EXPERIMENT`, which uses "
                "Chaos Toolkit's runner with Bastion's scope, setup and measurements"
            )
            logging.getLogger("chaostoolkit").critical(message)
            raise _NotInADrill(message)
        raise UsageError(message)
    return _current


@contextlib.contextmanager
def activate(ctx: DrillContext) -> Any:
    global _current
    with _current_lock:
        if _current is not None:
            raise UsageError("a drill is already running in this process; run one at a time")
        _current = ctx
    try:
        yield ctx
    finally:
        with _current_lock:
            _current = None
