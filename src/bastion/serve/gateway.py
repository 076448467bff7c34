"""The inference gateway: one aiohttp server per service, in front of a pool of backends.

Owns: the HTTP routes (OpenAI-compatible ``/v1/chat/completions`` with SSE streaming,
``/v1/completions``, ``/v1/embeddings``, ``/v1/models``; the generic JSON
``/v1/predict``; ``/metrics``, ``/healthz``, ``/bastion/status``), and the per-request
path: admission, running the attempts (``_attempts``: count, retry budget, deadline, tried
backends) for whole answers and streams alike, hedging (``_race``), deadlines, stream
failover.

What is retried, and why that is safe: every proxied route is an inference call with no
side effect on the backend (a prediction, a completion, an embedding), so sending it
again cannot double-apply anything. A non-streaming answer is buffered whole before the
client sees a byte, so any failed attempt (refused, timeout, 5xx, 429, malformed JSON)
may be retried on a *different* backend, at most ``max_attempts`` attempts (the policy's;
3 by default, hedges included), while the request's deadline has time left and, unless
the failure was a refused or reset connection (a "requeue": the backend is gone, not
overloaded), while the retry budget has a token. 4xx answers other than 429 are the
client's fault and are passed through, never retried. What each way an attempt can end
means is decided in one place, ``_outcome``.

A 2xx is a success only if it keeps the protocol (``_protocol``): a whole answer must have
the route's content type and JSON shape; a stream must be ``text/event-stream`` whose
lines are SSE and whose events are chunks, ending with a ``finish_reason`` and
``data: [DONE]``. A stream is held back until its first token (or its end), so a backend
that breaks the protocol before that is retried elsewhere; every violation counts against
the backend's breaker like a 5xx.

Hedging: an attempt still unanswered after the hedge delay (``p95`` of recent latencies,
or a fixed delay) gets a hedge on another backend, paid from the retry budget; the first
success wins and the rest are cancelled. An attempt or hedge that fails while another is
out is re-routed at once, beside it, so a hedge refused by a replica killed a moment ago
does not leave the request waiting on a hung one.

Streams are retried and hedged only before their first byte reaches the client
(refused, error status, no first bytes within the TTFT timeout; the hedge delay follows
the time to first byte). A hedged stream's loser is closed as soon as the winner's first
bytes arrive, so at most its prompt is spent. The TTFT timeout, unless the policy sets
``ttft_timeout_ms``, is four times the p99 of observed times to first byte, at least
250 ms and at most a quarter of ``timeout_ms`` (``resilience.AdaptiveTimeout``). Once
bytes have been sent, a cut or stalled stream cannot be resumed: the OpenAI protocol has
no offset to continue from, and a second backend would generate different tokens. The
gateway then ends the stream with an SSE ``error`` event on its own lines (which the
``openai`` client raises as ``APIError``), never with a silent truncation. It forwards
whole lines only, so that event never lands on a partial line.

Deadlines: ``x-bastion-deadline-ms`` from the client (or the policy's ``timeout_ms``,
whichever is shorter) bounds the whole request, a stream to its last byte. An attempt
at a whole answer gets ``attempt_timeout_ms``, or unset an even share of what is left
over the attempts that could still be made (``_attempts``), so primaries that all hang
still leave the fallback tier time to answer; it passes its own deadline on to the
backend in the same header.

Must never: write the event log per request (rare state changes are events, through an
``Emit`` that does not block, such as ``bastion.events.EventWriter``); re-encode a body
that needs no model-name translation; answer 500 for a client's bad input; forward the
client's ``Authorization`` to a vendor.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
import json
import logging
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from bastion import event_kinds as ek
from bastion.events import NO_EVENTS, Emit
from bastion.manifest import GatewayPolicy
from bastion.resilience import (
    AdaptiveTimeout,
    AdaptiveTimeoutStatistics,
    Clock,
    HedgeTimer,
    HedgeTimerStatistics,
    RetryBudget,
    RetryBudgetStatistics,
    monotonic,
)
from bastion.serve import shapes
from bastion.serve._attempts import AttemptRules, Attempts, AttemptStatistics
from bastion.serve._auth import ClientKeys
from bastion.serve._cost import Bill, Cause, Ledger, LedgerStatistics, weigh
from bastion.serve._outcome import (
    ABANDONED,
    CANCELLED,
    CLIENT_GONE,
    CONNECTION,
    DEADLINE,
    EMPTY,
    MALFORMED,
    OK,
    RATE_LIMITED,
    STALLED,
    TTFT_TIMEOUT,
    UNFINISHED,
    VIOLATION,
    Failure,
    Outcome,
    Phase,
    classify_error,
    classify_status,
)
from bastion.serve._protocol import StreamCheck, answer_problem
from bastion.serve._race import hedged
from bastion.serve._split import Assignment, Split, SplitStatistics
from bastion.serve.admission import PRIORITIES, Admission, AdmissionStatistics, QueueFull
from bastion.serve.metrics import BackendMetrics, GatewayMetrics
from bastion.serve.pool import (
    QUARANTINED,
    STABLE,
    Pool,
    PoolStatistics,
    Upstream,
    UpstreamSpec,
    UpstreamStatistics,
)
from bastion.slo._sli import NO_SLI, Observe

__all__ = [
    "BACKEND_HEADER",
    "DEADLINE_HEADER",
    "PRIORITY_HEADER",
    "REQUEST_ID_HEADER",
    "Gateway",
    "GatewayStatistics",
    "exposed",
]

DEADLINE_HEADER = "x-bastion-deadline-ms"
BACKEND_HEADER = "x-bastion-backend"
PRIORITY_HEADER = "x-bastion-priority"
REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
"""A client's request id we echo and log as it is; anything else is replaced by ours."""
_OPEN_ROUTES = frozenset({"/healthz", "/metrics"})
"""Routes that answer without a client key: liveness and scraping expose no backend URL."""
_CHOICE_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions"})
_log = logging.getLogger("bastion.serve")
_REQUEST_ID_KEY = web.RequestKey("request_id", str)
_current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "bastion_request_id", default=None
)
"""The request id of the request being served, for the attempts it makes (hedges run in
tasks, which copy the context)."""
_current_bill: contextvars.ContextVar[Bill | None] = contextvars.ContextVar(
    "bastion_bill", default=None
)
"""The cost ledger's bill of the request being served (None: no accounting)."""
_MAX_BODY = 4 * 1024 * 1024
_JSON = "application/json"
_POST_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/predict")
_EVENT_ENDS = (b"\n\n", b"\r\n\r\n", b"\r\r")
_MAX_LINE = 1024 * 1024  # a partial line held back longer than this is forwarded anyway
T = TypeVar("T")

_TTFT_SHARE = 0.25
"""The most of ``timeout_ms`` a stream waits for its first byte, unless the policy's
``ttft_timeout_ms`` says otherwise."""


@dataclass(frozen=True, slots=True)
class GatewayStatistics:
    """One gateway at one moment (``/bastion/status`` serves it as JSON).

    Attributes:
        service: the service it fronts.
        listen: ``host:port`` it accepts requests on.
        pool: its backends.
        retry_budget: the retry budget's account.
        attempts: how requests used their attempts (retries, requeues, hedges).
        hedge: the hedge timer of whole answers (on their latency).
        ttft_hedge: the hedge timer of streams (on their time to first byte).
        ttft_timeout_s: how long a stream waits for its first byte now.
        ttft: the adaptive TTFT timeout, or None when the policy fixes it.
        admission: the admission queue.
        rollout: the rollout in progress (or the last one, until the next starts).
        cost: spend since start and the budgets, or None without prices or budgets.
    """

    service: str
    listen: str
    pool: PoolStatistics
    retry_budget: RetryBudgetStatistics
    attempts: AttemptStatistics
    hedge: HedgeTimerStatistics
    ttft_hedge: HedgeTimerStatistics
    ttft_timeout_s: float
    ttft: AdaptiveTimeoutStatistics | None
    admission: AdmissionStatistics
    rollout: SplitStatistics | None = None
    cost: LedgerStatistics | None = None


@dataclass(slots=True)
class _Opened:
    """A stream attempt that got its first bytes (``resp`` set), or a client error to pass
    on (``resp`` None, ``first`` the whole body)."""

    up: Upstream
    resp: aiohttp.ClientResponse | None
    status: int
    first: bytes
    content_type: str
    start: float
    check: StreamCheck | None = None
    checked: int = 0  # how many bytes of ``first`` ``check`` has seen


@dataclass(slots=True)
class _Answer:
    status: int
    body: bytes
    content_type: str
    backend: str


def _error(
    status: int,
    message: str,
    kind: str,
    *,
    retry_after: float | None = None,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    headers = dict(headers or {})
    if retry_after:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    body = json.dumps(shapes.error(message, kind, code or status, param=param))
    return web.Response(status=status, text=body, content_type=_JSON, headers=headers)


def exposed(host: str) -> bool:
    """Does listening on ``host`` accept connections from beyond this machine? (Every
    address but loopback does; a name other than ``localhost`` is taken to.)"""
    if host in ("localhost", ""):
        return host == ""
    try:
        return not ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return True


class _RequestEvents:
    """An ``Emit`` that adds the id of the request being served, if any, to each event
    (a backend ejected by a request's failure says which request saw it)."""

    __slots__ = ("_events",)

    def __init__(self, events: Emit) -> None:
        self._events = events

    def emit(
        self,
        kind: str,
        subject: str = "",
        *,
        segment: str | None = None,
        at_ns: int | None = None,
        **data: Any,
    ) -> object:
        request_id = _current_request_id.get()
        if request_id is not None and "request_id" not in data:
            data["request_id"] = request_id
        return self._events.emit(kind, subject, segment=segment, at_ns=at_ns, **data)


def _request_id(given: str | None) -> str:
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), 300.0)
    except ValueError:
        return None  # an HTTP-date: rare from model vendors; fall back to our default


class Gateway:
    """One service's gateway. ``await start()``, then ``await close()``.

    ``events`` records its rare state changes (use a ``bastion.events.EventWriter``: the
    event loop must never wait on SQLite), in ``segment``. ``api_keys``: the client keys
    it requires (``serve._auth.client_keys``); empty, it requires none. ``clock``
    (monotonic seconds) times deadlines, attempts and every policy the gateway drives
    (breakers, limits, the retry budget); tests may pass a ``ManualClock``. ``cost``: the
    ledger of prices and budgets (``serve._cost``); None, no accounting is done.
    """

    def __init__(
        self,
        service: str,
        policy: GatewayPolicy,
        *,
        segment: str = "",
        events: Emit = NO_EVENTS,
        host: str = "127.0.0.1",
        port: int = 0,
        probe_interval_s: float = 1.0,
        probe_timeout_s: float = 0.5,
        hold_429_s: float = 1.0,
        api_keys: Sequence[str] = (),
        clock: Clock = monotonic,
        cost: Ledger | None = None,
    ) -> None:
        self.service = service
        self.keys = ClientKeys(api_keys)
        self.policy = policy
        self.host = host
        self.port = port
        self._clock = clock
        self.events = events
        self._tagged = _RequestEvents(events)
        self.segment = segment or None
        self.metrics = GatewayMetrics(service)
        self.pool = Pool(
            service,
            max_ejected=policy.max_ejected,
            events=self._tagged,
            segment=self.segment,
            clock=clock,
        )
        self.budget = RetryBudget(ratio=policy.retry_budget, clock=clock)
        self.attempts = AttemptRules(
            self.pool,
            self.budget,
            max_attempts=policy.max_attempts,
            attempt_timeout_s=(
                policy.attempt_timeout_ms / 1000.0
                if policy.attempt_timeout_ms is not None
                else None
            ),
            clock=clock,
        )
        quantile, fixed = policy.hedge_rule
        self.hedge = HedgeTimer(quantile=quantile, fixed_s=fixed)
        # A stream is hedged on its time to first byte, by the same rule.
        self.ttft_hedge = HedgeTimer(quantile=quantile, fixed_s=fixed)
        self._hedging = self.hedge.enabled
        self.admission = Admission(policy.max_queue)
        self.pool.on_recover = self.admission.wake_all
        self.timeout_s = policy.timeout_ms / 1000.0
        # Unless the policy fixes it, the TTFT timeout follows the observed time to first
        # byte (resilience.AdaptiveTimeout), capped at a small share of the deadline: a
        # hung backend then costs that share, and the stream moves on well in time.
        self.ttft_fixed_s = (
            policy.ttft_timeout_ms / 1000.0 if policy.ttft_timeout_ms is not None else None
        )
        self.ttft = AdaptiveTimeout(cap_s=_TTFT_SHARE * self.timeout_s)
        self.stall_s = (policy.stall_timeout_ms or policy.timeout_ms) / 1000.0
        self.queue_timeout_s = policy.queue_timeout_ms / 1000.0
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.hold_429_s = hold_429_s
        self._used_groups: set[str] = set()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # a rollout's traffic split (bastion.rollout), consulted per request while set
        self.split: Split | None = None
        self._mirrors: set[asyncio.Task[None]] = set()
        # the rollout's statistics for /bastion/status, set by bastion.rollout (it stays
        # after the rollout ended, so its outcome can be read)
        self.rollout_status: Callable[[], SplitStatistics | None] | None = None
        # per-second SLI rows (bastion.slo), set by `bastion serve` (serve/runner.py)
        self.sli: Observe = NO_SLI
        self._last_probe: dict[str, float] = {}
        self._episode_start: float | None = None
        self._episode_shed = 0
        self._last_shed = 0.0
        self._shed = self.metrics.shed
        self._responses = self.metrics.responses
        self.metrics.watch(self._state_rows, lambda: self.admission.waiting)
        self.cost = cost
        if cost is not None:
            cost.record = self.record
            self.metrics.registry.register(cost.collector())
        # segments (bastion.segment): each backend's segment by its group (the backend's
        # name), and the segments quarantined now (their upstreams sit in the
        # ``quarantined`` arm, which no request uses; a replica restarted meanwhile joins
        # it too). Routes: bastion.serve._segments.
        self.backend_segments: dict[str, str] = {}
        self.quarantined: set[str] = set()
        self.arm_before: dict[str, str] = {}  # a quarantined upstream's arm before
        self.app = self._build_app()
        from bastion.serve._segments import add_segment_routes

        add_segment_routes(self)

    # -- membership ---------------------------------------------------------------------
    def segment_of(self, spec: UpstreamSpec) -> str:
        """The segment of a backend: its own, else its service's ('' for none)."""
        return (
            self.backend_segments.get(spec.group)
            or spec.extra.get("segment")
            or (self.segment or "")
        )

    def add_upstream(self, spec: UpstreamSpec, *, needs_probe: bool = False) -> Upstream:
        up = Upstream(spec, BackendMetrics(), self.pool.clock)
        up.needs_probe = needs_probe
        if self.quarantined and self.segment_of(spec) in self.quarantined:
            up.arm = QUARANTINED
        self.pool.add(up)
        if self.cost is not None and self.policy.prefer_cheaper:
            weigh(self.pool, self.cost, self.policy.prefer_cheaper)
        return up

    def remove_upstream(self, name: str) -> None:
        self.pool.remove(name)
        if self.cost is not None and self.policy.prefer_cheaper:
            weigh(self.pool, self.cost, self.policy.prefer_cheaper)

    def _state_rows(self) -> Iterable[tuple[str, BackendMetrics, UpstreamStatistics]]:
        for up in list(self.pool.upstreams.values()):
            yield up.name, up.metrics, up.statistics()

    # -- lifecycle ----------------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application(
            client_max_size=_MAX_BODY, middlewares=[self._outermost, self._authorize]
        )
        for route in _POST_ROUTES:
            app.router.add_post(route, self._proxy)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model:.+}", self._model)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/bastion/status", self._status)
        app.on_response_prepare.append(self._stamp)
        return app

    @web.middleware
    async def _outermost(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Every request: its id (the client's ``x-request-id``, or a new one), echoed on
        the response and in the access log; HTTP errors (404, 405 ...) as OpenAI error
        JSON; the end-to-end duration by route and status."""
        start = self._clock()
        request_id = request[_REQUEST_ID_KEY] = _request_id(request.headers.get(REQUEST_ID_HEADER))
        _current_request_id.set(request_id)
        info = request.match_info
        route = info.route.resource.canonical if info.route.resource is not None else "other"
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            resp = self._http_error(request, exc)
        took = self._clock() - start
        self.metrics.observe_request(route, resp.status, took)
        self.sli.observe(route, resp.status, took, resp.headers.get(BACKEND_HEADER, ""))
        return resp

    def _http_error(self, request: web.Request, exc: web.HTTPException) -> web.Response:
        status = exc.status
        if status == 404:
            message = (
                f"{request.method} {request.path}: no such route on the gateway of service "
                f"{self.service} (it serves {', '.join(_POST_ROUTES)}, GET /v1/models)"
            )
        elif status == 405:
            allowed = exc.headers.get("Allow", "")
            message = (
                f"{request.method} {request.path}: method not allowed; use {allowed or 'another'}"
            )
        else:
            message = f"{request.method} {request.path}: {exc.reason}"
        kind = "invalid_request_error" if status < 500 else "server_error"
        self._responses["4xx" if status < 500 else "5xx"].inc()
        keep = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return _error(status, message, kind, code=None, headers=keep)

    @web.middleware
    async def _authorize(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """With client keys, every route but liveness and metrics needs one (LiteLLM's
        virtual keys; the key itself is never logged or recorded)."""
        if not self.keys.enabled or request.path in _OPEN_ROUTES:
            return await handler(request)
        header = request.headers.get("Authorization")
        if self.keys.allows(header):
            return await handler(request)
        self._responses["4xx"].inc()
        message = (
            f"service {self.service} needs an API key: send Authorization: Bearer <key>"
            if not header
            else f"service {self.service}: the API key is not one this gateway accepts"
        )
        return _error(
            401,
            message,
            "invalid_request_error",
            code="invalid_api_key",
            headers={"WWW-Authenticate": 'Bearer realm="bastion"'},
        )

    @staticmethod
    async def _stamp(request: web.Request, response: web.StreamResponse) -> None:
        request_id = request.get(_REQUEST_ID_KEY)
        if request_id is not None:
            response.headers[REQUEST_ID_HEADER] = request_id

    async def start(self) -> tuple[str, int]:
        from bastion.aio import serve_app

        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
        )
        if exposed(self.host):
            _log.warning(
                "service %s listens on %s, reachable beyond this machine%s",
                self.service,
                self.host,
                ""
                if self.keys.enabled
                else " with no client keys: set services.<s>.auth.keys_env, or listen on "
                "127.0.0.1 behind a proxy",
            )
        self._runner, self.port = await serve_app(
            self.app,
            self.host,
            self.port,
            backlog=1024,
            header_timeout_s=self.policy.header_timeout_ms / 1000.0,
        )
        self._tasks.append(asyncio.create_task(self._probe_loop()))
        self.record(
            ek.SERVE_STARTED,
            listen=f"{self.host}:{self.port}",
            backends=[u.name for u in self.pool.upstreams.values()],
        )
        return self.host, self.port

    async def close(self) -> None:
        for task in (*self._tasks, *self._mirrors):
            task.cancel()
        for task in list(self._mirrors):
            with contextlib.suppress(asyncio.CancelledError):
                await task
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
        self.record(ek.SERVE_STOPPED, **asdict(self.budget.statistics()))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def record(self, kind: str, *, at_ns: int | None = None, **data: Any) -> None:
        """Record a (rare) event about this service, in its segment."""
        self._tagged.emit(kind, self.service, segment=self.segment, at_ns=at_ns, **data)

    # -- small routes -------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(shapes.model_list([self.service], owned_by="bastion"))

    async def _model(self, request: web.Request) -> web.Response:
        """``models.retrieve``: the gateway serves one model, named as its service."""
        asked = request.match_info["model"]
        if asked != self.service:
            self._responses["4xx"].inc()
            return _error(
                404,
                f"model {asked[:80]!r} is not served here; this gateway serves "
                f"{self.service!r} (GET /v1/models lists it)",
                "invalid_request_error",
                code="model_not_found",
                param="model",
            )
        (entry,) = shapes.model_list([self.service], owned_by="bastion")["data"]
        return web.json_response(entry)

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.render(request.headers.get("Accept"))
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = content_type  # with its version/charset parameters
        return resp

    async def _healthz(self, request: web.Request) -> web.Response:
        ok = any(u.breaker.available() and not u.needs_probe for u in self.pool.upstreams.values())
        return web.json_response({"ok": ok}, status=200 if ok else 503)

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(asdict(self.statistics()))

    def statistics(self) -> GatewayStatistics:
        return GatewayStatistics(
            service=self.service,
            listen=f"{self.host}:{self.port}",
            pool=self.pool.statistics(),
            retry_budget=self.budget.statistics(),
            attempts=self.attempts.statistics(),
            hedge=self.hedge.statistics(),
            ttft_hedge=self.ttft_hedge.statistics(),
            ttft_timeout_s=self._ttft_timeout(),
            ttft=self.ttft.statistics() if self.ttft_fixed_s is None else None,
            admission=self.admission.statistics(),
            rollout=self.rollout_status() if self.rollout_status is not None else None,
            cost=self.cost.statistics() if self.cost is not None else None,
        )

    # -- the request path -----------------------------------------------------------------
    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self._responses["4xx"].inc()
            return _error(
                413,
                f"request body over {_MAX_BODY} bytes; send a smaller one",
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
        n = obj.get("n")
        if request.path in _CHOICE_ROUTES and n is not None and n != 1:
            # A backend may answer with fewer choices than asked (local replicas make
            # one), and a failover could not keep them consistent: refuse, never send
            # fewer choices than the client counts on.
            self._responses["4xx"].inc()
            return _error(
                400,
                f"{request.path}: n={json.dumps(n)[:20]} is not supported; this gateway "
                "returns one choice per request (send n separate requests)",
                "invalid_request_error",
                param="n",
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
        deadline = self._clock() + timeout_s
        split = self.split
        assignment = split.assign(headers, request.remote) if split is not None else None
        bill = None
        if self.cost is not None:
            key = headers.get("Authorization") if self.keys.enabled else None
            bill = self.cost.bill(obj, len(body), key, self.pool)
            if bill.nowhere:
                self._responses["4xx"].inc()
                return _error(429, self.cost.refusal(bill), "budget_exceeded", retry_after=1)
        if obj.get("stream") is True:
            if bill is not None:
                _current_bill.set(bill)
            return await self._stream(request, body, obj, priority, deadline, assignment=assignment)
        path = request.path

        hedge = self._hedging and (bill is None or bill.hedge)
        if assignment is None:
            attempts = self.attempts.start(deadline, hedge=hedge)

            def run(up: Upstream) -> Coroutine[Any, Any, _Answer]:
                ends = attempts.attempt_deadline()
                if bill is not None:
                    return self._attempt(
                        up,
                        path,
                        self._body_for(up, body, obj),
                        ends,
                        bill,
                        bill.cause(up, attempts),
                    )
                return self._attempt(up, path, self._body_for(up, body, obj), ends)

        else:
            attempts = self.attempts.start(deadline, hedge=hedge, arms=assignment.arms)

            def run(up: Upstream) -> Coroutine[Any, Any, _Answer]:
                ends = attempts.attempt_deadline()
                sent = self._body_for(up, body, obj)
                if bill is not None:
                    coro = self._attempt(up, path, sent, ends, bill, bill.cause(up, attempts))
                else:
                    coro = self._attempt(up, path, sent, ends)
                if assignment.pending:
                    assignment.pending = False
                    if assignment.label is not None and up.arm == assignment.arm:
                        return self._measured(coro, assignment)
                return coro

        if bill is not None:
            attempts.skip = bill.skip

        primary: asyncio.Future[_Answer | None] | None = None
        if assignment is not None and assignment.mirror and (bill is None or bill.shadow):
            primary = asyncio.get_running_loop().create_future()
            self._mirror(path, body, obj, primary, bill=bill, attempts=attempts)
        try:
            answer = await self._run(attempts, priority, run, self.hedge)
        except BaseException:
            if primary is not None:
                primary.set_result(None)  # the client got no answer to compare with
            raise
        if primary is not None:
            primary.set_result(answer if isinstance(answer, _Answer) else None)
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

    async def _measured(self, coro: Coroutine[Any, Any, _Answer], a: Assignment) -> _Answer:
        """Run the first attempt of a request the split measures, and hand it the result."""
        split = self.split
        start = self._clock()
        try:
            answer = await coro
        except Failure:
            if split is not None:
                split.record(a, False, self._clock() - start, None)
            raise
        if split is not None:
            code = answer.status
            split.record(a, code < 500, self._clock() - start, answer.body if code < 400 else None)
        return answer

    def _mirror(
        self,
        path: str,
        body: bytes,
        obj: dict[str, Any],
        primary: asyncio.Future[_Answer | None],
        *,
        bill: Bill | None,
        attempts: Attempts,
    ) -> None:
        """Send a copy of a request to the other arm (shadow: the candidate), beside the
        client's own attempt and never in its way: the copy is only measured, compared
        with the client's answer (``primary``) once both are in, then discarded. Sent at
        the same moment as the original, both meet the same load, so neither arm's
        latency is biased by when it was sent. With prices, it is charged as ``shadow``
        (and not sent past a soft limit)."""
        split = self.split
        up = split.mirror_to() if split is not None else None
        if up is None:
            return
        deadline = self._clock() + self.timeout_s

        async def copy() -> None:
            start = self._clock()
            sent = self._body_for(up, body, obj)
            try:
                answer = await self._attempt(up, path, sent, deadline, bill, "shadow")
            except Failure:
                ok, got = False, None
            else:
                ok, got = answer.status < 500, answer.body if answer.status < 400 else None
            elapsed = self._clock() - start
            first = await primary
            kept = first.body if first is not None and first.status < 400 else None
            if self.split is split and split is not None:
                split.mirrored(ok, elapsed, got, kept)

        task = asyncio.create_task(copy())
        self._mirrors.add(task)
        task.add_done_callback(self._mirrors.discard)

    def _body_for(self, up: Upstream, body: bytes, obj: dict[str, Any]) -> bytes:
        name = up.spec.model_name
        if name is None or obj.get("model") == name:
            return body
        return json.dumps({**obj, "model": name}).encode()

    def _headers_for(self, up: Upstream, deadline: float) -> dict[str, str]:
        remaining_ms = max(1, int((deadline - self._clock()) * 1000))
        headers = {"Content-Type": _JSON, DEADLINE_HEADER: str(remaining_ms)}
        request_id = _current_request_id.get()
        if request_id is not None:
            headers[REQUEST_ID_HEADER] = request_id  # so a backend's logs say the same
        if up.auth_header is not None:
            headers["Authorization"] = up.auth_header
        return headers

    def _first_use(self, up: Upstream) -> None:
        up.used = True
        group = up.spec.group or up.name
        if group not in self._used_groups:
            self._used_groups.add(group)
            self.record(ek.DEP_USED, target=group, url=up.spec.url, via="backend")

    # -- settling an attempt -----------------------------------------------------------------
    def _finish(
        self,
        up: Upstream,
        outcome: Outcome,
        start: float,
        *,
        reason: str = "",
        hold_s: float = 0.0,
    ) -> None:
        """Every attempt ends here, once: the pool settles it, and a freed slot lets a
        queued request in."""
        self.pool.finish(up, outcome, self._clock() - start, reason=reason, hold_s=hold_s)
        if self.admission.waiting:
            self.admission.wake()

    def _error_failure(
        self, up: Upstream, exc: BaseException, phase: Phase, start: float
    ) -> Failure:
        """Settle an attempt that raised ``exc``; the caller re-raises ``exc`` itself when
        the outcome is not a failure of the backend (cancelled, or an unknown error)."""
        outcome = classify_error(exc, phase)
        if outcome is CONNECTION:
            reason = f"connection: {type(exc).__name__}"
        elif outcome is TTFT_TIMEOUT:
            reason = "no first token within TTFT timeout"
        else:
            reason = outcome.kind
        self._finish(up, outcome, start, reason=reason)
        return Failure(outcome, reason)

    def _status_failure(
        self, up: Upstream, outcome: Outcome, status: int, retry_after: str | None, start: float
    ) -> Failure:
        """Settle an attempt whose answer was a failure (5xx, 408, 429, malformed)."""
        if outcome is RATE_LIMITED:
            after = _retry_after(retry_after)
            hold = after if after is not None else self.hold_429_s
            reason = "rate limited (429)" + ("" if after is not None else ", no Retry-After")
            self._finish(up, outcome, start, reason=reason, hold_s=hold)
            return Failure(outcome, reason, retry_after=hold)
        reason = "malformed JSON body" if outcome is MALFORMED else f"status {status}"
        self._finish(up, outcome, start, reason=reason)
        return Failure(outcome, reason)

    # -- whole answers --------------------------------------------------------------------
    async def _attempt(  # noqa: PLR0917 - the hot path: positional, no wrapper
        self,
        up: Upstream,
        path: str,
        body: bytes,
        deadline: float,
        bill: Bill | None = None,
        cause: Cause = "first",
    ) -> _Answer:
        """One non-streaming attempt, due by ``deadline`` (the attempt's, which is never
        after the request's). Returns an answer to pass on, or raises Failure. With a
        ``bill`` the attempt is reserved before it is sent (``Failure(OVER_BUDGET)`` when
        a hard budget cannot hold it) and settled, as ``cause``, however it ends: inline
        here rather than in a coroutine around the attempt, which cost accounting a
        measurable share of its CPU per request."""
        ticket = bill.ledger.reserve(bill, up, cause) if bill is not None else None
        if not up.used:
            self._first_use(up)
        session = self._session
        assert session is not None
        start = up.begin()
        timeout = deadline - start
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
        except BaseException as exc:
            # CANCELLED (lost a hedge race, or the client left) still settles the attempt.
            failure = self._error_failure(up, exc, "answer", start)
            if failure.outcome is CANCELLED or failure.outcome is ABANDONED:
                if ticket is not None:
                    ticket.failed(None)
                raise
            if ticket is not None:
                ticket.failed(failure.outcome)
            raise failure from None
        outcome = classify_status(status)
        problem = answer_problem(path, ctype, data) if outcome is OK else ""
        if problem:
            # A 2xx that breaks the protocol is the backend's failure, retried elsewhere.
            self._finish(up, MALFORMED, start, reason=problem)
            if ticket is not None:
                ticket.failed(MALFORMED)
            raise Failure(MALFORMED, problem)
        if outcome.retry != "answer":
            if ticket is not None:
                ticket.failed(outcome)
            raise self._status_failure(up, outcome, status, retry_after, start)
        if ticket is not None:
            ticket.answered(status, data)
        if outcome is OK:
            elapsed = self._clock() - start
            self.pool.finish(up, OK, elapsed)
            if self.admission.waiting:
                self.admission.wake()
            self.hedge.observe(elapsed)
        else:
            self._finish(up, outcome, start)  # the client's own error: the backend is fine
        return _Answer(status, data, ctype or _JSON, up.name)

    async def _run(
        self,
        attempts: Attempts,
        priority: int,
        run: Callable[[Upstream], Coroutine[Any, Any, T]],
        hedge: HedgeTimer,
        discard: Callable[[T], None] | None = None,
    ) -> T | web.Response:
        """The attempts of one request, whole answer or stream alike: ``run`` one on each
        backend ``attempts`` hands out, hedged after ``hedge``'s delay, queueing while no
        backend has room, until one succeeds or the attempts end (then the client gets
        why)."""
        for up in attempts:
            if up is None:
                shed = await self._wait_capacity(priority, attempts.remaining())
                if shed is not None:
                    return shed
                continue
            delay = hedge.delay() if attempts.hedges_left else None
            try:
                if delay is None or delay >= attempts.remaining():
                    return await run(up)
                return await hedged(up, attempts, run, delay, discard)
            except Failure as failure:
                attempts.failed(failure)
        return self._give_up(attempts)

    def _give_up(self, attempts: Attempts) -> web.Response:
        names = ", ".join(u.name for u in attempts.tried) or "none"
        last = attempts.last
        self._responses["5xx" if last is None or last.outcome.status >= 500 else "4xx"].inc()
        if last is None:
            return _error(
                504,
                f"service {self.service}: deadline passed (tried: {names})",
                "timeout",
                retry_after=1,
            )
        if last.outcome is RATE_LIMITED:
            return _error(
                429,
                f"service {self.service}: every backend is rate limited (tried: {names})",
                "rate_limited",
                retry_after=last.retry_after,
            )
        return _error(
            last.outcome.status,
            f"service {self.service}: every attempt failed, last: {last.reason} (tried: {names})",
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
        now = self._clock()
        soonest = min(
            (u.breaker.open_until - now for u in self.pool.upstreams.values()),
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
        now = self._clock()
        self._last_shed = now
        self._episode_shed += 1
        if self._episode_start is None:
            self._episode_start = now
            self.record(ek.SERVE_OVERLOAD_STARTED, reason=reason, queue=self.admission.waiting)

    def _check_overload_over(self) -> None:
        if self._episode_start is not None and self._clock() - self._last_shed > 1.0:
            self.record(
                ek.SERVE_OVERLOAD_ENDED,
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
        *,
        assignment: Assignment | None = None,
    ) -> web.StreamResponse:
        """Fail over, and hedge, before the first byte; after it, end a cut/stalled stream
        with an SSE error event (see the module docstring for why it cannot resume).
        A rollout's split routes streams too, but does not measure them."""
        path = request.path
        bill = _current_bill.get()

        def run(up: Upstream) -> Coroutine[Any, Any, _Opened]:
            if bill is not None:
                return bill.opening(up, attempts, lambda: self._open(up, path, body, obj, deadline))
            return self._open(up, path, body, obj, deadline)

        discard = self._close_opened
        if bill is not None:

            def discard(opened: _Opened) -> None:
                self._close_opened(opened)
                bill.discarded(opened)

        hedge = self._hedging and (bill is None or bill.hedge)
        arms = assignment.arms if assignment is not None else STABLE
        attempts = self.attempts.start(deadline, hedge=hedge, arms=arms)
        if bill is not None:
            attempts.skip = bill.skip
        opened = await self._run(attempts, priority, run, self.ttft_hedge, discard)
        if isinstance(opened, web.Response):
            return opened
        resp = opened.resp
        if resp is None:  # the client's own error: pass it on
            if bill is not None:
                bill.relayed(opened, answered=False)
            self._responses["4xx"].inc()
            return web.Response(
                status=opened.status, body=opened.first, content_type=opened.content_type
            )
        ticket = bill.ticket_of(opened) if bill is not None else None
        try:
            return await self._relay(
                request,
                opened.up,
                resp,
                opened.first,
                opened.check or StreamCheck(),
                checked=opened.checked,
                start=opened.start,
                deadline=deadline,
                tap=ticket.tap if ticket is not None else None,
            )
        finally:
            resp.release()
            if bill is not None:
                bill.relayed(opened, answered=True)

    def _ttft_timeout(self) -> float:
        return self.ttft.timeout() if self.ttft_fixed_s is None else self.ttft_fixed_s

    async def _open(
        self, up: Upstream, path: str, body: bytes, obj: dict[str, Any], deadline: float
    ) -> _Opened:
        """One stream attempt up to its first bytes (or a client error to pass on); raises
        Failure. A stream that opens is settled by ``_relay``, or by ``_close_opened`` when
        it lost a hedge race."""
        if not up.used:
            self._first_use(up)
        session = self._session
        assert session is not None
        start = up.begin()
        resp: aiohttp.ClientResponse | None = None
        try:
            async with asyncio.timeout(min(self._ttft_timeout(), deadline - start)):
                resp = await session.post(
                    up.spec.url + path,
                    data=self._body_for(up, body, obj),
                    headers=self._headers_for(up, deadline),
                    timeout=aiohttp.ClientTimeout(total=None),
                )
                status = resp.status
                check: StreamCheck | None = None
                problem = ""
                if status != 200:
                    first = await resp.read()
                elif resp.content_type != "text/event-stream":
                    first = b""
                    problem = f"content type {resp.content_type!r}, not text/event-stream"
                else:
                    # Hold the stream back until its first event a client acts on, checked
                    # against the protocol: until then a violation is retried elsewhere.
                    check = StreamCheck()
                    first, checked, problem = await self._first_events(resp, check)
        except BaseException as exc:
            if resp is not None:
                resp.release()
            failure = self._error_failure(up, exc, "first_byte", start)
            if failure.outcome is CANCELLED or failure.outcome is ABANDONED:
                raise
            raise failure from None
        if problem:
            resp.release()
            self._finish(up, MALFORMED, start, reason=f"stream {problem}")
            raise Failure(MALFORMED, f"stream {problem}")
        if status == 200 and first:
            ttft = self._clock() - start
            self.ttft.observe(ttft)
            self.ttft_hedge.observe(ttft)
            return _Opened(up, resp, status, first, resp.content_type, start, check, checked)
        resp.release()
        if status == 200:
            self._finish(up, EMPTY, start, reason=EMPTY.kind)
            raise Failure(EMPTY, EMPTY.kind)
        outcome = classify_status(status)
        if outcome.retry != "answer":
            raise self._status_failure(up, outcome, status, resp.headers.get("Retry-After"), start)
        self._finish(up, outcome, start)
        return _Opened(up, None, status, first, resp.content_type, start)

    @staticmethod
    async def _first_events(
        resp: aiohttp.ClientResponse, check: StreamCheck
    ) -> tuple[bytes, int, str]:
        """Read a stream until its first event a client acts on (or its end), checking
        each whole line; returns the bytes read, how many were checked, and the first
        violation (or "")."""
        held = b""
        checked = 0
        while True:
            chunk = await resp.content.readany()
            if not chunk:
                if not held:
                    return held, 0, ""  # an empty stream: the caller's EMPTY
                problem = check.feed(held[checked:])
                return held, len(held), problem or check.end()
            held += chunk
            cut = max(held.rfind(b"\n"), held.rfind(b"\r")) + 1
            if cut > checked:
                problem = check.feed(held[checked:cut])
                checked = cut
                if problem:
                    return held, checked, problem
                if check.started:
                    return held, checked, ""
            if len(held) - checked > _MAX_LINE:
                return held, checked, "a line longer than the gateway's limit"

    def _close_opened(self, opened: _Opened) -> None:
        """A stream that opened but lost the hedge race: close it before any byte of it
        reaches the client (the backend sees the disconnect and stops generating)."""
        if opened.resp is not None:
            opened.resp.release()
            self._finish(opened.up, CANCELLED, opened.start)

    async def _relay(
        self,
        request: web.Request,
        up: Upstream,
        resp: aiohttp.ClientResponse,
        first: bytes,
        check: StreamCheck,
        *,
        checked: int = 0,
        start: float,
        deadline: float,
        tap: Callable[[bytes], object] | None = None,
    ) -> web.StreamResponse:
        """Relay a stream whose first bytes came, to its end or to the request's deadline,
        whichever is first; settle the attempt with how it ended."""
        ttft = self._clock() - start
        loop = asyncio.get_running_loop()
        ends = loop.time() + (deadline - self._clock())
        stall_s = self.stall_s
        out = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                BACKEND_HEADER: up.name,
            },
        )
        sent = 0
        tail = b""
        pending = b""
        chunk = first
        reading = False
        outcome = OK
        problem = ""
        try:
            # One timer bounds the whole relay: before each read it is set to the stall
            # timeout or the deadline, whichever is sooner. A write to a client that does
            # not read runs out the same timer, and is the client's doing, not the
            # backend's (``reading`` tells which).
            async with asyncio.timeout_at(ends) as timer:
                await out.prepare(request)
                while True:
                    # Forward whole lines only: if the backend is cut mid-line, the error
                    # event below must not land on the partial line.
                    if pending:
                        chunk = pending + chunk
                        pending = b""
                    if chunk[-1] not in (10, 13):  # "\n", "\r"
                        cut = max(chunk.rfind(b"\n"), chunk.rfind(b"\r")) + 1
                        if len(chunk) - cut <= _MAX_LINE:
                            chunk, pending = chunk[:cut], chunk[cut:]
                    if chunk:
                        # The protocol check of each line before it is sent (the first
                        # ``checked`` bytes were checked while the stream opened).
                        if checked >= len(chunk):
                            checked -= len(chunk)
                        else:
                            problem = check.feed(chunk[checked:])
                            checked = 0
                            if problem:
                                outcome = VIOLATION
                                problem = f"broke the protocol ({problem})"
                                break
                        await out.write(chunk)
                        if tap is not None:
                            tap(chunk)  # the cost ledger counts what the client got
                        sent += len(chunk)
                        tail = (tail + chunk)[-64:]
                    reading = True
                    timer.reschedule(min(loop.time() + stall_s, ends))
                    chunk = await resp.content.readany()
                    reading = False
                    if not chunk:
                        break
            # A last line without its newline: whole if it is the [DONE] a backend sent
            # without one; otherwise the stream was cut inside an event (``check.end``).
            if outcome is OK and pending and (check.done or pending.rstrip().endswith(b"[DONE]")):
                problem = check.feed(pending[checked:])
                if problem:
                    outcome = VIOLATION
                    problem = f"broke the protocol ({problem})"
                elif check.done:
                    await out.write(pending)
                    tail = (tail + pending)[-64:]
        except (TimeoutError, OSError, aiohttp.ClientError, RuntimeError) as exc:
            if not reading:
                outcome = CLIENT_GONE
            else:
                outcome = classify_error(exc, "relay", expired=loop.time() >= ends)
                if outcome is ABANDONED:
                    self._finish(up, outcome, start)
                    raise
                if outcome is DEADLINE:
                    problem = "passed the request's deadline"
                elif outcome is STALLED:
                    problem = f"stalled for {stall_s * 1000:.0f} ms"
                else:
                    problem = f"cut ({type(exc).__name__})"
        except BaseException:
            self._finish(up, CANCELLED, start)
            raise
        if outcome is OK:
            problem = check.end()
            if problem:
                outcome = UNFINISHED
        if outcome is OK:
            self.pool.finish(up, OK, ttft)
            if self.admission.waiting:
                self.admission.wake()
            self._responses["2xx"].inc()
            with contextlib.suppress(OSError, aiohttp.ClientError, RuntimeError):
                await out.write_eof()
            return out
        self._finish(up, outcome, start, reason=f"stream {problem}" if problem else outcome.kind)
        if outcome is CLIENT_GONE:
            return out  # nothing more to say to a client that left
        self._responses["5xx"].inc()
        if outcome is DEADLINE:
            message = (
                f"service {self.service}: the stream from backend {up.name} passed the "
                f"request's deadline after {sent} bytes; ask for a longer "
                f"{DEADLINE_HEADER} or a shorter answer"
            )
        else:
            message = (
                f"backend {up.name} stream {problem} after {sent} bytes; a started stream "
                "cannot resume on another backend (retry the request)"
            )
        event = shapes.sse(shapes.error(message, "stream_interrupted", outcome.status))
        if not tail.endswith(_EVENT_ENDS):
            event = b"\n" + event  # end the event the backend left open (its lines are whole)
        with contextlib.suppress(OSError, aiohttp.ClientError, RuntimeError, TimeoutError):
            async with asyncio.timeout(1.0):
                await out.write(event)
                await out.write_eof()
        return out

    # -- active health ----------------------------------------------------------------------
    async def _probe_loop(self) -> None:
        """Cheap probes (GET /health or /v1/models: never a paid model call). Upstreams that
        are out or waiting to join are probed every 100 ms, healthy ones every interval."""
        while True:
            self._check_overload_over()
            now = self._clock()
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
        start = self._clock()
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
            self.pool.probe_result(up, ok, detail, self._clock() - start)
