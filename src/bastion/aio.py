"""Asyncio plumbing shared by every server Bastion runs: a loop in a daemon thread, and
starting an aiohttp app on a port.

Owns: ``LoopThread`` (starting the loop, running coroutines on it from other threads, and
stopping it after an optional clean-up coroutine: the gateway's ``GatewayThread``, the
fault library's HTTP upstream, TCP fault proxy and Toxiproxy API all run their servers
this way); ``serve_app`` (start an aiohttp app on host:port, 0 meaning any free port, and
learn the port it got); ``serve_forever`` (the same, then print ``PORT <n>``, the line
``bastion.serve.spawn_server`` waits for, and serve until killed).

Every server it starts logs through Python ``logging``: an access log line per request
on ``bastion.access`` (INFO, so silent until logging is configured at that level, as
``bastion serve --log-level info`` does), and one line per connection the HTTP layer gave
up on (a malformed request, a client that sent its headers too slowly) on
``bastion.http``, never aiohttp's full traceback. A connection gets ``header_timeout_s``
to send its first request's line and headers (slowloris), and is closed after
``_KEEPALIVE_S`` idle between requests.

Must never: leave a loop running after ``stop()``; swallow an error raised while starting
(``call`` re-raises it in the caller's thread); log a request's headers or body (keys
travel in them).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Coroutine, MutableMapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from aiohttp import web
    from aiohttp.web_protocol import RequestHandler

__all__ = ["ACCESS_LOG", "HTTP_LOG", "LoopThread", "serve_app", "serve_forever"]

T = TypeVar("T")

ACCESS_LOG = "bastion.access"
"""The logger of access lines (one per request, at INFO)."""
HTTP_LOG = "bastion.http"
"""The logger of connections the HTTP layer gave up on (one line each)."""
_ACCESS_FORMAT = '%a "%r" %s %b %Tf request_id=%{X-Request-Id}o'
_KEEPALIVE_S = 75.0
"""Longer than any of our clients keeps an idle connection (the gateway's pool 30 s,
httpx's 5 s): a server that closes first races a client reusing the connection, and the
gateway would take the reset for a dead backend."""
_MAX_DETAIL = 200


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > _MAX_DETAIL:
        text = text[:_MAX_DETAIL] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _OneLineLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger, made to say what went wrong in one line: a malformed
    request is the client's doing (WARNING), and its traceback is aiohttp's parser,
    which helps nobody running the server."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        exc_info = kwargs.pop("exc_info", None)
        kwargs.pop("stack_info", None)
        if isinstance(exc_info, BaseException):
            exc: BaseException | None = exc_info
        elif exc_info:
            exc = sys.exc_info()[1]
        else:
            exc = None
        if exc is not None:
            from aiohttp.http_exceptions import HttpProcessingError

            if isinstance(exc, HttpProcessingError) and level > logging.WARNING:
                level = logging.WARNING
            msg, args = f"{msg}: %s", (*args, _one_line(exc))
        if self.logger.isEnabledFor(level):
            self.logger.log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return msg, kwargs


class _HeaderTimeout:
    """Close a connection that has not sent a whole request head within ``timeout_s``
    of connecting. It hooks the two calls aiohttp's server makes for each connection
    (``connection_made``, and ``request_factory`` once a request's head is parsed), so a
    client trickling header bytes no longer holds a connection for the keep-alive time."""

    def __init__(self, server: web.Server, timeout_s: float, log: logging.Logger) -> None:
        self._timeout_s = timeout_s
        self._log = log
        self._made = server.connection_made
        self._factory = server.request_factory
        self._timers: dict[RequestHandler, asyncio.TimerHandle] = {}
        server.connection_made = self._connection_made  # type: ignore[method-assign]
        server.request_factory = self._request

    def _connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        self._made(handler, transport)
        loop = asyncio.get_running_loop()
        self._timers[handler] = loop.call_later(self._timeout_s, self._expire, handler)

    def _request(self, message: Any, payload: Any, protocol: Any, *args: Any) -> Any:
        timer = self._timers.pop(protocol, None)
        if timer is not None:
            timer.cancel()
        return self._factory(message, payload, protocol, *args)

    def _expire(self, handler: RequestHandler) -> None:
        self._timers.pop(handler, None)
        transport = handler.transport
        if transport is None or transport.is_closing():
            return
        peer = transport.get_extra_info("peername")
        self._log.info(
            "closed a connection from %s: no whole request head within %.0f ms",
            peer[0] if isinstance(peer, tuple) else "?",
            self._timeout_s * 1000,
        )
        handler.force_close()


def _json_errors(server: web.Server) -> None:
    """Answer what aiohttp refuses before any handler runs (a request line over 8190
    bytes, a malformed header) in JSON, as every Bastion server answers its own errors.
    aiohttp's default body is text/plain, which neither an OpenAI client nor a client of
    the control API's OpenAPI document reads (schemathesis found it). aiohttp has no
    option for its handler class and its handlers have ``__slots__``, so each new
    connection's handler becomes ``_JsonErrorHandler`` (the same layout, one method
    more) when it is made."""
    from aiohttp.web_protocol import RequestHandler

    global _JsonErrorHandler
    if _JsonErrorHandler is None:

        class _Handler(RequestHandler):
            __slots__ = ()

            def handle_error(
                self,
                request: Any,
                status: int = 500,
                exc: BaseException | None = None,
                message: str | None = None,
            ) -> web.StreamResponse:
                from aiohttp import web

                super().handle_error(request, status, exc, message)  # its log; raises if sent
                client = status < 500
                text = message if client and message else HTTPStatus(status).phrase
                kind = "invalid_request_error" if client else "server_error"
                body = {"error": {"status": status, "message": text, "type": kind}}
                response = web.json_response(body, status=status)
                response.force_close()
                return response

        _JsonErrorHandler = _Handler
    made = server.connection_made
    handler_class = _JsonErrorHandler

    def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
        handler.__class__ = handler_class
        made(handler, transport)

    server.connection_made = connection_made  # type: ignore[method-assign]


_JsonErrorHandler: Any = None


async def serve_app(
    app: web.Application,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    backlog: int = 128,
    shutdown_timeout: float = 60.0,
    header_timeout_s: float | None = 10.0,
) -> tuple[web.AppRunner, int]:
    """Start ``app`` on ``host:port`` and return its runner (``await runner.cleanup()``
    stops it) and the port it is bound to, which is the one the OS chose when ``port`` is
    0. ``header_timeout_s``: how long a new connection may take to send its first
    request's head (None: as long as the keep-alive time)."""
    from aiohttp import web

    http_log = logging.getLogger(HTTP_LOG)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=shutdown_timeout,
        access_log=logging.getLogger(ACCESS_LOG),
        access_log_format=_ACCESS_FORMAT,
        logger=_OneLineLog(http_log, {}),
        keepalive_timeout=_KEEPALIVE_S,
    )
    await runner.setup()
    assert runner.server is not None
    _json_errors(runner.server)
    if header_timeout_s is not None:
        assert runner.server is not None
        _HeaderTimeout(runner.server, header_timeout_s, http_log)
    try:
        await web.TCPSite(runner, host, port, backlog=backlog).start()
    except BaseException:
        await runner.cleanup()
        raise
    # AppRunner.addresses lists each bound socket's (host, port, ...).
    return runner, int(runner.addresses[0][1])


async def serve_forever(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve ``app`` until the process is killed, after printing ``PORT <n>`` on stdout."""
    runner, bound = await serve_app(app, host, port, backlog=1024)
    sys.stdout.write(f"PORT {bound}\n")
    sys.stdout.flush()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


class LoopThread:
    """A private event loop running in a daemon thread named ``name``."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self, setup: Coroutine[Any, Any, T] | None = None, timeout: float = 30.0) -> T | None:
        """Start the loop and, if given, run ``setup`` on it; a failed setup stops the loop."""
        self._thread.start()
        if setup is None:
            return None
        try:
            return self.call(setup, timeout)
        except BaseException:
            self.stop()
            raise

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the loop and wait for its result (or its exception)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, cleanup: Coroutine[Any, Any, Any] | None = None, timeout: float = 10.0) -> None:
        """Run ``cleanup`` (if the loop still runs), stop the loop and close it."""
        if self._thread.is_alive():
            try:
                if cleanup is not None:
                    self.call(cleanup, timeout)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(timeout)
        elif cleanup is not None:
            cleanup.close()
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()
