"""Local replica sets: spawn, self-heal and autoscale ``bastion.serve.replica`` processes.

Owns: ``Autoscaler`` (pure: min/max replicas, scale on in-flight concurrency plus queue
depth per replica, with a cool-down so it does not flap) and ``ReplicaSet`` (one manifest
backend with ``model:``; each replica is a ``bastion.supervise.Supervisor`` with
``restart_on="always"`` and a windowed restart budget). A replica that exits is marked
``needs_probe`` at once (no traffic), restarted by the supervisor on the same port, and
rejoins only after its ``/health`` probe passes. ``start_replicas`` starts a set's first
replicas before there is a gateway (``bastion serve`` does, so they load their model while
the gateway's modules import); the set takes them over (``early=``), their events held
until then. A backend with ``placement: {backend:
ray}`` runs each replica in a Ray actor on a cluster node instead (``bastion.serve._ray``,
same interface): a lost actor or node is replaced on a live node, and the replica rejoins
at its new address, again only after its probe.

Must never: supervise processes by itself (that is ``bastion.supervise``'s job), or let
a restarted replica take traffic before its probe passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion import event_kinds as ek
from bastion.events import Relay
from bastion.manifest import Backend
from bastion.resilience import Clock, monotonic
from bastion.supervise import (
    Backoff,
    ProcessSpec,
    RestartBudget,
    Supervisor,
    SupervisorStatistics,
)

if TYPE_CHECKING:
    from bastion.serve._ray import RayReplica

    # not at run time: start_replicas runs before the gateway's modules (aiohttp) import
    from bastion.serve.gateway import Gateway
    from bastion.serve.pool import UpstreamSpec

__all__ = [
    "Autoscaler",
    "AutoscalerStatistics",
    "EarlyReplica",
    "ReplicaSet",
    "ReplicaSetStatistics",
    "start_replicas",
]

_REPLICA = "serve.replica."


@dataclass(frozen=True, slots=True)
class AutoscalerStatistics:
    """An autoscaler's bounds and how often it changed its mind.

    Attributes:
        min_replicas: the floor (healing below it never waits for a cool-down).
        max_replicas: the ceiling.
        target_per_replica: in-flight plus queued requests one replica should carry.
        decisions: times it changed the desired replica count.
    """

    min_replicas: int
    max_replicas: int
    target_per_replica: float
    decisions: int


@dataclass(frozen=True, slots=True)
class ReplicaSetStatistics:
    """One ``model:`` backend's replicas.

    Attributes:
        backend: the manifest backend.
        replicas: each replica's supervisor statistics, by upstream name.
        autoscaler: its autoscaler.
    """

    backend: str
    replicas: Mapping[str, SupervisorStatistics]
    autoscaler: AutoscalerStatistics


@dataclass
class Autoscaler:
    """Desired replicas from load: ceil(mean concurrency / target_per_replica), where mean
    concurrency is in-flight plus queued requests averaged over the decision interval (a
    point sample of short requests is mostly 0 and would make the set flap).

    Up quickly (a burst needs capacity now; ``up_cooldown_s``), down slowly and one at a
    time (``cooldown_s``), as Kubernetes' HPA does with its scale-down stabilization.
    """

    min_replicas: int
    max_replicas: int
    target_per_replica: float = 8.0
    cooldown_s: float = 30.0
    up_cooldown_s: float = 2.0
    clock: Clock = monotonic
    last_change: float = field(default=-1e9)
    decisions: int = 0

    def decide(self, current: int, concurrency: float) -> int:
        want = math.ceil(concurrency / self.target_per_replica - 1e-9) if concurrency > 0 else 0
        want = max(self.min_replicas, min(self.max_replicas, want))
        if current < self.min_replicas:
            return self.min_replicas  # healing below the floor never waits for a cool-down
        if want == current:
            return current
        since = self.clock() - self.last_change
        if since < (self.up_cooldown_s if want > current else self.cooldown_s):
            return current
        target = want if want > current else current - 1
        self.last_change = self.clock()
        self.decisions += 1
        return target

    def statistics(self) -> AutoscalerStatistics:
        return AutoscalerStatistics(
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            target_per_replica=self.target_per_replica,
            decisions=self.decisions,
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _replica_argv(model: str, manifest_path: Path) -> list[str]:
    return [sys.executable, "-m", "bastion.serve.replica", model, "--manifest", str(manifest_path)]


class _Held:
    """One replica's supervisor events: held until its set records them (a replica
    started before its gateway existed), then handed on as they come, in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._held: list[tuple[str, int | None, dict[str, Any]]] = []
        self._to: Callable[[str, str, int | None, dict[str, Any]], None] | None = None

    def __call__(self, kind: str, _subject: str, at_ns: int | None, data: dict[str, Any]) -> None:
        with self._lock:
            if self._to is None:
                self._held.append((kind, at_ns, data))
                return
            self._to(self.name, kind, at_ns, data)

    def attach(self, to: Callable[[str, str, int | None, dict[str, Any]], None]) -> None:
        with self._lock:
            for kind, at_ns, data in self._held:
                to(self.name, kind, at_ns, data)
            self._held.clear()
            self._to = to


def _launch(argv: list[str], name: str, log_dir: Path, events: _Held) -> tuple[Supervisor, int]:
    """Start one local replica process on a free port, under its own supervisor."""
    port = _free_port()
    spec = ProcessSpec(
        argv=[*argv, "--port", str(port)],
        name=name,
        log_path=log_dir / f"{name}.log",
        die_with_parent=True,  # a SIGKILLed `bastion serve` leaves no replica behind
    )
    sup = Supervisor(
        spec,
        backoff=Backoff(initial=0.05, factor=2.0, cap=5.0, jitter=0.2),
        budget=RestartBudget(max_restarts=20, window_s=600),
        restart_on="always",
        grace_s=2.0,
        events=Relay(events),
    )
    sup.start()
    return sup, port


@dataclass
class EarlyReplica:
    """A replica started by ``start_replicas``, before its set: a ``ReplicaSet`` given it
    (``early=``) supervises it as one of its own."""

    name: str
    supervisor: Supervisor
    port: int
    events: _Held


def start_replicas(
    backend: Backend, *, manifest_path: Path, log_dir: Path, model: str
) -> list[EarlyReplica]:
    """Start a local backend's ``min`` replicas now, named as its ``ReplicaSet`` names
    them; a Ray placement's are placed by the set itself (nothing here)."""
    if backend.placement.backend == "ray":
        return []
    log_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(backend.replicas.min):
        name = f"{backend.name}-{i}"
        events = _Held(name)
        sup, port = _launch(_replica_argv(model, manifest_path), name, log_dir, events)
        out.append(EarlyReplica(name, sup, port, events))
    return out


class ReplicaSet:
    def __init__(
        self,
        gateway: Gateway,
        backend: Backend,
        *,
        manifest_path: Path,
        log_dir: Path,
        autoscaler: Autoscaler | None = None,
        model: str | None = None,
        arm: str = "stable",
        prefix: str | None = None,
        url_for: Callable[[str, int], str] | None = None,
        early: Sequence[EarlyReplica] = (),
    ) -> None:
        """``model``: the snapshot to serve instead of the backend's own (a rollout's
        candidate, pinned to its version); ``arm``: the pool arm its replicas join;
        ``prefix``: their names' start (default: the backend's name); ``url_for(name,
        port)``: where the gateway reaches a replica (default ``http://127.0.0.1:port``;
        a drill may put a fault proxy in between); ``early``: replicas ``start_replicas``
        started for it, which ``start`` takes over in place of starting its first ones."""
        assert backend.model is not None
        self.gateway = gateway
        self.backend = backend
        self.model = model or str(backend.model)
        self.arm = arm
        self.prefix = prefix or backend.name
        self.url_for = url_for or (lambda _name, port: f"http://127.0.0.1:{port}")
        self.manifest_path = manifest_path
        self.log_dir = log_dir
        self.autoscaler = autoscaler or Autoscaler(backend.replicas.min, backend.replicas.max)
        self.replicas: dict[str, Supervisor | RayReplica] = {}
        self._early = list(early)
        self._next = len(self._early)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def _argv(self) -> list[str]:
        return _replica_argv(self.model, self.manifest_path)

    def _spec(self, name: str, url: str) -> UpstreamSpec:
        from bastion.serve.pool import UpstreamSpec

        return UpstreamSpec(
            name=name,
            url=url,
            group=self.backend.name,
            tier=self.backend.tier_index,
            kind="local",
            probe_path="/health",
            model_name=self.backend.model_name,
            arm=self.arm,
        )

    def _spawn(self) -> None:
        name = f"{self.prefix}-{self._next}"
        self._next += 1
        if self.backend.placement.backend == "ray":
            self._spawn_on_ray(name)
            return
        events = _Held(name)
        events.attach(self._on_event)
        sup, port = _launch(self._argv(), name, self.log_dir, events)
        self._join(EarlyReplica(name, sup, port, events))

    def _join(self, replica: EarlyReplica) -> None:
        """Route to a started replica once its probe passes; record its events."""
        name = replica.name
        self.gateway.add_upstream(
            self._spec(name, self.url_for(name, replica.port)), needs_probe=True
        )
        self.replicas[name] = replica.supervisor
        replica.events.attach(self._on_event)

    def _spawn_on_ray(self, name: str) -> None:
        """One replica in a Ray actor (``bastion.serve._ray``): it joins the pool once its
        actor is placed and says where it listens, and again at its new address each
        time a lost actor (a lost node) is replaced."""
        from bastion.serve._ray import RayReplica

        def placed(url: str) -> None:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._placed, name, url)

        self.replicas[name] = handle = RayReplica(
            self._argv(),
            name=name,
            resources=self.backend.placement.resources,
            log_path=self.log_dir / f"{name}.log",
            placed=placed,
            events=lambda kind, data: self._on_event(name, kind, None, data),
        )
        handle.start()

    def _placed(self, name: str, url: str) -> None:
        """On the loop: (re)join replica ``name`` at ``url``, probed before any traffic."""
        if name not in self.replicas:
            return  # scaled in or closed meanwhile
        pool = self.gateway.pool
        old = pool.upstreams.get(name)
        arm = old.arm if old is not None else self.arm
        if old is not None:
            if old.spec.url == url:
                return
            self.gateway.remove_upstream(name)
        self.gateway.add_upstream(replace(self._spec(name, url), arm=arm), needs_probe=True)

    def _on_event(self, name: str, kind: str, at_ns: int | None, data: dict[str, Any]) -> None:
        """From a supervisor thread: hop onto the gateway's loop before touching the pool."""
        # The supervisor's kinds are the suffixes of bastion.event_kinds.CHILD; a replica's
        # are those under serve.replica.
        self.gateway.record(
            _REPLICA + kind,
            at_ns=at_ns,
            replica=name,
            **{k: v for k, v in data.items() if k != "argv"},
        )
        if kind in ("exited", "hang") and self._loop is not None:
            self._loop.call_soon_threadsafe(self._mark_down, name, kind)

    def _mark_down(self, name: str, why: str) -> None:
        up = self.gateway.pool.upstreams.get(name)
        if up is not None:
            self.gateway.pool.mark_down(up, f"replica {why}")

    async def connect(self) -> None:
        """Join the Ray cluster of a Ray placement (nothing for a local one): a cluster
        that cannot be reached is a ``UsageError`` naming the manifest place. ``start``
        does it too; ``bastion serve`` calls it before its gateways listen."""
        placement = self.backend.placement
        if placement.backend == "ray":
            from bastion.supervise._ray import join

            assert placement.address is not None
            await asyncio.to_thread(
                join,
                placement.address,
                where=f"services.{self.gateway.service}.backends.{self.backend.name}.placement",
            )

    async def start(self) -> None:
        """Start ``min`` replicas (joining a Ray placement's cluster first)."""
        self._loop = asyncio.get_running_loop()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        await self.connect()
        early, self._early = self._early, []
        for replica in early:
            self._join(replica)
        for _ in range(self.autoscaler.min_replicas - len(early)):
            self._spawn()
        # The start is a change: the set does not shrink before a full cool-down of load.
        self.autoscaler.last_change = self.autoscaler.clock()
        self._task = asyncio.create_task(self._scale_loop())

    async def _scale_loop(self) -> None:
        samples: list[float] = []
        while True:
            # Sample concurrency every 100 ms, decide once a second on the mean.
            for _ in range(10):
                await asyncio.sleep(0.1)
                ups = self.gateway.pool.upstreams
                samples.append(
                    sum(ups[n].outstanding for n in self.replicas if n in ups)
                    + len(self.gateway.admission)
                )
            concurrency = sum(samples) / len(samples)
            samples.clear()
            want = self.autoscaler.decide(len(self.replicas), concurrency)
            while len(self.replicas) < want:
                self._spawn()
                self.gateway.record(
                    ek.SERVE_SCALED,
                    backend=self.backend.name,
                    replicas=len(self.replicas),
                )
            if len(self.replicas) > want:
                # Out of routing first, then stopped once its requests in flight end: a
                # scale-in fails no client request.
                name = list(self.replicas)[-1]
                await self._drain_out([name], self.gateway.timeout_s)
                sup = self.replicas.pop(name)
                self.gateway.remove_upstream(name)
                await asyncio.to_thread(sup.stop, timeout=5)
                self.gateway.record(
                    ek.SERVE_SCALED,
                    backend=self.backend.name,
                    replicas=len(self.replicas),
                )

    @property
    def scaling(self) -> bool:
        """Whether its autoscaler runs: from ``start`` until ``drain`` or ``close``."""
        return self._task is not None

    def ready(self) -> int:
        """How many of its replicas passed their health probe and take requests."""
        ups = self.gateway.pool.upstreams
        return sum(
            1 for n in self.replicas if n in ups and not ups[n].needs_probe and not ups[n].wrong
        )

    def held_wrong(self) -> str:
        """Why golden probes hold one of its replicas out for wrong answers, or ""."""
        from bastion.serve.pool import REJOINING

        ups = self.gateway.pool.upstreams
        for n in self.replicas:
            up = ups.get(n)
            if up is not None and up.wrong and up.wrong != REJOINING:
                return f"{n}: {up.wrong}"
        return ""

    def set_arm(self, arm: str) -> None:
        """Move every replica to ``arm`` (a promoted candidate's set becomes stable)."""
        self.arm = arm
        for name in self.replicas:
            if name in self.gateway.pool.upstreams:
                self.gateway.pool.set_arm(name, arm)

    async def drain(self, timeout_s: float) -> None:
        """Take its replicas out of routing, then wait (at most ``timeout_s``) for the
        requests in flight on them to end, so stopping them fails no client request. The
        set stops scaling first: a replica started while it drains would take traffic
        (under the set's arm) just before ``close`` stops it."""
        await self._stop_scaling()
        self.arm = "draining"
        await self._drain_out(list(self.replicas), timeout_s)

    async def _drain_out(self, names: list[str], timeout_s: float) -> None:
        """Move replicas ``names`` to the ``draining`` arm (which no request uses), then
        wait, at most ``timeout_s``, until none has a request in flight."""
        pool = self.gateway.pool
        for name in names:
            if name in pool.upstreams:
                pool.set_arm(name, "draining")
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            ups = pool.upstreams
            if not any(ups[n].outstanding for n in names if n in ups):
                return
            await asyncio.sleep(0.01)

    async def _stop_scaling(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def close(self) -> None:
        await self._stop_scaling()
        for replica in self._early:  # started for it, never taken over (start failed)
            await asyncio.to_thread(replica.supervisor.stop, timeout=5)
        self._early = []
        for sup in self.replicas.values():
            await asyncio.to_thread(sup.stop, timeout=5)
        for name in self.replicas:
            self.gateway.remove_upstream(name)

    def statistics(self) -> ReplicaSetStatistics:
        return ReplicaSetStatistics(
            backend=self.backend.name,
            replicas={n: s.statistics() for n, s in self.replicas.items()},
            autoscaler=self.autoscaler.statistics(),
        )
