"""The control API: JSON over HTTP, served by `bastion up` on ``control.listen``
(127.0.0.1:8790 by default). Its OpenAPI 3 document is at ``/api/openapi.json``.

Owns: the routes (reads of the system, services, backends, jobs, the vault, the map, the
event log, paged and live over SSE, SLOs and drills; actions: restart, scale, drill,
rollout, promote, rollback) and the guards in front of every action, in this order:

1. rate limit: a token bucket per client address (``rate``/s, burst ``burst``), 429 with
   Retry-After, so a guessing client is slowed before its guesses are checked;
2. same origin: a POST whose ``Origin`` is not this API's own, or whose
   ``Sec-Fetch-Site`` says another site, is refused (403) whatever its token; a ``Host``
   that is not this API's address is refused too (DNS rebinding). No cookie is ever read
   or set, so a browser has no ambient credential to forward;
3. bearer token: ``Authorization: Bearer <token>`` checked against the stored hashes
   (``_tokens``); 401 without one or with a wrong one.

Every refusal is a ``control.refused`` event, every action a ``control.action`` event
(with the token's name, never the token). Every error is JSON ``{"error": {"status",
"message"}}``; a client's mistake is a 4xx, never a 500.

Must never: change state on a GET, take a path from a client outside the manifest's
directory, or block its event loop on SQLite or a child process (those go to a thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fnmatch
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bastion import event_kinds as ek
from bastion.aio import LoopThread, serve_app
from bastion.control._openapi import document
from bastion.control._tokens import Tokens
from bastion.errors import (
    BastionError,
    CheckFailed,
    InternalError,
    NotFoundError,
    UnavailableError,
    UsageError,
)
from bastion.events import EventLog

if TYPE_CHECKING:
    from bastion.control._up import Up

__all__ = ["ApiServer", "RateLimiter", "events_page"]

_log = logging.getLogger("bastion.control")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_MAX_LIMIT = 1000
_TOKEN_NAME = web.RequestKey("bastion_token_name", str)
#: the dashboard's static files ship in the package (no build step, no CDN)
_DASHBOARD = Path(__file__).resolve().parent / "dashboard"


async def _no_content(request: web.Request) -> web.Response:
    return web.Response(status=204)


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response(
        {"error": {"status": status, "message": message}}, status=status, headers=headers
    )


class RateLimiter:
    """A token bucket per key: ``rate`` tokens a second, at most ``burst`` saved.
    Pure but for its clock."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0.0 when ``key`` may go now (a token is spent), else seconds until it may."""
        now = self.clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > 10_000:  # many addresses: forget the full buckets
            self._buckets = {k: v for k, v in self._buckets.items() if v[0] < self.burst}
        return (1.0 - tokens) / self.rate


def events_page(
    log: EventLog,
    *,
    kind: str | None = None,
    subject: str | None = None,
    segment: str | None = None,
    before: int | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """One page of the event log (SQLite or PostgreSQL), newest first (by time, then id),
    filtered; ``next`` is the ``before`` of the page after it (None at the end). The order
    is the one the (kind, ts) and (subject, ts) indexes keep, so a page reads ``limit``
    rows, not all that match."""
    rows = log.query(
        kind=kind,
        subject=subject,
        segment=segment,
        before=before,
        newest_first=True,
        limit=limit + 1,
    )
    more = len(rows) > limit
    events = [e.to_dict() for e in rows[:limit]]
    return {"events": events, "next": events[-1]["id"] if more and events else None}


def _events_after(
    log: EventLog, after: int, kind: str | None, subject: str | None, segment: str | None
) -> list[dict[str, Any]]:
    rows = log.query(after_id=after, kind=kind, subject=subject, segment=segment, limit=500)
    return [e.to_dict() for e in rows]


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class _Feed:
    """One reader of the event log for every open stream: it polls for new rows every
    ``poll_s`` and puts each in every subscriber's queue, so 50 open dashboards cost one
    query, not 50. A subscriber whose queue is full gets ``None`` and is dropped (its
    client reconnects with Last-Event-ID and misses nothing)."""

    def __init__(self, read: Callable[[Callable[[EventLog], Any]], Awaitable[Any]]) -> None:
        self.read = read
        self.poll_s = 0.05
        self.subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.last: int | None = None
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, cursor: int) -> asyncio.Queue[dict[str, Any] | None]:
        """A queue of every event after the feed's position. A new feed starts at the
        first subscriber's ``cursor`` (not at the newest row when its task first runs:
        a row committed in between would be in neither the subscriber's backlog read nor
        the feed)."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=10_000)
        if self.last is None:
            self.last = cursor
        self.subscribers.add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self.subscribers.discard(queue)

    def close(self) -> None:
        for queue in list(self.subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while self.subscribers:
            at = self.last or 0

            def newer(log: EventLog, at: int = at) -> list[dict[str, Any]]:
                return _events_after(log, at, None, None, None)

            batch: list[dict[str, Any]] = await self.read(newer)
            for event in batch:
                self.last = event["id"]
                for queue in list(self.subscribers):
                    try:
                        queue.put_nowait(event)
                    except asyncio.QueueFull:
                        self.subscribers.discard(queue)
                        queue.get_nowait()
                        queue.put_nowait(None)
            if not batch:
                await asyncio.sleep(self.poll_s)
        self._task = None


class ApiServer:
    """The API of one ``Up``, on its own event loop in a daemon thread."""

    def __init__(self, up: Up, *, rate: float = 5.0, burst: float = 20.0) -> None:
        self.up = up
        self.manifest_dir = up.path.parent
        self.tokens = Tokens(up.files.tokens)
        self.limiter = RateLimiter(rate, burst)
        self._thread: LoopThread | None = None
        self._runner: web.AppRunner | None = None
        self._session: Any = None
        self.url = ""
        self._hosts: set[str] = set()
        self._log: EventLog | None = None
        self._log_lock = threading.Lock()
        self._stopping = False
        self.feed = _Feed(self._read)

    # -- life cycle ----------------------------------------------------------------------
    def start(self) -> str:
        listen = self.up.manifest.control.listen
        host, _, port = listen.rpartition(":")

        async def setup() -> str:
            import aiohttp

            self._session = aiohttp.ClientSession()
            try:
                self._runner, bound = await serve_app(
                    self._app(), host, int(port), shutdown_timeout=5.0
                )
            except OSError as exc:
                await self._session.close()
                why = exc.strerror.lower() if exc.strerror else str(exc)
                raise UsageError(
                    f"the control API cannot listen on {listen}: {why} (is another `bastion "
                    f"up` or another program on that port?); stop it, or change "
                    f"control.listen in {self.up.path}"
                ) from None
            self._hosts = {f"{host}:{bound}", f"localhost:{bound}", f"127.0.0.1:{bound}"}
            return f"http://{host}:{bound}"

        self._thread = LoopThread("control-api")
        try:
            self.url = self._thread.start(setup()) or ""
        except BaseException:
            self._thread.stop(None, timeout=5)
            raise
        return self.url

    def stop(self) -> None:
        async def cleanup() -> None:
            self.feed.close()
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()

        self._stopping = True
        if self._thread is not None and self._thread.running:
            self._thread.stop(cleanup(), timeout=30)
        with self._log_lock:
            if self._log is not None:
                self._log.close()
                self._log = None

    def _events_log(self) -> EventLog:
        """The API's own connection to the event log (SQLite or PostgreSQL, the one the
        manifest's ``events:`` names), opened on first use, in a worker thread."""
        with self._log_lock:
            if self._log is None:
                self._log = EventLog.in_state_dir(self.up.manifest.state_dir)
            return self._log

    async def _read(self, fn: Callable[[EventLog], Any]) -> Any:
        def run() -> Any:
            return fn(self._events_log())

        return await asyncio.to_thread(run)

    # -- the app -------------------------------------------------------------------------
    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._guard], client_max_size=64 * 1024)
        r = app.router
        r.add_get("/api/openapi.json", self._openapi)
        r.add_get("/api/system", self._system)
        r.add_get("/api/services", self._services)
        r.add_get("/api/services/{name}", self._service)
        r.add_get("/api/services/{name}/series", self._service_series)
        r.add_get("/api/backends", self._backends)
        r.add_get("/api/jobs", self._jobs)
        r.add_get("/api/jobs/{name}/series", self._job_series)
        r.add_get("/api/vault", self._vault)
        r.add_get("/api/map", self._map)
        r.add_get("/api/events", self._events)
        r.add_get("/api/events/stream", self._stream)
        r.add_get("/api/slos", self._slos)
        r.add_get("/api/slos/series", self._slo_series)
        r.add_get("/api/drills", self._drills)
        r.add_get("/api/segments", self._segments)
        r.add_get("/api/reports", self._reports)
        r.add_get("/api/reports/{id}", self._report)
        r.add_post("/api/reports", self._write_report)
        r.add_post("/api/segments/{segment}/quarantine", self._quarantine)
        r.add_post("/api/segments/{segment}/release", self._release)
        r.add_post("/api/services/{name}/restart", self._restart)
        r.add_post("/api/services/{name}/scale", self._scale)
        r.add_post("/api/services/{name}/rollout", self._rollout)
        r.add_post("/api/services/{name}/rollout/promote", self._promote)
        r.add_post("/api/services/{name}/rollout/rollback", self._rollback)
        r.add_post("/api/drills", self._drill)
        r.add_get("/", self._page)
        r.add_get("/static/{file}", self._static)
        r.add_get("/favicon.ico", _no_content)
        app.on_response_prepare.append(self._headers)
        return app

    @staticmethod
    async def _headers(request: web.Request, response: web.StreamResponse) -> None:
        # the page loads only its own files, cannot be framed (clickjacking) or sniffed
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")

    async def _page(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def _static(self, request: web.Request) -> web.Response:
        return self._file(request.match_info["file"])

    @staticmethod
    def _file(name: str) -> web.Response:
        """One of the dashboard's own files (a fixed list: nothing else is reachable)."""
        types = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css"}
        if name not in types:
            raise NotFoundError(f"no dashboard file {name!r}")
        body = (_DASHBOARD / name).read_bytes()
        return web.Response(
            body=body,
            content_type=types[name],
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = {
                404: f"no such route: {request.method} {request.path} (see /api/openapi.json)",
                405: f"{request.method} is not allowed on {request.path}",
                413: "the body is too large (64 KiB at most)",
            }.get(exc.status, exc.reason)
            return _error(exc.status, message)
        except NotFoundError as exc:
            return _error(404, str(exc))
        except UnavailableError as exc:
            return _error(503, str(exc))
        except InternalError:
            _log.exception("internal error in %s %s", request.method, request.path)
            return _error(500, "internal error; the control process's log has the traceback")
        except BastionError as exc:  # 2: bad input; 1: not possible in this state
            return _error(400 if exc.exit_code == 2 else 409, str(exc))
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:
            _log.exception("internal error in %s %s", request.method, request.path)
            return _error(500, "internal error; the control process's log has the traceback")

    def _refuse(self, request: web.Request, status: int, reason: str, message: str) -> web.Response:
        self.up.log.emit(
            ek.CONTROL_REFUSED,
            self.up.manifest.system,
            reason=reason,
            method=request.method,
            path=request.path,
            remote=request.remote or "",
        )
        return _error(status, message)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.host not in self._hosts:
            return _error(
                403, f"Host {request.host!r} is not this API's address ({sorted(self._hosts)[0]})"
            )
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return await handler(request)
        wait = self.limiter.take(request.remote or "")
        if wait > 0:
            self.up.log.emit(
                ek.CONTROL_REFUSED, self.up.manifest.system, reason="rate", path=request.path
            )
            return _error(
                429,
                f"too many state-changing calls; try again in {wait:.1f} s",
                **{"Retry-After": str(max(1, round(wait)))},
            )
        origin = request.headers.get("Origin")
        site = request.headers.get("Sec-Fetch-Site")
        own = {f"http://{h}" for h in self._hosts}
        if (origin is not None and origin not in own) or (
            site is not None and site not in ("same-origin", "none")
        ):
            return self._refuse(
                request,
                403,
                "cross-origin",
                f"cross-origin request refused (Origin {origin!r}, Sec-Fetch-Site {site!r}); "
                "call the API from its own origin or without a browser",
            )
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self._refuse(
                request,
                401,
                "no token",
                "this call changes state and needs 'Authorization: Bearer <token>' "
                "(make one with `bastion token`)",
            )
        name = self.tokens.check(token.strip())
        if name is None:
            return self._refuse(
                request, 401, "bad token", "the token is not valid (make one with `bastion token`)"
            )
        request[_TOKEN_NAME] = name
        return await handler(request)

    def _acted(self, request: web.Request, action: str, target: str, **data: Any) -> None:
        self.up.log.emit(
            ek.CONTROL_ACTION,
            target,
            action=action,
            token=request.get(_TOKEN_NAME, ""),
            **data,
        )

    # -- reads ---------------------------------------------------------------------------
    async def _openapi(self, request: web.Request) -> web.Response:
        return web.json_response(document(self.url))

    async def _system(self, request: web.Request) -> web.Response:
        up = self.up
        m = up.manifest
        return web.json_response(
            {
                "system": m.system,
                "manifest": str(up.path),
                "state_dir": str(m.state_dir),
                "up": {
                    "pid": __import__("os").getpid(),
                    "phase": up.phase,
                    "started_at": up.started_at,
                    "uptime_s": round(time.time() - up.started_at, 3),
                    "generation": up.generation,
                    "last_reload": _jsonable(up.last_reload),
                },
                "children": up.children(),
                "scrub": up.scrub_statistics(),
                "counts": {
                    "services": len(m.services),
                    "jobs": len(m.jobs),
                    "slos": len(m.slos),
                    "components": len(m.components),
                },
            }
        )

    async def _gateway(self, name: str) -> dict[str, Any] | None:
        import aiohttp

        from bastion.serve._auth import client_keys

        svc = self.up.manifest.services[name]
        keys = client_keys(name, svc.auth.keys_env if svc.auth else None)
        try:
            async with self._session.get(
                f"http://{svc.listen}/bastion/status",
                timeout=aiohttp.ClientTimeout(total=1.5),
                headers={"Authorization": f"Bearer {keys[0]}"} if keys else None,
            ) as resp:
                if resp.status != 200:
                    return None
                doc = await resp.json()
                return doc if isinstance(doc, dict) else None
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return None

    async def _one_service(self, name: str) -> dict[str, Any]:
        svc = self.up.manifest.services.get(name)
        if svc is None:
            known = ", ".join(self.up.manifest.services) or "none"
            raise NotFoundError(f"no service {name!r} in the manifest (known: {known})")
        gw = await self._gateway(name)
        child = self.up.children().get(f"serve:{name}")
        return {
            "name": name,
            "listen": svc.listen,
            "segment": svc.segment or "",
            "running": gw is not None,
            "child": child,
            "backends": [
                {"name": b.name, "kind": "local" if b.model is not None else "remote"}
                for b in svc.backends
            ],
            "gateway": gw,
        }

    async def _services(self, request: web.Request) -> web.Response:
        names = list(self.up.manifest.services)
        found = await asyncio.gather(*(self._one_service(n) for n in names))
        return web.json_response({"services": found})

    async def _service(self, request: web.Request) -> web.Response:
        return web.json_response(await self._one_service(request.match_info["name"]))

    async def _backends(self, request: web.Request) -> web.Response:
        names = list(self.up.manifest.services)
        gws = await asyncio.gather(*(self._gateway(n) for n in names))
        out: list[dict[str, Any]] = []
        for name, gw in zip(names, gws, strict=True):
            out.extend(
                {
                    "service": name,
                    "name": u.get("name"),
                    "group": u.get("group"),
                    "url": u.get("url") or "",
                    "tier": u.get("tier"),
                    "arm": u.get("arm"),
                    "kind": u.get("kind", ""),
                    "breaker": (u.get("breaker") or {}).get("state"),
                    "needs_probe": bool(u.get("needs_probe")),
                    "down_reason": u.get("down_reason") or "",
                    "outstanding": u.get("outstanding"),
                    "latency_ewma_ms": u.get("latency_ewma_ms"),
                }
                for u in ((gw or {}).get("pool") or {}).get("upstreams") or []
            )
        return web.json_response({"backends": out})

    async def _jobs(self, request: web.Request) -> web.Response:
        up = self.up

        def training() -> list[dict[str, Any]]:
            from bastion.events import EventLog
            from bastion.train._status import job_status

            out = []
            with EventLog.in_state_dir(up.manifest.state_dir) as log:
                for name in up.manifest.jobs:
                    try:
                        st = dataclasses.asdict(job_status(up.manifest.state_dir, log, name))
                    except BastionError as exc:
                        st = {"error": str(exc)}
                    out.append({"id": name, "kind": "train", "status": _jsonable(st)})
            return out

        jobs = await asyncio.to_thread(training)
        jobs += [{"id": j["id"], "kind": j["kind"], "status": j} for j in up.jobs.values()]
        return web.json_response({"jobs": jobs})

    async def _vault(self, request: web.Request) -> web.Response:
        up = self.up

        def read() -> dict[str, Any]:
            from bastion.vault import Vault

            try:
                vault = Vault.from_manifest(up.manifest)
            except BastionError as exc:
                return {"configured": False, "error": str(exc), "replicas": [], "snapshots": []}
            stats = dataclasses.asdict(vault.statistics())
            snaps = []
            for name in vault.names()[:200]:
                with contextlib.suppress(BastionError):
                    versions = vault.versions(name)
                    if versions:
                        last = versions[-1]
                        snaps.append({"name": name, "versions": len(versions), "latest": last.ref})
            return {
                "configured": True,
                "replicas": _jsonable(stats.get("replicas", {}).get("replicas", [])),
                "statistics": _jsonable(stats),
                "snapshots": snaps,
            }

        doc = await asyncio.to_thread(read)

        def scrub_events(log: EventLog) -> list[dict[str, Any]]:
            events: list[dict[str, Any]] = events_page(log, kind="vault.scrub.*", limit=5)["events"]
            return events

        doc["scrub"] = {
            "schedule": up.scrub_statistics(),
            "recent": await self._read(scrub_events),
        }
        guard = up.children().get("guard")
        doc["guard"] = {"running": bool(guard and guard["pid"]), "child": guard}
        return web.json_response(doc)

    async def _map(self, request: web.Request) -> web.Response:
        from bastion.map import map_manifest, to_json

        report = await asyncio.to_thread(map_manifest, self.up.manifest)
        return web.json_response(_jsonable(to_json(report)))

    @staticmethod
    def _int(request: web.Request, key: str, default: int | None, lo: int, hi: int) -> int | None:
        raw = request.query.get(key)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise UsageError(f"query parameter {key}={raw!r} is not an integer") from None
        if not lo <= value <= hi:
            raise UsageError(f"query parameter {key}={value} is out of range {lo}..{hi}")
        return value

    @staticmethod
    def _text(request: web.Request, key: str) -> str | None:
        raw = request.query.get(key)
        if raw is not None and len(raw) > 200:
            raise UsageError(f"query parameter {key} is too long (200 characters at most)")
        return raw or None

    async def _events(self, request: web.Request) -> web.Response:
        limit = self._int(request, "limit", 100, 1, _MAX_LIMIT)
        before = self._int(request, "before", None, 0, 2**62)
        kind, subject, segment = (self._text(request, k) for k in ("kind", "subject", "segment"))
        page = await self._read(
            lambda log: events_page(
                log,
                kind=kind,
                subject=subject,
                segment=segment,
                before=before,
                limit=limit or 100,
            )
        )
        return web.json_response(page)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: every new matching event as ``id``/``event``/``data``; a
        client that reconnects with ``Last-Event-ID`` (or ``after``) misses none."""
        kind, subject, segment = (self._text(request, k) for k in ("kind", "subject", "segment"))
        last = request.headers.get("Last-Event-ID")
        after = self._int(request, "after", None, 0, 2**62)
        if last is not None:
            try:
                after = int(last)
            except ValueError:
                raise UsageError(f"Last-Event-ID {last!r} is not an event id") from None
        if after is None:
            after = int(await self._read(lambda log: log.last_id()))
        once = request.query.get("once") == "1"
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        # a client that goes away (a tab closed) ends its stream; nothing to tell anyone
        with contextlib.suppress(ConnectionResetError):
            await self._send_events(resp, after, once=once, filters=(kind, subject, segment))
        return resp

    async def _send_events(
        self,
        resp: web.StreamResponse,
        cursor: int,
        *,
        once: bool,
        filters: tuple[str | None, str | None, str | None],
    ) -> None:
        kind, subject, segment = filters
        await resp.write(b": bastion events\n\n")

        def matches(e: dict[str, Any]) -> bool:
            k = e["kind"]
            return (
                (
                    not kind
                    or (
                        fnmatch.fnmatchcase(k, kind) if any(c in kind for c in "*?[") else k == kind
                    )
                )
                and (not subject or e["subject"] == subject)
                and (not segment or e["segment"] == segment)
            )

        async def send(e: dict[str, Any]) -> None:
            body = json.dumps(e, separators=(",", ":"))
            await resp.write(f"id: {e['id']}\nevent: {e['kind']}\ndata: {body}\n\n".encode())

        # subscribe before reading the backlog, so an event written in between is in the
        # queue; ids already sent are skipped
        queue = None if once else self.feed.subscribe(cursor)
        try:
            while True:  # the backlog after the client's cursor, from the log itself
                at = cursor

                def newer(log: EventLog, at: int = at) -> list[dict[str, Any]]:
                    return _events_after(log, at, kind, subject, segment)

                batch: list[dict[str, Any]] = await self._read(newer)
                for event in batch:
                    cursor = event["id"]
                    await send(event)
                if not batch:
                    break
            if queue is None:
                await resp.write_eof()
                return
            while not self._stopping:  # an open dashboard must not hold up `bastion down`
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=15.0)
                except TimeoutError:  # a comment keeps proxies and the client's timeout happy
                    await resp.write(b": keep-alive\n\n")
                    continue
                if item is None:
                    break  # too slow to keep up, or the API stops: it reconnects and resumes
                if item["id"] > cursor and matches(item):
                    cursor = item["id"]
                    await send(item)
        finally:
            if queue is not None:
                self.feed.unsubscribe(queue)

    async def _slos(self, request: web.Request) -> web.Response:
        up = self.up

        def evaluate() -> list[dict[str, Any]]:
            from bastion.slo import Evaluator, SqliteSli, objectives

            objs = objectives(up.manifest)
            if not objs:
                return []
            from bastion.events import EventLog

            reader = SqliteSli.in_state_dir(up.manifest.state_dir)
            log = EventLog.in_state_dir(up.manifest.state_dir)
            try:
                # as `bastion slo status` does: evaluating records any alert transition
                statuses = Evaluator(objs, reader, log, watching_since=0.0).step()
            finally:
                reader.close()
                log.close()
            return [
                {
                    "id": s.objective.id,
                    "service": s.objective.service,
                    "target": s.objective.target,
                    "window": s.objective.window.text,
                    "sli": s.sli,
                    "budget_remaining": s.budget_remaining,
                    "nodata": s.nodata,
                    "burns": [
                        {
                            "pair": b.pair.name,
                            "severity": b.pair.severity,
                            "long_burn": b.long_burn,
                            "short_burn": b.short_burn,
                            "firing": b.firing,
                        }
                        for b in s.burns
                    ],
                    "paging": bool(s.firing("page")),
                }
                for s in statuses
            ]

        return web.json_response({"slos": _jsonable(await asyncio.to_thread(evaluate))})

    async def _drills(self, request: web.Request) -> web.Response:
        up = self.up

        def read() -> list[dict[str, Any]]:
            out = []
            for job in sorted(up.jobs.values(), key=lambda j: j["started_at"], reverse=True):
                doc = None
                journal = Path(job["journal"])
                if job["state"] != "running" and journal.exists():
                    with contextlib.suppress(OSError, ValueError):
                        full = json.loads(journal.read_text())
                        doc = {
                            k: full.get(k)
                            for k in ("status", "deviated", "title", "measurements")
                            if k in full
                        }
                out.append({**job, "result": _jsonable(doc)})
            return out

        return web.json_response({"drills": await asyncio.to_thread(read)})

    # -- chart series, segments, reports ------------------------------------------------
    async def _service_series(self, request: web.Request) -> web.Response:
        from bastion.control._charts import parse_window, service_series

        name = self._service_name(request)
        window = parse_window(request.query.get("window"))
        manifest = self.up.manifest

        def read(log: EventLog) -> dict[str, Any]:
            return service_series(manifest, name, window, lambda **kw: events_page(log, **kw))

        return web.json_response(_jsonable(await self._read(read)))

    async def _slo_series(self, request: web.Request) -> web.Response:
        from bastion.control._charts import parse_window, slo_series

        window = parse_window(request.query.get("window"), "1h")
        doc = await asyncio.to_thread(slo_series, self.up.manifest, window)
        return web.json_response(_jsonable(doc))

    async def _job_series(self, request: web.Request) -> web.Response:
        from bastion.control._charts import job_series

        name = request.match_info["name"]
        if name not in self.up.manifest.jobs:
            known = ", ".join(self.up.manifest.jobs) or "none"
            raise NotFoundError(f"no training job {name!r} in the manifest (known: {known})")
        doc = await self._read(lambda log: job_series(name, lambda **kw: events_page(log, **kw)))
        return web.json_response(_jsonable(doc))

    async def _segments(self, request: web.Request) -> web.Response:
        manifest = self.up.manifest

        def read() -> list[dict[str, Any]]:
            from bastion.segment import SegmentState

            state = SegmentState(manifest.state_dir)
            return [
                {"name": name, "quarantined": state.quarantined(name)} for name in manifest.segments
            ]

        return web.json_response({"segments": await asyncio.to_thread(read)})

    async def _reports(self, request: web.Request) -> web.Response:
        from bastion.control._charts import report_dirs, report_summary

        manifest = self.up.manifest

        def read() -> list[dict[str, Any]]:
            found = report_dirs(manifest)
            out = [report_summary(manifest, rid, d) for rid, d in found.items()]
            out.sort(key=lambda r: str(r.get("generated_at", "")), reverse=True)
            return out

        return web.json_response({"reports": _jsonable(await asyncio.to_thread(read))})

    async def _report(self, request: web.Request) -> web.Response:
        from bastion.control._charts import one_report

        rid = request.match_info["id"]
        return web.json_response(
            _jsonable(await asyncio.to_thread(one_report, self.up.manifest, rid))
        )

    # -- actions -------------------------------------------------------------------------
    def _service_name(self, request: web.Request) -> str:
        name = request.match_info["name"]
        if name not in self.up.manifest.services:
            known = ", ".join(self.up.manifest.services) or "none"
            raise NotFoundError(f"no service {name!r} in the manifest (known: {known})")
        return name

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw:
            return {}
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise UsageError("the body is not JSON") from None
        if not isinstance(obj, dict):
            raise UsageError("the body must be a JSON object")
        return obj

    async def _restart(self, request: web.Request) -> web.Response:
        name = self._service_name(request)
        await asyncio.to_thread(self.up.restart, f"serve:{name}")
        self._acted(request, "restart", name)
        return web.json_response(
            {"accepted": True, "action": "restart", "target": name}, status=202
        )

    async def _forward(
        self, request: web.Request, name: str, path: str, body: dict[str, Any]
    ) -> web.Response:
        import aiohttp

        from bastion.serve._auth import client_keys

        svc = self.up.manifest.services[name]
        keys = client_keys(name, svc.auth.keys_env if svc.auth else None)
        try:
            async with self._session.post(
                f"http://{svc.listen}{path}",
                json=body,
                timeout=aiohttp.ClientTimeout(total=120),
                headers={"Authorization": f"Bearer {keys[0]}"} if keys else None,
            ) as resp:
                text = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError):
            raise UnavailableError(
                f"the gateway of {name!r} at {svc.listen} does not answer; see `bastion status`"
            ) from None
        try:
            doc = json.loads(text)
        except ValueError:
            doc = {"detail": text.decode(errors="replace")[:500]}
        if status >= 400:
            message = doc.get("error", {}).get("message") if isinstance(doc, dict) else None
            return _error(
                status if status < 500 else 502, str(message or doc)[:1000] or "gateway error"
            )
        return web.json_response({"accepted": True, "target": name, "result": doc})

    async def _scale(self, request: web.Request) -> web.Response:
        name = self._service_name(request)
        body = await self._body(request)
        backend, lo, hi = body.get("backend"), body.get("min"), body.get("max")
        if (
            not isinstance(backend, str)
            or type(lo) is not int
            or type(hi) is not int
            or not 0 <= lo <= hi <= 64
        ):
            raise UsageError(
                'give {"backend": "<local backend>", "min": N, "max": M} with 0 <= N <= M <= 64'
            )
        out = await self._forward(
            request, name, "/bastion/scale", {"backend": backend, "min": lo, "max": hi}
        )
        if out.status < 400:
            self._acted(request, "scale", name, backend=backend, min=lo, max=hi)
        return out

    async def _rollout(self, request: web.Request) -> web.Response:
        name = self._service_name(request)
        body = await self._body(request)
        if not isinstance(body.get("candidate"), str):
            raise UsageError('give {"candidate": "model/<name>@<version>", "strategy": ...}')
        for key in ("strategy", "backend"):
            if key in body and not isinstance(body[key], str):
                raise UsageError(f"{key} must be a string")
        out = await self._forward(
            request,
            name,
            "/bastion/rollout",
            {k: body[k] for k in ("candidate", "strategy", "backend") if k in body},
        )
        if out.status < 400:
            self._acted(request, "rollout", name, candidate=body["candidate"])
        return out

    async def _promote(self, request: web.Request) -> web.Response:
        name = self._service_name(request)
        out = await self._forward(request, name, "/bastion/rollout/promote", {})
        if out.status < 400:
            self._acted(request, "promote", name)
        return out

    async def _rollback(self, request: web.Request) -> web.Response:
        name = self._service_name(request)
        out = await self._forward(request, name, "/bastion/rollout/abort", {})
        if out.status < 400:
            self._acted(request, "rollback", name)
        return out

    async def _drill(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        experiment = body.get("experiment")
        if not isinstance(experiment, str) or not experiment or len(experiment) > 500:
            raise UsageError('give {"experiment": "<file under the manifest\'s directory>"}')
        root = self.manifest_dir.resolve()
        try:
            path = (root / experiment).resolve()
        except (OSError, ValueError):  # a NUL, a loop: no such file can be there
            raise NotFoundError(f"no experiment file {experiment!r} under {root}") from None
        if not path.is_relative_to(root):
            raise UsageError(
                f"experiment {experiment!r} is outside the manifest's directory {root}"
            )
        if not path.is_file():
            raise NotFoundError(f"no experiment file {experiment!r} under {root}")
        job = await asyncio.to_thread(self.up.start_drill, path)
        self._acted(request, "drill", job["id"], experiment=str(path))
        return web.json_response({"accepted": True, "job": job}, status=202)

    def _segment_name(self, request: web.Request) -> str:
        name = request.match_info["segment"]
        if name not in self.up.manifest.segments:
            known = ", ".join(self.up.manifest.segments) or "none"
            raise NotFoundError(f"no segment {name!r} in the manifest (known: {known})")
        return name

    async def _quarantine(self, request: web.Request) -> web.Response:
        from bastion.segment import quarantine

        name = self._segment_name(request)
        body = await self._body(request)
        if set(body) - {"stop_jobs"} or not isinstance(body.get("stop_jobs", True), bool):
            raise UsageError('give {} or {"stop_jobs": false}')
        report = await asyncio.to_thread(
            quarantine, self.up.manifest, name, stop_jobs=body.get("stop_jobs", True)
        )
        self._acted(request, "quarantine", name)
        return web.json_response(
            {
                "accepted": True,
                "action": "quarantine",
                "target": name,
                "result": _jsonable(dataclasses.asdict(report)),
            }
        )

    async def _release(self, request: web.Request) -> web.Response:
        from bastion.segment import release

        name = self._segment_name(request)
        body = await self._body(request)
        if set(body) - {"force"} or not isinstance(body.get("force", False), bool):
            raise UsageError('give {} or {"force": true} (release without the check)')
        report = await asyncio.to_thread(
            release, self.up.manifest, name, force=body.get("force", False)
        )
        self._acted(request, "release", name, force=body.get("force", False))
        return web.json_response(
            {
                "accepted": True,
                "action": "release",
                "target": name,
                "result": _jsonable(dataclasses.asdict(report)),
            }
        )

    async def _write_report(self, request: web.Request) -> web.Response:
        """Build and sign a readiness report into ``<state_dir>/reports/<UTC time>/``."""
        from bastion.control._charts import new_report_id, report_summary

        body = await self._body(request)
        if body:
            raise UsageError("give no body (or {}): the report covers the whole system")
        manifest = self.up.manifest

        def write() -> dict[str, Any]:
            from bastion.report import build_report, write_report
            from bastion.train._store import checkpoint_keys
            from bastion.vault._keys import Signer

            key = checkpoint_keys(manifest)[0]
            if not key.exists():
                raise CheckFailed(
                    f"the vault's signing key {key} does not exist: a report is signed with "
                    f"it (run `bastion init {manifest.base_dir}`)"
                )
            rid = new_report_id()
            out = manifest.state_dir / "reports" / rid
            write_report(build_report(manifest), out, Signer(key))
            return report_summary(manifest, rid, out)

        summary = await asyncio.to_thread(write)
        self._acted(request, "report", summary["id"])
        return web.json_response({"accepted": True, "report": _jsonable(summary)}, status=201)
