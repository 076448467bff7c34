"""The supervision loop: start a child, watch exit and heartbeat, restart under a budget.

Owns: the lifecycle state machine (``running`` -> ``stopping`` -> ``backoff`` ->
``running`` ... -> ``succeeded`` | ``failed`` | ``stopped``), hang detection by heartbeat
age, and the lifecycle callbacks. ``tick()`` is non-blocking and does one step of the
machine, so asyncio code can drive it from a periodic task; ``run()`` drives it in the
calling thread; ``start()`` drives it in a daemon thread and reports through ``events``
(an ``Emit``; one that must act on an event calls ``loop.call_soon_threadsafe`` to get
back onto its event loop).

Must never: loop forever (the ``RestartBudget`` bounds restarts), block in ``tick()``
(a hung child is killed by deadline, not by waiting), or know what the child is (a
training job, a model replica): callers give events their own prefix.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bastion.events import NO_EVENTS, Emit
from bastion.supervise._child import Child, ChildStatistics, Exit, ProcessSpec
from bastion.supervise._heartbeat import EXITING, heartbeat_note
from bastion.supervise._policy import Backoff, BudgetStatistics, RestartBudget

__all__ = ["Outcome", "State", "Supervisor", "SupervisorStatistics"]

State = Literal["idle", "running", "stopping", "backoff", "succeeded", "failed", "stopped"]
SpecFactory = Callable[[int], ProcessSpec]
#: starts a child somewhere else than here (a Ray node), or None: start it here
Launch = Callable[[ProcessSpec, Path | None, Mapping[str, str]], Child | None]


@dataclass(frozen=True, slots=True)
class SupervisorStatistics:
    """A supervisor, now (``dataclasses.asdict`` makes it JSON)."""

    state: State
    #: children started so far, the first included
    attempts: int
    restarts: int
    #: children stopped for a silent heartbeat
    hangs: int
    #: restarts that took over a ready warm standby
    warm_starts: int
    standby_pid: int | None
    standby_ready: bool
    budget: BudgetStatistics
    #: the current child, None between children
    child: ChildStatistics | None
    #: how the last child exited (``Exit.to_json()``)
    last_exit: dict[str, Any] | None
    #: why the supervisor is in its state (the last failure, a stop request)
    reason: str


@dataclass(frozen=True)
class Outcome:
    """How supervision ended."""

    state: State
    attempts: int
    restarts: int
    last_exit: Exit | None
    reason: str


class Supervisor:
    """Run ``spec`` and keep it running.

    ``restart_on="failure"`` (jobs): exit 0 ends supervision as ``succeeded``;
    ``"always"`` (replicas): any exit is restarted. A missing heartbeat for
    ``heartbeat_timeout_s`` counts as a hang: SIGTERM, ``grace_s``, SIGKILL, restart.
    ``spec`` may be a factory ``attempt -> ProcessSpec`` (e.g. to move to another worker
    slot after a failure).

    An exit code in ``fatal_exit_codes`` (e.g. 2: bad configuration) is not restarted.
    A child whose last beat carries the note ``exiting`` gets ``grace_s`` to finish.
    Until its first heartbeat a child gets ``startup_timeout_s`` instead (imports and
    restore can take longer than a step; a Kubernetes startupProbe does the same).
    A child that ran ``healthy_after_s`` (default 300 s) before it failed resets the
    backoff to its first step and forgives the budget's count (``RestartBudget.forgive``),
    as Kubernetes resets CrashLoopBackOff after a healthy run and systemd counts starts per
    ``StartLimitIntervalSec``: failures spread over a long healthy life never add up to a
    failed job, while a child that crashes at once every time still exhausts the budget.
    ``warm_standby`` keeps one interpreter with ``preload`` imported waiting (see
    ``_standby``), so a restart skips interpreter start-up and heavy imports.
    ``launch(spec, heartbeat_path, env)`` may start the child elsewhere (a ``Child``
    subclass, e.g. on a Ray node) or return None to start it here as usual.

    Events go to ``events`` as ``kind_prefix`` + one of ``bastion.event_kinds.CHILD``
    (``started``, ``exited``, ``hang``, ``restarting``, ``budget_exhausted``, ``fatal``,
    ``succeeded``, ``stopped``, ``standby_started``, ``standby_ready``,
    ``standby_failed``), about ``subject``. Each carries ``attempt`` and the moment of the
    transition as ``at_ns``, so recovery time can be split into detect / restart.
    """

    def __init__(
        self,
        spec: ProcessSpec | SpecFactory,
        *,
        backoff: Backoff | None = None,
        budget: RestartBudget | None = None,
        restart_on: Literal["failure", "always"] = "failure",
        heartbeat_path: Path | None = None,
        heartbeat_timeout_s: float | None = None,
        grace_s: float = 10.0,
        fatal_exit_codes: Collection[int] = (),
        startup_timeout_s: float | None = None,
        healthy_after_s: float | None = 300.0,
        warm_standby: bool = False,
        preload: Sequence[str] = (),
        events: Emit = NO_EVENTS,
        kind_prefix: str = "",
        subject: str = "",
        extra_env: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        launch: Launch | None = None,
    ) -> None:
        if heartbeat_timeout_s is not None and heartbeat_path is None:
            raise ValueError("heartbeat_timeout_s needs a heartbeat_path for the child to touch")
        self._factory: SpecFactory = spec if callable(spec) else (lambda _attempt: spec)
        self.backoff = backoff or Backoff()
        self.budget = budget if budget is not None else RestartBudget(max_restarts=10)
        self.restart_on = restart_on
        self.heartbeat_path = heartbeat_path
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.grace_s = grace_s
        self.fatal_exit_codes = frozenset(fatal_exit_codes)
        self.startup_timeout_s = startup_timeout_s
        self.healthy_after_s = healthy_after_s
        # restarts since a child last ran healthy_after_s: the backoff's exponent
        self.streak = 0
        self.warm_standby = warm_standby
        self.preload = tuple(preload)
        self.standby: Child | None = None
        self.warm_starts = 0
        self._standby_announced = False
        self.events = events
        self.kind_prefix = kind_prefix
        self.subject = subject
        self.extra_env = dict(extra_env or {})
        self.rng = rng or random.Random()
        self.clock = clock
        self.launch = launch
        self.state: State = "idle"
        self.child: Child | None = None
        self.attempts = 0
        self.restarts = 0
        self.hangs = 0
        self.last_exit: Exit | None = None
        self.reason = ""
        self._kill_at: float | None = None
        self._restart_at: float | None = None
        self._stop_requested = False
        self._restart_requested: str | None = None
        self._pending_reason = ""
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._done = threading.Event()

    # -- events -------------------------------------------------------------------------
    def _emit(self, kind: str, **data: Any) -> None:
        data.setdefault("attempt", self.attempts)
        self.events.emit(self.kind_prefix + kind, self.subject, at_ns=time.monotonic_ns(), **data)

    # -- the state machine -----------------------------------------------------------------
    def _spawn(self) -> None:
        spec = self._factory(self.attempts)
        self.attempts += 1
        env = {**self.extra_env, "BASTION_ATTEMPT": str(self.attempts)}
        standby, self.standby = self.standby, None
        elsewhere = self.launch(spec, self.heartbeat_path, env) if self.launch else None
        if elsewhere is not None:
            if standby is not None:
                standby.discard()
            self.child = elsewhere
            self.state = "running"
            self._emit(
                "started",
                pid=elsewhere.pid,
                argv=list(spec.argv),
                name=spec.name,
                warm=False,
                **elsewhere.placement(),
            )
            return
        # Taken over, a standby still importing is better than a cold start, but only one
        # that had finished its imports made this a warm start, and the event says which.
        ready = standby is not None and standby.standby_ready()
        usable = standby is not None and Child.can_stand_by(spec)
        if usable and standby is not None and standby.activate(spec, extra_env=env):
            self.child = standby
            warm = ready
            if warm:
                self.warm_starts += 1
        else:
            if standby is not None:
                standby.discard()
            warm = False
            self.child = Child(spec, heartbeat_path=self.heartbeat_path, extra_env=env)
        self.state = "running"
        self._emit("started", pid=self.child.pid, argv=list(spec.argv), name=spec.name, warm=warm)

    def adopt(self, child: Child) -> None:
        """Supervise ``child`` (from ``Child.adopt``: started by a supervisor that was
        killed) as the running attempt, instead of starting one; before ``start()``."""
        with self._lock:
            if self.state != "idle":
                raise RuntimeError("adopt() is for a supervisor that has not started")
            self.child = child
            self.attempts = 1
            self.state = "running"
            self._emit("adopted", pid=child.pid, name=child.spec.name)

    def _maybe_prepare_standby(self) -> None:
        """Start the next attempt's interpreter once the current child is past its own
        start-up (its first heartbeat), so the two do not compete for the CPU then."""
        if not self.warm_standby or self.child is None or not self.child.local:
            return
        if self.standby is not None:
            if self.standby.poll() is None:
                if not self._standby_announced and self.standby.standby_ready():
                    self._standby_announced = True
                    self._emit("standby_ready", pid=self.standby.pid)
                return
            self.standby = None  # it died; make another
        if not Child.can_stand_by(self.child.spec) or not self.child.first_beat_seen():
            return
        try:
            self.standby = Child(
                self.child.spec,
                heartbeat_path=self.heartbeat_path,
                extra_env=self.extra_env,
                standby_preload=self.preload,
            )
        except Exception as exc:  # a standby is an optimisation; never fail the job for it
            self._emit("standby_failed", error=str(exc))
            return
        self._standby_announced = False
        self._emit("standby_started", pid=self.standby.pid)

    def _drop_standby(self) -> None:
        if self.standby is not None:
            self.standby.discard()
            self.standby = None

    def _finish(self, state: State, reason: str) -> None:
        self._drop_standby()
        self.state = state
        self.reason = reason
        self._done.set()

    def _on_exit(self, exit_: Exit) -> None:
        self.last_exit = exit_
        self._kill_at = None
        hang = self._pending_reason == "hang"
        self._emit("exited", **exit_.to_json(), hang=hang)
        if self._stop_requested:
            self._finish("stopped", "stop requested")
            self._emit("stopped", reason=self.reason)
            return
        if self._pending_reason == "restart":
            # asked for (request_restart), not a failure: no budget spent, no backoff
            why = self._restart_requested or "requested"
            self._restart_requested = None
            self._pending_reason = ""
            self.restarts += 1
            self._restart_at = self.clock()
            self.state = "backoff"
            self._emit(
                "restarting",
                reason=f"requested: {why}",
                delay_s=0.0,
                restarts=self.restarts,
                streak=self.streak,
                reset=False,
            )
            return
        if exit_.ok and self.restart_on == "failure" and not hang:
            self._finish("succeeded", "exit:0")
            self._emit("succeeded", restarts=self.restarts)
            return
        reason = "hang" if hang else exit_.reason
        self._pending_reason = ""
        healthy = self.healthy_after_s is not None and exit_.runtime_s >= self.healthy_after_s
        if healthy:
            # It ran long enough to prove the earlier failures transient: start over, so a
            # long job's tenth crash in a week costs what its first did.
            self.streak = 0
            self.budget.forgive()
        if not hang and exit_.code is not None and exit_.code in self.fatal_exit_codes:
            # e.g. exit 2, a usage/configuration error: a restart would fail the same way.
            self._finish("failed", f"exit code {exit_.code} is fatal; not restarting")
            self._emit("fatal", code=exit_.code, restarts=self.restarts)
            return
        if not self.budget.spend():
            self._finish(
                "failed",
                f"restart budget exhausted after {self.restarts} restarts "
                f"(last: {reason}); fix the cause, then run it again",
            )
            self._emit("budget_exhausted", restarts=self.restarts, last=reason)
            return
        delay = self.backoff.delay(self.streak, self.rng)
        self.streak += 1
        self.restarts += 1
        self._restart_at = self.clock() + delay
        self.state = "backoff"
        self._emit(
            "restarting",
            reason=reason,
            delay_s=round(delay, 4),
            restarts=self.restarts,
            streak=self.streak,
            reset=healthy,
        )

    def tick(self) -> State:
        """Advance the machine by one non-blocking step and return the state."""
        with self._lock:
            now = self.clock()
            if self.state == "idle":
                if self._stop_requested:
                    self._finish("stopped", "stop requested")
                else:
                    self._spawn()
            elif self.state in ("running", "stopping"):
                assert self.child is not None
                exit_ = self.child.poll()
                if exit_ is not None:
                    self._on_exit(exit_)
                elif self.state == "stopping":
                    if self._kill_at is not None and now >= self._kill_at:
                        self.child.signal(9)
                        self._kill_at = None
                elif self._stop_requested:
                    self._begin_stop("stop")
                elif self._restart_requested is not None:
                    self._begin_stop("restart")
                else:
                    self._maybe_prepare_standby()
                    limit = self.heartbeat_timeout_s
                    if (
                        limit is not None
                        and self.startup_timeout_s is not None
                        and not self.child.first_beat_seen()
                    ):
                        limit = max(limit, self.startup_timeout_s)
                    if (
                        limit is not None
                        and self.heartbeat_path is not None
                        and heartbeat_note(self.heartbeat_path) == EXITING
                    ):
                        # it said it is shutting down (interpreter teardown with torch
                        # can take seconds): allow the grace period
                        limit = max(limit, self.grace_s)
                    age = self.child.heartbeat_age() if limit is not None else None
                    if limit is not None and age is not None and age > limit:
                        self.hangs += 1
                        self._emit(
                            "hang", heartbeat_age_s=math.ceil(age * 1000) / 1000, pid=self.child.pid
                        )
                        self._begin_stop("hang")
            elif self.state == "backoff":
                if self._stop_requested:
                    self._finish("stopped", "stop requested")
                    self._emit("stopped", reason=self.reason)
                elif self._restart_at is not None and now >= self._restart_at:
                    self._restart_at = None
                    self._spawn()
            return self.state

    def _begin_stop(self, why: str) -> None:
        assert self.child is not None
        self._pending_reason = why
        self.state = "stopping"
        self.child.signal(15)  # SIGTERM: the job writes its emergency checkpoint
        self.child.signal(18)  # SIGCONT: a SIGSTOPped child cannot act on SIGTERM otherwise
        self._kill_at = self.clock() + self.grace_s

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed", "stopped")

    def outcome(self) -> Outcome:
        return Outcome(self.state, self.attempts, self.restarts, self.last_exit, self.reason)

    # -- drivers ---------------------------------------------------------------------------
    def run(self, *, poll_s: float = 0.02) -> Outcome:
        """Drive the machine in this thread until it finishes."""
        while not self.finished:
            self.tick()
            if not self.finished:
                # A poll interval, not synchronisation: the child's exit is observed on
                # the next tick; 20 ms keeps detection latency well under the 3 s RTO.
                self._done.wait(poll_s)
        return self.outcome()

    def start(self, *, poll_s: float = 0.02) -> threading.Thread:
        """Drive the machine in a daemon thread; events go to ``events``."""
        self._thread = threading.Thread(
            target=self.run, kwargs={"poll_s": poll_s}, name="bastion-supervisor", daemon=True
        )
        self._thread.start()
        return self._thread

    def request_stop(self) -> None:
        """Ask for a stop without waiting or locking (safe from a signal handler); the
        next ``tick()`` sends SIGTERM and the grace period starts."""
        self._stop_requested = True

    def request_restart(self, reason: str = "requested") -> None:
        """Ask for the running child to be stopped politely (SIGTERM, grace, SIGKILL) and
        started again at once, e.g. on another slot: a restart asked for is not a
        failure, so it spends no restart budget and waits no backoff. Safe from a signal
        handler; ignored unless a child is running when the next ``tick()`` comes."""
        self._restart_requested = reason

    def stop(self, *, wait: bool = True, timeout: float | None = None) -> Outcome:
        """Ask the child to stop (SIGTERM, grace, SIGKILL) and end supervision."""
        with self._lock:
            self._stop_requested = True
        if self._thread is None:
            while not self.finished:
                self.tick()
                self._done.wait(0.02)
        elif wait:
            self._thread.join(timeout)
        return self.outcome()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until supervision ends; ``True`` if it did within ``timeout``."""
        return self._done.wait(timeout)

    def statistics(self) -> SupervisorStatistics:
        with self._lock:
            return SupervisorStatistics(
                state=self.state,
                attempts=self.attempts,
                restarts=self.restarts,
                hangs=self.hangs,
                warm_starts=self.warm_starts,
                standby_pid=self.standby.pid if self.standby else None,
                standby_ready=bool(self.standby and self.standby.standby_ready()),
                budget=self.budget.statistics(),
                child=self.child.statistics() if self.child else None,
                last_exit=self.last_exit.to_json() if self.last_exit else None,
                reason=self.reason,
            )
