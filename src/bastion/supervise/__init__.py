"""Shared process supervision: spawn, watch, heartbeat, signal, restart with backoff.

Used by the training supervisor (``bastion.train``) and the inference gateway's replica
manager. One small API::

    from bastion.supervise import Backoff, ProcessSpec, RestartBudget, Supervisor

    sup = Supervisor(
        ProcessSpec(argv=["python", "train.py"], cwd=workdir, env={"X": "1"}, name="job"),
        backoff=Backoff(initial=0.2, factor=2.0, cap=10.0, jitter=0.2),
        budget=RestartBudget(max_restarts=10),          # window_s=600 for replicas
        restart_on="failure",                           # "always" for replicas
        heartbeat_path=state / "job.heartbeat", heartbeat_timeout_s=30, grace_s=10,
        events=log, kind_prefix="train.", subject="job",   # any bastion.events.Emit
    )
    outcome = sup.run()            # blocking; or sup.start() (thread) / sup.tick() (poll)

- ``ProcessSpec``: argv, cwd, env (added to the parent's), name, log_path.
- ``Child``: one process in its own process group (signals reach its helpers); ``poll()``
  (non-blocking), ``wait(timeout)``, ``signal(sig)``, ``terminate(grace_s)``
  (SIGTERM + SIGCONT -> grace -> SIGKILL) and ``Exit`` (code, signal, ``oom_killed`` from
  the cgroup v2 ``oom_kill`` counter, runtime).
- ``Backoff``: jittered exponential, keyword-only, capped. ``RestartBudget``: at most N
  restarts, per sliding window or ever.
- ``Heartbeat``: the child's side; ``Heartbeat.from_env().beat()`` touches the file named
  by ``$BASTION_HEARTBEAT_FILE`` (a file, not a pipe, so the child outlives a supervisor
  restart; see ``_heartbeat``).
- ``Supervisor``: the state machine; ``tick()`` non-blocking (drive it from asyncio),
  ``run()``, ``start()`` (daemon thread), ``stop()``, ``statistics()``. Events:
  ``bastion.event_kinds.CHILD`` (``started``, ``exited``, ``hang``, ...), which the caller
  prefixes (``train.``, ``serve.replica.``), each with ``at_ns`` set to the transition.

Must never: use a shell, restart without a budget, or block inside ``tick()``.
"""

from bastion.supervise._child import Child, ChildStatistics, Exit, ProcessSpec, pid_alive
from bastion.supervise._heartbeat import (
    EXITING,
    HEARTBEAT_ENV,
    Heartbeat,
    heartbeat_age,
    heartbeat_note,
    heartbeat_progress,
)
from bastion.supervise._policy import Backoff, BudgetStatistics, RestartBudget
from bastion.supervise._supervisor import Outcome, State, Supervisor, SupervisorStatistics

__all__ = [
    "EXITING",
    "HEARTBEAT_ENV",
    "Backoff",
    "BudgetStatistics",
    "Child",
    "ChildStatistics",
    "Exit",
    "Heartbeat",
    "Outcome",
    "ProcessSpec",
    "RestartBudget",
    "State",
    "Supervisor",
    "SupervisorStatistics",
    "heartbeat_age",
    "heartbeat_note",
    "heartbeat_progress",
    "pid_alive",
]
