"""Replicas placed on Ray nodes: one Ray actor per replica runs the replica command there.

Owns: ``_ReplicaActor`` (the Ray actor: on its node it starts the same
``bastion.serve.replica`` command the local set runs, bound to the node's IP on a free
port, with ``die_with_parent`` so the replica dies with the actor and its node) and
``RayReplica`` (the replica set's handle for one replica: a thread that places the actor,
tells the set where the replica listens, polls the actor, and on the actor's death or the
replica's exit places a new actor, which Ray schedules on a live node).

Why not a home-made cluster: placement, spreading (``SPREAD``), resource accounting and
node-death detection are Ray's; this module only launches a process in an actor and
watches it.

Must never: route requests (the gateway does; a dead replica fails over through its
retries and outlier ejection), or keep a replica on a node Ray reports lost.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bastion.supervise import Backoff, RestartBudget, SupervisorStatistics

__all__ = ["RayReplica"]

#: seconds one poll of a replica's actor may take before it counts as lost
POLL_TIMEOUT_S = 2.0
#: seconds between polls
POLL_EVERY_S = 0.2
#: seconds an actor may take to be placed and start its replica before it is replaced
PLACE_TIMEOUT_S = 120.0


class _ReplicaActor:
    """On its node: runs one replica process and says how it is doing."""

    def __init__(self) -> None:
        self.child: Any = None

    def start(self, argv: Sequence[str], name: str, log_path: str | None) -> dict[str, Any]:
        import ray

        from bastion.supervise import ProcessSpec
        from bastion.supervise._child import Child

        ip = str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
        with socket.socket() as sock:
            sock.bind((ip, 0))
            port = int(sock.getsockname()[1])
        log: Path | None = None
        if log_path:
            try:  # the gateway's state directory may not exist on another machine
                Path(log_path).parent.mkdir(parents=True, exist_ok=True)
                log = Path(log_path)
            except OSError:
                log = None
        # Started from the actor's own thread with die_with_parent: when the actor's
        # worker dies (its node is lost, or the actor is killed) the replica dies too.
        self.child = Child(
            ProcessSpec(
                argv=[*argv, "--host", ip, "--port", str(port)],
                name=name,
                log_path=log,
                die_with_parent=True,
            )
        )
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "ip": ip,
            "port": port,
            "pid": self.child.pid,
        }

    def poll(self) -> dict[str, Any] | None:
        """None while the replica runs; how it exited once it has."""
        exit_ = self.child.poll() if self.child is not None else None
        return None if exit_ is None else dict(exit_.to_json())

    def stop(self, grace_s: float) -> None:
        if self.child is not None:
            self.child.terminate(grace_s)


_remote_actor: Any = None


def _actor_class() -> Any:
    global _remote_actor
    if _remote_actor is None:
        import ray

        _remote_actor = ray.remote(max_restarts=0, max_task_retries=0)(_ReplicaActor)
    return _remote_actor


def actor_options(resources: Mapping[str, float]) -> dict[str, Any]:
    """Ray's actor options for one replica needing ``resources`` (Ray's names: CPU,
    GPU, memory in bytes, or custom), spread over the nodes that have them."""
    res = dict(resources) if resources else {"CPU": 1.0}
    opts: dict[str, Any] = {
        "num_cpus": res.pop("CPU", 0.0),
        "num_gpus": res.pop("GPU", 0.0),
        # Ray's SPREAD: replicas of one backend land on different nodes when they can
        "scheduling_strategy": "SPREAD",
    }
    if "memory" in res:
        opts["memory"] = res.pop("memory")
    if res:
        opts["resources"] = res
    return opts


Event = Callable[[str, dict[str, Any]], None]


class RayReplica:
    """One replica on a Ray node, with ``Supervisor``'s face for ``ReplicaSet``:
    ``start()``, ``stop(timeout)``, ``statistics()``.

    ``placed(url)`` is called (from its thread) each time a replica is up on a node, with
    where it listens; ``events(kind, data)`` gets the supervisor's kinds (``started``,
    ``exited``, ``restarting``, ``budget_exhausted``, ``stopped``) plus the node. An actor
    that dies (its node was removed or lost), fails a poll for ``POLL_TIMEOUT_S``, or
    whose replica exits is killed and replaced by a new actor, which Ray places on a live
    node; the restarts share a windowed budget as a local replica's do.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        resources: Mapping[str, float],
        log_path: Path | None,
        placed: Callable[[str], None],
        events: Event,
        backoff: Backoff | None = None,
        budget: RestartBudget | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.argv = list(argv)
        self.name = name
        self.resources = dict(resources)
        self.log_path = log_path
        self.placed = placed
        self.events = events
        self.backoff = backoff or Backoff(initial=0.05, factor=2.0, cap=5.0, jitter=0.2)
        self.budget = budget or RestartBudget(max_restarts=20, window_s=600)
        self.rng = rng or random.Random()
        self.state = "idle"
        self.attempts = 0
        self.restarts = 0
        self.reason = ""
        self.node_id = ""
        self.pid: int | None = None
        self.last_exit: dict[str, Any] | None = None
        self._actor: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    #: no child process here (``Supervisor.child``'s place): the replica runs on its node
    child: None = None

    # -- life -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"ray-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            why = self._one_actor()
            if self._stop.is_set():
                break
            if not self.budget.spend():
                with self._lock:
                    self.state, self.reason = "failed", f"restart budget exhausted ({why})"
                self.events("budget_exhausted", {"reason": why})
                return
            delay = self.backoff.delay(self.restarts, self.rng)
            with self._lock:
                self.restarts += 1
                self.state = "backoff"
            self.events("restarting", {"attempt": self.attempts + 1, "delay_s": delay})
            self._stop.wait(delay)
        with self._lock:
            self.state = "stopped"

    def _one_actor(self) -> str:
        """Place one actor, run it until it is lost, and say why it ended."""
        import ray
        from ray.exceptions import GetTimeoutError, RayError

        self.attempts += 1
        actor = _actor_class().options(**actor_options(self.resources)).remote()
        with self._lock:
            self._actor, self.state = actor, "running"
        try:
            info = ray.get(
                actor.start.remote(self.argv, self.name, str(self.log_path or "")),
                timeout=PLACE_TIMEOUT_S,
            )
        except (GetTimeoutError, RayError) as exc:
            return self._lost(actor, f"not placed: {type(exc).__name__}")
        with self._lock:
            self.node_id, self.pid = info["node_id"], info["pid"]
        self.events("started", {"pid": info["pid"], "node": info["node_id"], "ip": info["ip"]})
        self.placed(f"http://{info['ip']}:{info['port']}")
        while not self._stop.wait(POLL_EVERY_S):
            try:
                exit_ = ray.get(actor.poll.remote(), timeout=POLL_TIMEOUT_S)
            except GetTimeoutError:
                return self._lost(actor, f"actor silent for {POLL_TIMEOUT_S:g} s")
            except RayError as exc:  # the actor died: its node was lost, or it crashed
                return self._lost(actor, f"actor died ({type(exc).__name__})")
            if exit_ is not None:
                self.last_exit = exit_
                return self._lost(actor, "replica exited", exit_)
        # stopped: ``stop`` may have looked before this actor was recorded; kill it here too
        ray.kill(actor, no_restart=True)
        return "stopped"

    def _lost(self, actor: Any, why: str, exit_: Mapping[str, Any] | None = None) -> str:
        import ray

        with self._lock:
            node, self._actor, self.pid = self.node_id, None, None
            self.reason = why
        if not self._stop.is_set():
            self.events("exited", {"reason": why, "node": node, **dict(exit_ or {})})
        # no_restart: a dead actor's node may come back; its replica must not
        ray.kill(actor, no_restart=True)
        return why

    def stop(self, timeout: float = 5.0) -> None:
        import ray
        from ray.exceptions import RayError

        self._stop.set()
        with self._lock:
            actor, self.state = self._actor, "stopping"
        if actor is not None:
            with contextlib.suppress(RayError):  # gone already
                ray.get(actor.stop.remote(min(2.0, timeout)), timeout=timeout)
            ray.kill(actor, no_restart=True)
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            self.state = "stopped"

    # -- looking --------------------------------------------------------------------------
    def statistics(self) -> SupervisorStatistics:
        with self._lock:
            return SupervisorStatistics(
                state=self.state,  # type: ignore[arg-type]
                attempts=self.attempts,
                restarts=self.restarts,
                hangs=0,
                warm_starts=0,
                standby_pid=None,
                standby_ready=False,
                budget=self.budget.statistics(),
                child=None,
                last_exit=self.last_exit,
                reason=self.reason,
            )

    def placement(self) -> dict[str, Any]:
        """Where it runs now: the Ray node's id (empty between actors) and the pid there."""
        with self._lock:
            return {"node": self.node_id if self._actor is not None else "", "pid": self.pid}
