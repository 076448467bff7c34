"""The inference gateway: one aiohttp server per service, in front of a pool of backends.

Owns: the HTTP routes (OpenAI-compatible ``/v1/chat/completions`` with SSE streaming,
``/v1/completions``, ``/v1/embeddings``, ``/v1/models``; the generic JSON
``/v1/predict``; ``/metrics``, ``/healthz``, ``/bastion/status``), and the per-request
path: admission, routing, retries under the budget, hedging, deadlines, stream failover.

What is retried, and why that is safe: every proxied route is an inference call with no
side effect on the backend (a prediction, a completion, an embedding), so sending it
again cannot double-apply anything. A non-streaming answer is buffered whole before the
client sees a byte, so any failed attempt (refused, timeout, 5xx, 429, malformed JSON)
may be retried on a *different* backend, at most three attempts, while the request's
deadline has time left and, unless the failure was a refused or reset connection (a
"requeue": the backend is gone, not overloaded), while the retry budget has a token.
4xx answers other than 429 are the client's fault and are passed through, never retried.
A stream is retried only before its first byte reaches the client (refused, error
status, no first chunk within the TTFT timeout). Once bytes have been sent, a cut or
stalled stream cannot be resumed: the OpenAI protocol has no offset to continue from, and
a second backend would generate different tokens. The gateway then ends the stream with
an SSE ``error`` event (which the ``openai`` client raises as ``APIError``), never with a
silent truncation. Streams are not hedged (two live generations would both bill).

Deadlines: ``x-bastion-deadline-ms`` from the client (or the policy's ``timeout_ms``,
whichever is shorter) bounds the whole request; each attempt gets what is left and
passes it on to the backend in the same header.

Must never: write the event log per request (rare state changes go to ``EventSink``);
re-encode a body that needs no model-name translation; answer 500 for a client's bad
input; forward the client's ``Authorization`` to a vendor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from bastion.manifest import GatewayPolicy
from bastion.resilience import HedgeTimer, RetryBudget, monotonic, parse_hedge
from bastion.serve._events import EventSink
from bastion.serve.admission import PRIORITIES, Admission, QueueFull
from bastion.serve.metrics import BackendMetrics, GatewayMetrics
from bastion.serve.pool import Pool, Upstream, UpstreamSpec

__all__ = ["BACKEND_HEADER", "DEADLINE_HEADER", "PRIORITY_HEADER", "Gateway"]

DEADLINE_HEADER = "x-bastion-deadline-ms"
BACKEND_HEADER = "x-bastion-backend"
PRIORITY_HEADER = "x-bastion-priority"
MAX_BODY = 4 * 1024 * 1024
_JSON = "application/json"
_POST_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/predict")
_DONE = b"data: [DONE]"


class _Fail(Exception):
    __slots__ = ("hard", "kind", "retry_after", "status")

    def __init__(
        self, kind: str, *, hard: bool = False, status: int = 502, retry_after: float | None = None
    ) -> None:
        super().__init__(kind)
        self.kind = kind
        self.hard = hard
        self.status = status
        self.retry_after = retry_after


@dataclass(slots=True)
class _Race:
    hedge: asyncio.Task[_Answer] | None = None
    winner: _Answer | None = None
    done: bool = False


@dataclass(slots=True)
class _Answer:
    status: int
    body: bytes
    content_type: str
    backend: str


def _error(
    status: int, message: str, kind: str, *, retry_after: float | None = None
) -> web.Response:
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after else None
    body = json.dumps({"error": {"message": message, "type": kind, "code": status}})
    return web.Response(status=status, text=body, content_type=_JSON, headers=headers)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), 300.0)
    except ValueError:
        return None  # an HTTP-date: rare from model vendors; fall back to our default


_FULL_CHECK = 64 * 1024


def _looks_like_json(data: bytes) -> bool:
    """Is a backend's JSON answer whole? Small bodies are parsed (a few microseconds);
    big ones (embeddings) only checked for a closing bracket, which is what a truncated
    or cut body lacks, so a large answer is not decoded just to be passed on."""
    if len(data) <= _FULL_CHECK:
        try:
            json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return False
        return True
    end = data.rstrip()[-1:]
    return data.lstrip()[:1] in (b"{", b"[") and end in (b"}", b"]")


class Gateway:
    """One service's gateway. ``await start()``, then ``await close()``."""

    def __init__(
        self,
        service: str,
        policy: GatewayPolicy,
        *,
        segment: str = "",
        events: EventSink | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        probe_interval_s: float = 1.0,
        probe_timeout_s: float = 0.5,
        hold_429_s: float = 1.0,
    ) -> None:
        self.service = service
        self.policy = policy
        self.host = host
        self.port = port
        self.events = events or EventSink(None, segment=segment)
        self.metrics = GatewayMetrics(service)
        self.pool = Pool(service, max_ejected=policy.max_ejected, emit=self.events.emit)
        self.budget = RetryBudget(ratio=policy.retry_budget)
        quantile, fixed = parse_hedge(policy.hedge)
        self.hedge = HedgeTimer(quantile=quantile, fixed_s=fixed)
        self.admission = Admission(policy.max_queue)
        self.pool.on_recover = self.admission.wake_all
        self.timeout_s = policy.timeout_ms / 1000.0
        self.ttft_s = (policy.ttft_timeout_ms or policy.timeout_ms) / 1000.0
        self.stall_s = (policy.stall_timeout_ms or policy.timeout_ms) / 1000.0
        self.queue_timeout_s = policy.queue_timeout_ms / 1000.0
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.hold_429_s = hold_429_s
        self.max_attempts = 3
        self.requeues = 0
        self._used_groups: set[str] = set()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_probe: dict[str, float] = {}
        self._episode_start: float | None = None
        self._episode_shed = 0
        self._last_shed = 0.0
        self._shed = self.metrics.shed
        self._responses = self.metrics.responses
        self.metrics.watch(self._state_rows)
        self.app = self._build_app()

    # -- membership ---------------------------------------------------------------------
    def add_upstream(self, spec: UpstreamSpec, *, needs_probe: bool = False) -> Upstream:
        up = Upstream(spec, BackendMetrics(), self.pool.clock)
        up.needs_probe = needs_probe
        self.pool.add(up)
        return up

    def remove_upstream(self, name: str) -> None:
        self.pool.remove(name)

    def _state_rows(self) -> Iterable[tuple[str, BackendMetrics, dict[str, Any]]]:
        for up in list(self.pool.upstreams.values()):
            yield up.name, up.metrics, up.statistics()

    # -- lifecycle ----------------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        for route in _POST_ROUTES:
            app.router.add_post(route, self._proxy)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/bastion/status", self._status)
        return app

    async def start(self) -> tuple[str, int]:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
        )
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        server = site._server
        if server is not None and server.sockets:  # type: ignore[attr-defined]
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._tasks.append(asyncio.create_task(self._probe_loop()))
        self.events.emit(
            "serve.started",
            self.service,
            listen=f"{self.host}:{self.port}",
            backends=[u.name for u in self.pool.upstreams.values()],
        )
        return self.host, self.port

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.events.emit("serve.stopped", self.service, **self.budget.statistics())

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- small routes -------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": self.service, "object": "model", "created": 0, "owned_by": "bastion"}]
        return web.json_response({"object": "list", "data": data})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), content_type="text/plain")

    async def _healthz(self, request: web.Request) -> web.Response:
        ok = any(u.breaker.available() and not u.needs_probe for u in self.pool.upstreams.values())
        return web.json_response({"ok": ok}, status=200 if ok else 503)

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.statistics())

    def statistics(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "listen": f"{self.host}:{self.port}",
            "pool": self.pool.statistics(),
            "retry_budget": self.budget.statistics(),
            "requeues": self.requeues,
            "hedge": self.hedge.statistics(),
            "admission": self.admission.statistics(),
        }

    # -- the request path -----------------------------------------------------------------
    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self._responses["4xx"].inc()
            return _error(
                413,
                f"request body over {MAX_BODY} bytes; send a smaller one",
                "invalid_request_error",
            )
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            self._responses["4xx"].inc()
            return _error(
                400,
                f"{request.path}: the body is not valid JSON; send a JSON object",
                "invalid_request_error",
            )
        if not isinstance(obj, dict):
            self._responses["4xx"].inc()
            return _error(
                400, f"{request.path}: the body must be a JSON object", "invalid_request_error"
            )
        headers = request.headers
        timeout_s = self.timeout_s
        raw = headers.get(DEADLINE_HEADER)
        if raw is not None:
            try:
                asked = float(raw) / 1000.0
            except ValueError:
                asked = -1.0
            if not 0 < asked < 1e6:
                self._responses["4xx"].inc()
                return _error(
                    400,
                    f"{DEADLINE_HEADER}: {raw[:40]!r} is not a positive number of milliseconds",
                    "invalid_request_error",
                )
            timeout_s = min(timeout_s, asked)
        prio_name = headers.get(PRIORITY_HEADER)
        priority = 1 if prio_name is None else PRIORITIES.get(prio_name.lower(), 1)
        deadline = monotonic() + timeout_s
        self.budget.deposit()
        if obj.get("stream") is True:
            return await self._stream(request, body, obj, priority, deadline)
        answer = await self._unary(request.path, body, obj, priority, deadline)
        if isinstance(answer, web.Response):
            return answer
        code = answer.status
        self._responses["2xx" if code < 400 else ("4xx" if code < 500 else "5xx")].inc()
        return web.Response(
            status=code,
            body=answer.body,
            content_type=answer.content_type,
            headers={BACKEND_HEADER: answer.backend},
        )

    def _body_for(self, up: Upstream, body: bytes, obj: dict[str, Any]) -> bytes:
        name = up.spec.model_name
        if name is None or obj.get("model") == name:
            return body
        return json.dumps({**obj, "model": name}).encode()

    def _headers_for(self, up: Upstream, deadline: float) -> dict[str, str]:
        remaining_ms = max(1, int((deadline - monotonic()) * 1000))
        headers = {"Content-Type": _JSON, DEADLINE_HEADER: str(remaining_ms)}
        if up.auth_header is not None:
            headers["Authorization"] = up.auth_header
        return headers

    def _first_use(self, up: Upstream) -> None:
        up.used = True
        group = up.spec.group or up.name
        if group not in self._used_groups:
            self._used_groups.add(group)
            self.events.emit("dep.used", self.service, target=group, url=up.spec.url, via="backend")

    async def _attempt(self, up: Upstream, path: str, body: bytes, deadline: float) -> _Answer:
        """One non-streaming attempt. Returns an answer to pass on, or raises _Fail."""
        if not up.used:
            self._first_use(up)
        up.limit.inflight += 1  # the caller checked routable(); single-threaded, so no race
        up.outstanding += 1
        up.metrics.requests.inc()
        up.last_sent = start = monotonic()
        try:
            return await self._exchange(up, path, body, deadline, start)
        finally:
            up.outstanding -= 1
            if self.admission.waiting:
                self.admission.wake()

    async def _exchange(
        self,
        up: Upstream,
        path: str,
        body: bytes,
        deadline: float,
        start: float,
    ) -> _Answer:
        timeout = deadline - start
        session = self._session
        assert session is not None
        try:
            async with session.post(
                up.spec.url + path,
                data=body,
                headers=self._headers_for(up, deadline),
                timeout=aiohttp.ClientTimeout(total=timeout if timeout > 0 else 0.001),
            ) as resp:
                data = await resp.read()
                status = resp.status
                ctype = resp.content_type
                retry_after = resp.headers.get("Retry-After") if status == 429 else None
        except TimeoutError:
            up.limit.release(None, dropped=True)
            self.pool.fail(up, hard=True, reason="timeout")
            raise _Fail("timeout", hard=True, status=504) from None
        except (aiohttp.ClientError, OSError) as exc:
            up.limit.release(None, dropped=True)
            self.pool.fail(up, hard=True, reason=f"connection: {type(exc).__name__}")
            raise _Fail("connection", hard=True) from None
        except asyncio.CancelledError:
            # Lost a hedge race (or the client left): what we know is that it was at
            # least this slow, so P2C should see that.
            up.limit.release(None)
            up.latency.update(monotonic() - start)
            raise
        elapsed = monotonic() - start
        if status < 400:
            if ctype == _JSON and not _looks_like_json(data):
                up.limit.release(None)
                self.pool.fail(up, hard=False, reason="malformed JSON body")
                raise _Fail("malformed", status=502)
            up.limit.release(elapsed)
            up.latency.update(elapsed)
            up.metrics.latency.observe(elapsed)
            self.hedge.observe(elapsed)
            if up.breaker.state != "closed" or up.breaker.failures_in_row:
                self.pool.succeed(up)
            return _Answer(status, data, ctype or _JSON, up.name)
        up.limit.release(None)
        if status == 429:
            after = _retry_after(retry_after)
            why = "rate limited (429)" + ("" if after is not None else ", no Retry-After")
            self.pool.hold(up, after if after is not None else self.hold_429_s, why)
            raise _Fail("rate_limited", status=429, retry_after=after or self.hold_429_s)
        if status >= 500 or status == 408:
            self.pool.fail(up, hard=False, reason=f"status {status}")
            raise _Fail(f"status {status}", status=502)
        # The client's own error: pass it through, the backend is fine.
        if up.breaker.failures_in_row:
            self.pool.succeed(up)
        return _Answer(status, data, ctype or _JSON, up.name)

    async def _unary(
        self, path: str, body: bytes, obj: dict[str, Any], priority: int, deadline: float
    ) -> _Answer | web.Response:
        tried: list[Upstream] = []
        last: _Fail | None = None
        hedge_left = True  # at most one hedge per request
        pool = self.pool
        while True:
            remaining = deadline - monotonic()
            if remaining <= 0:
                break
            up = pool.pick(tuple(tried)) if tried else pool.pick()
            if up is None:
                if len(tried) >= len(pool.upstreams):
                    break
                shed = await self._wait_capacity(priority, remaining)
                if shed is not None:
                    return shed
                continue
            if tried:
                if len(tried) >= self.max_attempts or not self._may_retry(last):
                    break
                up.metrics.retries.inc()
            tried.append(up)
            data = self._body_for(up, body, obj)
            delay = self.hedge.delay() if hedge_left else None
            try:
                if delay is None or delay >= remaining:
                    return await self._attempt(up, path, data, deadline)
                hedge_left = False
                return await self._hedged(
                    up,
                    path=path,
                    data=data,
                    body=body,
                    obj=obj,
                    deadline=deadline,
                    delay=delay,
                    tried=tried,
                )
            except _Fail as fail:
                last = fail
        return self._give_up(last, tuple(tried))

    async def _hedged(
        self,
        up: Upstream,
        *,
        path: str,
        data: bytes,
        body: bytes,
        obj: dict[str, Any],
        deadline: float,
        delay: float,
        tried: list[Upstream],
    ) -> _Answer:
        """Run the attempt on ``up`` inline; if it has not answered after ``delay``, send a
        hedge to another backend. The first success wins and the loser is cancelled.

        Why inline plus a timer, not two tasks and ``asyncio.wait``: 95% of requests
        never hedge, and for them a timer costs a heap push, while a task and a wait cost
        two extra event-loop turns (measured: ~60 us CPU and ~0.07 ms latency each). When
        the hedge wins first, this handler is cancelled out of its own await and
        ``uncancel()``-ed, which is how asyncio lets a task recover from a cancellation
        it asked for."""
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        assert me is not None
        race = _Race()

        def fire() -> None:
            other = self.pool.pick(tuple(tried))
            if other is None or race.done or not self.budget.try_withdraw():
                return
            other.metrics.hedges.inc()
            tried.append(other)
            task = loop.create_task(
                self._attempt(other, path, self._body_for(other, body, obj), deadline)
            )
            race.hedge = task

            def on_done(t: asyncio.Task[_Answer]) -> None:
                if race.done or t.cancelled() or t.exception() is not None:
                    return
                race.done = True
                race.winner = t.result()
                me.cancel()

            task.add_done_callback(on_done)

        timer = loop.call_later(delay, fire)
        try:
            answer = await self._attempt(up, path, data, deadline)
        except asyncio.CancelledError:
            timer.cancel()
            if race.winner is not None:
                me.uncancel()
                return race.winner
            if race.hedge is not None:
                race.hedge.cancel()
            raise
        except _Fail:
            timer.cancel()
            hedge = race.hedge
            if hedge is None:
                raise
            # From here we read the hedge ourselves, so its callback must not cancel us.
            # (Done callbacks run a loop turn after completion: a hedge that succeeded in
            # this same turn has not cancelled us yet, and now will not.)
            race.done = True
            if not hedge.done():
                return await hedge
            if hedge.cancelled() or hedge.exception() is not None:
                raise
            return hedge.result()
        race.done = True
        timer.cancel()
        if race.hedge is not None:
            race.hedge.cancel()
        return answer

    def _may_retry(self, last: _Fail | None) -> bool:
        """A connection failure (refused, reset: the backend process is gone) is requeued
        without a budget token, as Finagle's requeues are: it put no load on a backend, so
        retrying it cannot feed a retry storm, and a crashed replica's in-flight requests
        must all move. Timeouts, 5xx, 429 and bad bodies may mean overload: those spend
        the budget. Either way a request makes at most ``max_attempts`` attempts."""
        if last is not None and last.kind == "connection":
            self.requeues += 1
            return True
        return self.budget.try_withdraw()

    def _give_up(self, last: _Fail | None, tried: tuple[Upstream, ...]) -> web.Response:
        names = ", ".join(u.name for u in tried) or "none"
        self._responses["5xx" if last is None or last.status != 429 else "4xx"].inc()
        if last is None:
            return _error(
                504,
                f"service {self.service}: deadline passed (tried: {names})",
                "timeout",
                retry_after=1,
            )
        if last.status == 429:
            return _error(
                429,
                f"service {self.service}: every backend is rate limited (tried: {names})",
                "rate_limited",
                retry_after=last.retry_after,
            )
        status = 504 if last.kind == "timeout" else 502
        return _error(
            status,
            f"service {self.service}: every attempt failed, last: {last.kind} (tried: {names})",
            "upstream_error",
            retry_after=1,
        )

    async def _wait_capacity(self, priority: int, remaining: float) -> web.Response | None:
        """Queue for capacity. Returns a shed response, or None to try routing again."""
        saturated = any(
            u.breaker.available() and not u.needs_probe for u in self.pool.upstreams.values()
        )
        try:
            woken = await self.admission.wait(priority, min(self.queue_timeout_s, remaining))
        except QueueFull:
            woken = False
        if woken:
            return None
        reason = "saturated" if saturated else "no_backend"
        self._shed[reason].inc()
        self._note_shed(reason)
        self._responses["4xx" if saturated else "5xx"].inc()
        if saturated:
            return _error(
                429,
                f"service {self.service} is over capacity; retry later",
                "overloaded",
                retry_after=1,
            )
        soonest = min(
            (u.breaker.open_until - monotonic() for u in self.pool.upstreams.values()),
            default=1.0,
        )
        return _error(
            503,
            f"service {self.service}: no healthy backend; retry later",
            "unavailable",
            retry_after=max(1.0, soonest),
        )

    def _note_shed(self, reason: str) -> None:
        """Overload is reported as an episode (started/ended), never per shed request."""
        now = monotonic()
        self._last_shed = now
        self._episode_shed += 1
        if self._episode_start is None:
            self._episode_start = now
            self.events.emit(
                "serve.overload.started", self.service, reason=reason, queue=self.admission.waiting
            )

    def _check_overload_over(self) -> None:
        if self._episode_start is not None and monotonic() - self._last_shed > 1.0:
            self.events.emit(
                "serve.overload.ended",
                self.service,
                shed=self._episode_shed,
                duration_s=round(self._last_shed - self._episode_start, 3),
                queue_peak=self.admission.peak,
            )
            self._episode_start = None
            self._episode_shed = 0

    # -- streams ----------------------------------------------------------------------------
    async def _stream(
        self,
        request: web.Request,
        body: bytes,
        obj: dict[str, Any],
        priority: int,
        deadline: float,
    ) -> web.StreamResponse:
        """Fail over before the first byte; after it, end a cut/stalled stream with an
        SSE error event (see the module docstring for why it cannot resume)."""
        path = request.path
        tried: tuple[Upstream, ...] = ()
        last: _Fail | None = None
        pool = self.pool
        while True:
            remaining = deadline - monotonic()
            if remaining <= 0:
                return self._give_up(last, tried)
            up = pool.pick(tried)
            if up is None:
                if len(tried) >= len(pool.upstreams):
                    return self._give_up(last, tried)
                shed = await self._wait_capacity(priority, remaining)
                if shed is not None:
                    return shed
                continue
            if tried:
                if len(tried) >= self.max_attempts or not self._may_retry(last):
                    return self._give_up(last, tried)
                up.metrics.retries.inc()
            tried += (up,)
            if not up.used:
                self._first_use(up)
            up.limit.inflight += 1
            up.outstanding += 1
            up.metrics.requests.inc()
            up.last_sent = start = monotonic()
            resp: aiohttp.ClientResponse | web.Response | None = None
            try:
                try:
                    async with asyncio.timeout(min(self.ttft_s, remaining)):
                        resp = await self._open_stream(up, path, body, obj, deadline)
                        if isinstance(resp, web.Response):
                            up.limit.release(None)
                            self._responses["4xx"].inc()
                            return resp
                        first = await self._first_chunk(resp)
                except TimeoutError:
                    up.limit.release(None, dropped=True)
                    self.pool.fail(up, hard=True, reason="no first token within TTFT timeout")
                    last = _Fail("ttft timeout", hard=True, status=504)
                    continue
                except (aiohttp.ClientError, OSError) as exc:
                    up.limit.release(None, dropped=True)
                    self.pool.fail(up, hard=True, reason=f"connection: {type(exc).__name__}")
                    last = _Fail("connection", hard=True)
                    continue
                except _Fail as fail:
                    up.limit.release(None)
                    if fail.status == 429:
                        self.pool.hold(
                            up, fail.retry_after or self.hold_429_s, "rate limited (429)"
                        )
                    else:
                        self.pool.fail(up, hard=False, reason=fail.kind)
                    last = fail
                    continue
                ttft = monotonic() - start
                up.latency.update(ttft)
                assert isinstance(resp, aiohttp.ClientResponse)
                return await self._relay(request, up, resp, first, ttft)
            finally:
                up.outstanding -= 1
                if isinstance(resp, aiohttp.ClientResponse):
                    resp.release()
                if self.admission.waiting:
                    self.admission.wake()

    async def _open_stream(
        self, up: Upstream, path: str, body: bytes, obj: dict[str, Any], deadline: float
    ) -> aiohttp.ClientResponse | web.Response:
        """POST a streaming request; a client error comes back as a Response to pass on."""
        session = self._session
        assert session is not None
        resp = await session.post(
            up.spec.url + path,
            data=self._body_for(up, body, obj),
            headers=self._headers_for(up, deadline),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        if resp.status == 200:
            return resp
        data = await resp.read()
        resp.release()
        if resp.status < 500 and resp.status not in (408, 429):
            return web.Response(status=resp.status, body=data, content_type=resp.content_type)
        raise _Fail(
            f"status {resp.status}",
            status=resp.status,
            retry_after=_retry_after(resp.headers.get("Retry-After")),
        )

    @staticmethod
    async def _first_chunk(resp: aiohttp.ClientResponse) -> bytes:
        first = await resp.content.readany()
        if not first:
            raise _Fail("empty stream")
        return first

    async def _relay(
        self,
        request: web.Request,
        up: Upstream,
        resp: aiohttp.ClientResponse,
        first: bytes,
        ttft: float,
    ) -> web.StreamResponse:
        out = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                BACKEND_HEADER: up.name,
            },
        )
        await out.prepare(request)
        sent = len(first)
        tail = first[-64:]
        problem = ""
        try:
            await out.write(first)
            while True:
                async with asyncio.timeout(self.stall_s):
                    chunk = await resp.content.readany()
                if not chunk:
                    break
                await out.write(chunk)
                sent += len(chunk)
                tail = (tail + chunk)[-64:]
        except TimeoutError:
            problem = f"stalled for {self.stall_s * 1000:.0f} ms"
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            problem = f"cut ({type(exc).__name__})"
        except (ConnectionResetError, RuntimeError):
            up.limit.release(None)
            return out  # the client left; nothing more to say to it
        if not problem and _DONE not in tail:
            problem = "ended without [DONE]"
        if not problem:
            up.limit.release(ttft)
            up.metrics.latency.observe(ttft)
            if up.breaker.state != "closed" or up.breaker.failures_in_row:
                self.pool.succeed(up)
            self._responses["2xx"].inc()
            await out.write_eof()
            return out
        up.limit.release(None, dropped=True)
        self.pool.fail(up, hard=problem.startswith("stalled"), reason=f"stream {problem}")
        self._responses["5xx"].inc()
        message = (
            f"backend {up.name} stream {problem} after {sent} bytes; a started stream cannot "
            "resume on another backend (retry the request)"
        )
        event = json.dumps(
            {"error": {"message": message, "type": "stream_interrupted", "code": 502}}
        )
        try:
            await out.write(f"data: {event}\n\n".encode())
            await out.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return out

    # -- active health ----------------------------------------------------------------------
    async def _probe_loop(self) -> None:
        """Cheap probes (GET /health or /v1/models: never a paid model call). Upstreams that
        are out or waiting to join are probed every 100 ms, healthy ones every interval."""
        while True:
            self._check_overload_over()
            now = monotonic()
            due = []
            for up in list(self.pool.upstreams.values()):
                fast = up.needs_probe or up.breaker.state != "closed"
                last = self._last_probe.get(up.name, 0.0)
                if now - last >= (0.1 if fast else self.probe_interval_s):
                    self._last_probe[up.name] = now
                    due.append(up)
            if due:
                await asyncio.gather(*(self._probe(up) for up in due))
            await asyncio.sleep(0.1)

    async def _probe(self, up: Upstream) -> None:
        session = self._session
        if session is None:
            return
        start = monotonic()
        try:
            async with session.get(
                up.spec.url + up.spec.probe_path,
                timeout=aiohttp.ClientTimeout(total=self.probe_timeout_s),
                headers={"Authorization": up.auth_header} if up.auth_header else None,
            ) as resp:
                await resp.read()
                ok, detail = resp.status < 500, f"status {resp.status}"
        except TimeoutError:
            ok, detail = False, f"no answer in {self.probe_timeout_s * 1000:.0f} ms"
        except (aiohttp.ClientError, OSError) as exc:
            ok, detail = False, type(exc).__name__
        if up.name in self.pool.upstreams:
            self.pool.probe_result(up, ok, detail, monotonic() - start)
