"""Running gateways and backend processes: in a thread (tests, demo, benchmark) or in the
foreground (``bastion serve``).

Owns: ``GatewayThread`` (a gateway on its own event loop in a daemon thread, started and
stopped from synchronous code), ``spawn_server`` (start a ``PORT <n>``-printing server
process and wait for its port), ``specs_for`` (a manifest service's remote backends
as upstream specs), and ``status`` (ask running gateways for their ``GatewayStatistics``
over HTTP, read back into the typed record).

Must never: bind anything but the address it was given; leave a process behind on error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from bastion.aio import LoopThread
from bastion.errors import NotFoundError, UnavailableError, UsageError
from bastion.manifest import Manifest, Service
from bastion.serve._auth import client_keys
from bastion.serve._early import Early, replica_log_dir
from bastion.serve._early import addresses as _addresses
from bastion.serve._early import pin_models as _pin_models
from bastion.serve.gateway import Gateway, GatewayStatistics
from bastion.serve.pool import UpstreamSpec

__all__ = [
    "GatewayDown",
    "GatewayThread",
    "reload_plan",
    "run_services",
    "spawn_server",
    "specs_for",
    "status",
    "stop_server",
    "unset_api_keys",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GatewayDown:
    """A service whose gateway did not answer ``/bastion/status``.

    Attributes:
        service: the service.
        listen: where its gateway should be listening.
        reason: what went wrong (refused, timed out ...).
    """

    service: str
    listen: str
    reason: str


def specs_for(service: Service) -> list[UpstreamSpec]:
    """Upstream specs for the service's remote (``url:``) backends."""
    specs = []
    for backend in service.backends:
        if backend.url is None:
            continue
        key = os.environ.get(backend.api_key_env) if backend.api_key_env else None
        specs.append(
            UpstreamSpec(
                name=backend.name,
                url=backend.url,
                group=backend.name,
                tier=backend.tier_index,
                model_name=backend.model_name,
                api_key=key,
                kind="remote",
                extra={"segment": backend.segment or service.segment or ""},
            )
        )
    return specs


class GatewayThread:
    """Run ``gateway`` on a private event loop in a daemon thread."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._thread = LoopThread("gateway")
        self.loop = self._thread.loop

    def __enter__(self) -> GatewayThread:
        self._thread.start(self.gateway.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        return self._thread.call(coro, timeout)

    def run(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run a plain function on the gateway's loop (the pool is not thread-safe)."""

        async def wrapper() -> T:
            return fn()

        result: T = self.call(wrapper(), timeout)
        return result

    @property
    def url(self) -> str:
        return self.gateway.url

    def stop(self) -> None:
        if self._thread.running:
            self._thread.stop(self.gateway.close(), timeout=30.0)


def spawn_server(
    argv: Sequence[str], *, timeout_s: float = 30.0, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], int]:
    """Start a server process that prints ``PORT <n>`` once listening; return it and n."""
    proc = subprocess.Popen(
        [sys.executable, *argv] if argv[0] == "-m" else list(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("PORT "):
            return proc, int(line.split()[1])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    proc.wait()
    raise UnavailableError(
        f"server {' '.join(argv)} did not report its port within {timeout_s:g} s "
        f"(last line: {line.strip()!r}); run it by hand to see why"
    )


def stop_server(proc: subprocess.Popen[str]) -> None:
    """Kill a process from ``spawn_server`` (SIGCONT first, in case a test stopped it)."""
    import signal

    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
            proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def unset_api_keys(manifest: Manifest, names: Sequence[str] | None = None) -> list[str]:
    """One line for each remote backend whose ``api_key_env`` names an environment
    variable that is unset or empty (the backend would be called without its key, and
    answer 401): the service, the backend, the variable and the fix. Never the value."""
    out = []
    for name, service in manifest.services.items():
        if names is not None and name not in names:
            continue
        for backend in service.backends:
            env = backend.api_key_env
            if env and not os.environ.get(env):
                out.append(
                    f"services.{name}.backends.{backend.name}: api_key_env {env} is not set "
                    f"in this environment, so {backend.url or 'the backend'} is called "
                    f"without a key; export {env} before `bastion serve`"
                )
    return out


def reload_plan(old: Service, new: Service) -> tuple[str, str]:
    """How a running gateway takes ``new`` in place of ``old``: ``("same", "")``,
    ``("in_place", "")`` (only backends were added or removed, remote backends changed,
    or replica bounds moved: the gateway applies it without dropping a request), or
    ``("restart", why)`` (anything else, e.g. its address or policy: a new gateway
    process is needed). Pure; ``bastion up`` and ``bastion serve`` both ask it."""
    if old == new:
        return "same", ""
    rest: dict[str, Any] = {"backends": [], "depends_on": []}
    if old.model_copy(update=rest) != new.model_copy(update=rest):
        changed = sorted(
            k
            for k in type(old).model_fields
            if k not in rest and getattr(old, k) != getattr(new, k)
        )
        return "restart", f"changed {', '.join(changed)} (not only its backends)"
    before = {b.name: b for b in old.backends if b.model is not None}
    for b in new.backends:
        was = before.get(b.name)
        if was is None:
            continue
        if b.model_copy(update={"replicas": was.replicas}) != was:
            return "restart", (
                f"local backend {b.name!r} changed more than its replica bounds (a new model "
                "version goes into service through `bastion rollout`)"
            )
    return "in_place", ""


async def _apply_service(
    gw: Gateway,
    old: Service,
    new: Service,
    sets: dict[str, Any],
    make_set: Callable[[Any], Any],
) -> dict[str, Any]:
    """Apply an ``in_place`` plan to one running gateway, never dropping a request: new
    remote backends join once their probe passes (at most 5 s), then the old ones leave
    (a request in flight on one finishes there); new local backends start their replica
    set, removed ones drain first; moved bounds go to the autoscaler."""
    want = {spec.name: spec for spec in specs_for(new)}
    have = {n: up.spec for n, up in gw.pool.upstreams.items() if up.spec.kind == "remote"}
    added = [n for n, spec in want.items() if have.get(n) != spec]
    removed = [n for n in have if n not in want]
    joining = []
    for n in added:
        if n in have:
            gw.remove_upstream(n)  # same name, new address: it cannot be in the pool twice
        joining.append(gw.add_upstream(want[n], needs_probe=True))
    deadline = asyncio.get_running_loop().time() + 5.0
    while any(u.needs_probe for u in joining) and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110 - the pool has no event to wait on; a probe clears the flag
        await asyncio.sleep(0.05)
    for n in removed:
        gw.remove_upstream(n)
    local = {b.name: b for b in new.backends if b.model is not None}
    bounds = {}
    for n, backend in local.items():
        rs = sets.get(n)
        if rs is None:
            sets[n] = rs = make_set(backend)
            await rs.start()
            added.append(n)
        elif rs.backend.replicas != backend.replicas:
            rs.backend = backend
            rs.autoscaler.min_replicas = backend.replicas.min
            rs.autoscaler.max_replicas = backend.replicas.max
            rs.autoscaler.last_change = -1e9  # a new bound applies at the next decision
            bounds[n] = {"min": backend.replicas.min, "max": backend.replicas.max}
    for n in [n for n in sets if n not in local]:
        rs = sets.pop(n)
        await rs.drain(5.0)
        await rs.close()
        removed.append(n)
    return {"added": added, "removed": removed, "bounds": bounds}


async def run_services(
    manifest: Manifest,
    names: Sequence[str],
    *,
    stop: asyncio.Event,
    serving: Callable[[str, str], None] | None = None,
    reload: asyncio.Event | None = None,
    reloaded: Callable[[dict[str, Any]], None] | None = None,
    listen: str | None = None,
    early: Early | None = None,
) -> None:
    """Run the named services' gateways (with their local replica sets) until ``stop``;
    ``serving(service, url)`` is called once each gateway is listening.

    ``listen``: run one service's gateway at this address, one of its ``gateways``
    (active-active: each gateway enforces its share of the budgets and counts its own
    spend; only the first, at ``listen`` in the manifest, drives rollouts and evaluates
    SLOs, so neither is done twice).

    Each time ``reload`` is set the manifest file is read again and each gateway takes
    its service's changes in place (``reload_plan``); ``reloaded(result)`` is told what
    happened (``ok``, ``digest`` of the file read, ``error``, per-service changes). A
    manifest that does not load, or a change that needs a restart, changes nothing.

    An address that cannot be bound (in use, not this host's, a privileged port) is a
    ``UsageError`` naming the service and the address, raised before any replica starts.

    ``early``: what ``_early.start_early`` did before this module imported (the pinned
    models, replicas already starting); their replica sets take those replicas over.
    """
    from bastion.events import EventWriter
    from bastion.rollout import RolloutController
    from bastion.serve._control import ServiceControl
    from bastion.serve._cost import Ledger
    from bastion.serve._golden import GoldenProber
    from bastion.serve._spend import SpendWriter, spend_since
    from bastion.serve.replicas import ReplicaSet

    if manifest.path is None:
        raise UsageError("bastion serve needs a manifest loaded from a file")
    unknown = [n for n in names if n not in manifest.services]
    if unknown:
        raise UsageError(
            f"bastion serve: no service {', '.join(map(repr, unknown))} in {manifest.path}; "
            f"its services: {', '.join(manifest.services) or 'none'}"
        )
    addresses = _addresses(manifest, names, listen)
    gateways: list[Gateway] = []
    # each service's replica sets by backend (a rollout's promotion swaps one in)
    sets: dict[str, dict[str, ReplicaSet]] = {}
    probers: list[GoldenProber] = []
    rollouts: list[RolloutController] = []
    sink = EventWriter.in_state_dir(manifest.state_dir)
    sli = _SliRecording(manifest, [n for n in names if addresses[n][1]])
    # A replica set serves one snapshot: model/digits@latest is resolved to its version
    # once, here, so a replica restarted later serves what its peers serve, not a newer
    # commit (a new version goes into service through `bastion rollout`).
    pinned = (
        early.pinned if early is not None else await asyncio.to_thread(_pin_models, manifest, names)
    )
    from bastion.segment._state import SegmentState

    seg_state = SegmentState(manifest.state_dir).read()["segments"]
    quarantined = {name for name, rec in seg_state.items() if rec.get("quarantined")}
    spend: SpendWriter | None = None
    try:
        for name in names:
            service = manifest.services.get(name)
            if service is None:
                known = ", ".join(manifest.services) or "none"
                raise NotFoundError(f"service {name!r} is not in {manifest.path} (known: {known})")
            address, primary = addresses[name]
            host, _, port = address.rpartition(":")
            log_dir = replica_log_dir(manifest, name, address, primary)
            ledger = Ledger.for_service(name, service)
            if ledger is not None:
                # spend rows go beside the event log, from their own writer thread
                spend = spend or SpendWriter.in_state_dir(
                    manifest.state_dir, gateways={n: a for n, (a, _) in addresses.items()}
                )
                ledger.sink = spend.put
                mine = None
                if len(service.gateway_addresses) > 1:  # count own spend against own share
                    mine = (address, "") if primary else (address,)
                ledger.seed(
                    spend_since(manifest.state_dir, name, ledger.longest_window_s, gateways=mine)
                )
            gw = Gateway(
                name,
                service.policy,
                segment=service.segment or "",
                events=sink,
                host=host,
                port=int(port),
                api_keys=client_keys(name, service.auth.keys_env if service.auth else None),
                cost=ledger,
            )
            gw.backend_segments = {
                b.name: b.segment or service.segment or "" for b in service.backends
            }
            # a segment quarantined before this gateway started stays out of it
            gw.quarantined = set(quarantined)
            for spec in specs_for(service):
                gw.add_upstream(spec)
            gw.sli = sli.recorder(name)
            sets[name] = {
                backend.name: ReplicaSet(
                    gw,
                    backend,
                    manifest_path=manifest.path,
                    log_dir=log_dir,
                    model=pinned[str(backend.model)],
                    early=early.take(name, backend.name) if early is not None else (),
                )
                for backend in service.backends
                if backend.model is not None
            }
            gateways.append(gw)
            gw.app.router.add_post("/bastion/scale", _scale_route(gw, sets[name]))
            prober = GoldenProber.from_manifest(gw, manifest)
            if prober is not None:
                probers.append(prober)
            if primary:  # one rollout record per service: only its first gateway drives it
                rollouts.append(RolloutController(gw, manifest, sets[name], prober=prober))
            ServiceControl(gw, sets[name])
        for service_sets in sets.values():  # a Ray cluster out of reach: exit 2 before serving
            for rs in service_sets.values():
                await rs.connect()
        for gw in gateways:
            try:
                await gw.start()
            except OSError as exc:
                where, primary = addresses[gw.service]
                why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
                field = "listen" if primary and listen is None else "gateways"
                raise UsageError(
                    f"service {gw.service!r} cannot listen on {where}: {why} (is another "
                    "program, or another `bastion serve`, on that port?); stop it, or change "
                    f"services.{gw.service}.{field} in {manifest.path}"
                ) from None
            if serving is not None:
                serving(gw.service, gw.url)
        for service_sets in sets.values():
            for rs in service_sets.values():
                await rs.start()
        for prober in probers:
            await prober.start()
        for rollout in rollouts:
            await rollout.resume()
        sli.start()
        while not stop.is_set():
            waits = [asyncio.ensure_future(stop.wait())]
            if reload is not None:
                waits.append(asyncio.ensure_future(reload.wait()))
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            if reload is not None and reload.is_set() and not stop.is_set():
                reload.clear()
                result = await _reload(manifest, gateways, sets, sink, pinned)
                if result.get("ok"):
                    manifest = result.pop("manifest")
                    # changed `slos:` take effect here, with no gateway restart
                    result["slos"] = await asyncio.to_thread(sli.retarget, manifest)
                if reloaded is not None:
                    reloaded(result)
    finally:
        await sli.stop_flushing()
        for rollout in rollouts:
            await rollout.close()
        for prober in probers:
            await prober.close()
        for service_sets in sets.values():
            for rs in service_sets.values():
                await rs.close()
        for gw in gateways:
            await gw.close()
        if spend is not None:
            spend.close()
        sli.close()
        sink.close()


async def _reload(
    manifest: Manifest,
    gateways: list[Gateway],
    sets: dict[str, dict[str, Any]],
    sink: Any,
    pinned: dict[str, str],
) -> dict[str, Any]:
    """Read the manifest file again and apply it to every running gateway, or nothing."""
    import hashlib

    from bastion import event_kinds as ek
    from bastion.errors import BastionError
    from bastion.manifest import load
    from bastion.serve.replicas import ReplicaSet

    assert manifest.path is not None
    path = manifest.path
    try:
        raw = await asyncio.to_thread(path.read_bytes)
        new = await asyncio.to_thread(load, path)
    except (BastionError, OSError) as exc:
        return {"ok": False, "error": str(exc), "digest": ""}
    digest = hashlib.sha256(raw).hexdigest()
    plans = {}
    for gw in gateways:
        old_s, new_s = manifest.services[gw.service], new.services.get(gw.service)
        if new_s is None:
            return {"ok": False, "digest": digest, "error": f"service {gw.service!r} was removed"}
        plan, why = reload_plan(old_s, new_s)
        if plan == "restart":
            return {"ok": False, "digest": digest, "error": f"service {gw.service!r}: {why}"}
        plans[gw.service] = plan
    fresh = await asyncio.to_thread(_pin_models, new, list(plans))
    changes = {}
    for gw in gateways:
        if plans[gw.service] == "same":
            continue
        assert new.path is not None

        def make_set(backend: Any, gw: Gateway = gw) -> ReplicaSet:
            ref = fresh.get(str(backend.model), pinned.get(str(backend.model)))
            return ReplicaSet(
                gw,
                backend,
                manifest_path=path,
                log_dir=manifest.state_dir / "serve" / gw.service,
                model=ref,
            )

        change = await _apply_service(
            gw, manifest.services[gw.service], new.services[gw.service], sets[gw.service], make_set
        )
        changes[gw.service] = change
        sink.emit(ek.SERVE_RELOADED, gw.service, **change)
    return {"ok": True, "digest": digest, "changes": changes, "manifest": new}


def _scale_route(gw: Gateway, sets: dict[str, Any]) -> Callable[[Any], Any]:
    """``POST /bastion/scale {"backend", "min", "max"}``: new replica bounds for one local
    backend until the next reload or restart (the API's ``scale`` action)."""
    from aiohttp import web

    from bastion import event_kinds as ek

    async def scale(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            name, lo, hi = body["backend"], int(body["min"]), int(body["max"])
        except (ValueError, KeyError, TypeError):
            return web.json_response(
                {"error": {"message": 'give {"backend": NAME, "min": N, "max": M}'}}, status=400
            )
        rs = sets.get(name)
        if rs is None:
            return web.json_response(
                {"error": {"message": f"no local backend {name!r} (known: {', '.join(sets)})"}},
                status=404,
            )
        if not 0 <= lo <= hi <= 64:
            return web.json_response(
                {"error": {"message": "need 0 <= min <= max <= 64"}}, status=400
            )
        rs.autoscaler.min_replicas, rs.autoscaler.max_replicas = lo, hi
        rs.autoscaler.last_change = -1e9
        gw.record(ek.SERVE_SCALED, backend=name, min=lo, max=hi, replicas=len(rs.replicas))
        return web.json_response({"backend": name, "min": lo, "max": hi})

    return scale


class _SliRecording:
    """The SLI side of ``bastion serve``: one recorder per gateway, their writer thread,
    a task that flushes each complete second, and the SLO evaluation loop (bastion.slo)."""

    def __init__(self, manifest: Manifest, names: Sequence[str]) -> None:
        from bastion.slo import SliWriter, objectives

        self.manifest = manifest
        self.names = list(names)
        self.objectives = [o for o in objectives(manifest) if o.service in names]
        self.writer = SliWriter.in_state_dir(manifest.state_dir)
        self.recorders: list[Any] = []
        self._flusher: asyncio.Task[None] | None = None
        self._loop: Any = None

    def recorder(self, service: str) -> Any:
        from bastion.serve.gateway import _POST_ROUTES
        from bastion.slo import SliRecorder

        rec = SliRecorder(service, self.writer, routes=_POST_ROUTES)
        self.recorders.append(rec)
        return rec

    def start(self) -> None:
        from bastion.events import EventLog
        from bastion.slo import Evaluator, SloLoop, SqliteSli

        self._flusher = asyncio.create_task(self._flush_every_second())
        if self.objectives:
            evaluator = Evaluator(
                self.objectives,
                SqliteSli.in_state_dir(self.manifest.state_dir),
                EventLog.in_state_dir(self.manifest.state_dir),
            )
            self._loop = SloLoop(evaluator).start()

    def retarget(self, manifest: Manifest) -> list[str]:
        """Evaluate the objectives of ``manifest`` (a reload's) from the next step on;
        their ids. The evaluator keeps its open alerts (an alert of a removed objective
        stays as recorded; nothing resolves it)."""
        from bastion.events import EventLog
        from bastion.slo import Evaluator, SloLoop, SqliteSli, objectives

        self.manifest = manifest
        self.objectives = [o for o in objectives(manifest) if o.service in self.names]
        if self._loop is not None:
            self._loop.evaluator.objectives = list(self.objectives)  # one assignment: atomic
        elif self.objectives and self._flusher is not None:
            evaluator = Evaluator(
                self.objectives,
                SqliteSli.in_state_dir(manifest.state_dir),
                EventLog.in_state_dir(manifest.state_dir),
            )
            self._loop = SloLoop(evaluator).start()
        return [o.id for o in self.objectives]

    async def _flush_every_second(self) -> None:
        import time

        while True:
            await asyncio.sleep(1.0 - time.time() % 1.0 + 0.01)
            now = int(time.time())
            for rec in self.recorders:
                rec.flush(before=now)

    async def stop_flushing(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop.evaluator.reader.close()
            self._loop.evaluator.log.close()
        for rec in self.recorders:
            rec.flush()
        self.writer.close()


def status(manifest: Manifest, names: Sequence[str]) -> list[GatewayStatistics | GatewayDown]:
    """Ask each named service's running gateway for its statistics (``/bastion/status``)."""
    import urllib.request

    import pydantic

    reader = pydantic.TypeAdapter(GatewayStatistics)
    out: list[GatewayStatistics | GatewayDown] = []
    for name in names:
        service = manifest.services.get(name)
        if service is None:
            raise NotFoundError(f"service {name!r} is not in the manifest")
        url = f"http://{service.listen}/bastion/status"
        keys = client_keys(name, service.auth.keys_env if service.auth else None)
        asking = urllib.request.Request(
            url, headers={"Authorization": f"Bearer {keys[0]}"} if keys else {}
        )
        try:
            with urllib.request.urlopen(asking, timeout=2) as resp:  # noqa: S310 - http:// built above
                body = resp.read()
        except OSError as exc:
            # URLError wraps the socket's error: its strerror ("Connection refused") is
            # what a person reads, not "<urlopen error [Errno 111] ...>"
            cause = getattr(exc, "reason", exc)
            why = cause.strerror if isinstance(cause, OSError) and cause.strerror else cause
            out.append(GatewayDown(name, service.listen, str(why).lower()))
            continue
        try:
            out.append(reader.validate_json(body))
        except pydantic.ValidationError as exc:
            raise UnavailableError(
                f"{url} answered, but not with a Bastion gateway's status ({exc.error_count()} "
                "problem(s)); is another program, or another Bastion version, on that port?"
            ) from None
    return out
