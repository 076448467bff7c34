"""The TCP fault proxy: Toxiproxy's toxics, changeable at runtime, in pure asyncio.

Owns: a TCP proxy that listens on 127.0.0.1 and forwards to one upstream port in scope,
and the toxics applied to the bytes as they pass: ``latency`` (with jitter),
``bandwidth``, ``timeout`` (a blackhole; closes after ``timeout_ms`` unless 0),
``reset_peer`` (TCP RST), ``slicer``, ``limit_data``, and the proxy being ``down``.
Toxics are read afresh for every chunk and every 50 ms on idle connections, so adding
or removing one takes effect on open connections, as in Toxiproxy.

Why our own: Toxiproxy (a Go binary) cannot be installed here; the toxic semantics and
names follow its README so people who know it know this.

Must never: listen on anything but loopback, or forward to a port outside the scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import struct
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from bastion import event_kinds as ek
from bastion.aio import LoopThread, serve_app
from bastion.drill.faults._base import Fault
from bastion.errors import UsageError

if TYPE_CHECKING:
    from bastion.drill.faults.scope import Scope
    from bastion.events import Emit

__all__ = [
    "TOXIC_TYPES",
    "ProxyStatistics",
    "TcpFaultProxy",
    "Toxic",
    "ToxicFault",
    "ToxiproxyApi",
    "main",
]

_Stream = Literal["upstream", "downstream"]
TOXIC_TYPES = ("latency", "bandwidth", "timeout", "reset_peer", "slicer", "limit_data")
_POLL_S = 0.05
_TOXIPROXY_NAMES: dict[str, dict[str, str]] = {
    "latency": {"latency": "latency_ms", "jitter": "jitter_ms"},
    "bandwidth": {"rate": "rate_kbps"},
    "timeout": {"timeout": "timeout_ms"},
    "reset_peer": {"timeout": "timeout_ms"},
    "slicer": {"delay": "delay_us"},
}


@dataclass
class Toxic:
    """One toxic, named and typed as in Toxiproxy. ``stream``: ``downstream`` is the
    server-to-client direction (Toxiproxy's default), ``upstream`` client-to-server.

    Attributes by type: latency: ``latency_ms``, ``jitter_ms``; bandwidth: ``rate_kbps``
    (KB/s); timeout: ``timeout_ms`` (0 = hold forever); reset_peer: ``timeout_ms``;
    slicer: ``average_size``, ``size_variation``, ``delay_us``; limit_data: ``bytes``.
    Toxiproxy's names (``latency``, ``jitter``, ``rate``, ``timeout``, ``delay``, in
    its units) are accepted too.
    ``toxicity`` is the chance (seeded) that a connection is affected.
    """

    type: str
    name: str = ""
    stream: _Stream = "downstream"
    toxicity: float = 1.0
    attributes: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in TOXIC_TYPES:
            raise UsageError(f"toxic type {self.type!r} is unknown; known: {list(TOXIC_TYPES)}")
        if self.stream not in ("upstream", "downstream"):
            raise UsageError(f"toxic stream {self.stream!r} must be upstream or downstream")
        if not 0.0 <= self.toxicity <= 1.0:
            raise UsageError(f"toxic toxicity {self.toxicity} must be in [0, 1]")
        self.name = self.name or f"{self.type}_{self.stream}"
        # Toxiproxy's own attribute names are accepted and stored with their units spelt.
        attrs = dict(self.attributes)
        for theirs, ours in _TOXIPROXY_NAMES.get(self.type, {}).items():
            if theirs in attrs:
                if ours in attrs and attrs[ours] != attrs[theirs]:
                    raise UsageError(f"toxic {self.name}: give {theirs} or {ours}, not both")
                attrs[ours] = attrs.pop(theirs)
        self.attributes = attrs

    def attr(self, key: str, default: float = 0.0) -> float:
        return float(self.attributes.get(key, default))


class _Conn:
    """One proxied connection: the client's and the upstream's streams."""

    def __init__(
        self,
        cid: int,
        *,
        c_reader: asyncio.StreamReader,
        c_writer: asyncio.StreamWriter,
        u_reader: asyncio.StreamReader,
        u_writer: asyncio.StreamWriter,
        rng: random.Random,
    ) -> None:
        self.cid = cid
        self.c_reader, self.c_writer = c_reader, c_writer
        self.u_reader, self.u_writer = u_reader, u_writer
        self.started = time.monotonic()
        self.sent = {"upstream": 0, "downstream": 0}
        self.closed = False
        self.rolls: dict[str, float] = {}
        self.rng = rng
        self.tasks: list[asyncio.Task[None]] = []

    def affected(self, toxic: Toxic) -> bool:
        # Toxicity is decided once per connection and toxic, as in Toxiproxy.
        if toxic.name not in self.rolls:
            self.rolls[toxic.name] = self.rng.random()
        return self.rolls[toxic.name] < toxic.toxicity

    def reset(self) -> None:
        """Close the client side with an RST (SO_LINGER 0) and drop the upstream side."""
        if self.closed:
            return
        self.closed = True
        sock = self.c_writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.c_writer.transport.abort()
        self.u_writer.transport.abort()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for w in (self.c_writer, self.u_writer):
            with contextlib.suppress(Exception):
                w.close()


@dataclass(frozen=True, slots=True)
class ProxyStatistics:
    """A fault proxy, now."""

    name: str
    #: where clients connect
    port: int
    #: ``host:port`` it forwards to
    upstream: str
    #: cut: new connections are refused
    down: bool
    #: connections open now
    open: int
    #: the toxics in place (``Toxic`` as dicts)
    toxics: list[dict[str, Any]]
    #: connections accepted and forwarded, ever
    connections: int
    #: connections refused while down or when the upstream refused
    refused: int
    #: connections reset by a toxic or a cut
    resets: int
    bytes_up: int
    bytes_down: int


class TcpFaultProxy:
    """A TCP proxy on 127.0.0.1 whose toxics change at runtime.

    ``with TcpFaultProxy(upstream_port=8801, scope=scope) as proxy:`` then connect to
    ``proxy.port``; ``proxy.add_toxic(Toxic("latency", attributes={"latency_ms": 100}))``,
    ``proxy.remove_toxic(name)``, ``proxy.set_down(True)``.
    """

    def __init__(
        self,
        *,
        upstream_port: int,
        scope: Scope,
        upstream_host: str = "127.0.0.1",
        listen_port: int = 0,
        name: str = "proxy",
        seed: int | None = None,
        events: Emit | None = None,
    ) -> None:
        self.upstream_port = scope.check_port(upstream_port, fault="network.proxy")
        self.upstream_host = upstream_host
        self.port = listen_port
        self.name = name
        self.events = events
        self._rng = random.Random(seed)
        self._toxics: dict[str, Toxic] = {}
        self._added: dict[str, float] = {}
        self._lock = threading.Lock()
        self._conns: dict[int, _Conn] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._next_cid = 0
        self._down = False
        self._server: asyncio.Server | None = None
        self._thread: LoopThread | None = None
        self._stats = {"connections": 0, "refused": 0, "resets": 0, "bytes_up": 0, "bytes_down": 0}

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> TcpFaultProxy:
        self._thread = LoopThread(f"tcp-proxy-{self.name}")
        try:
            self._thread.start(self._listen(), timeout=15)
        except Exception as exc:
            raise UsageError(f"tcp proxy {self.name}: could not start: {exc!r}") from None
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _close_all(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns.values()):
            conn.close()
        # Let every handler finish (or cancel it), so none is destroyed while pending.
        handlers = [t for t in self._handlers if not t.done()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop(self._close_all())
            self._thread = None

    def __enter__(self) -> TcpFaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Any) -> Any:
        assert self._thread is not None
        return self._thread.call(coro, 10)

    # -- toxics ----------------------------------------------------------------------------

    def add_toxic(self, toxic: Toxic) -> Toxic:
        with self._lock:
            if toxic.name in self._toxics:
                raise UsageError(f"tcp proxy {self.name}: toxic {toxic.name!r} already exists")
            self._toxics[toxic.name] = toxic
            self._added[toxic.name] = time.monotonic()
        self._emit(ek.DRILL_PROXY_TOXIC_ADDED, toxic=asdict(toxic))
        return toxic

    def remove_toxic(self, name: str) -> None:
        with self._lock:
            removed = self._toxics.pop(name, None)
        if removed is not None:
            self._emit(ek.DRILL_PROXY_TOXIC_REMOVED, toxic=name)

    def toxics(self) -> list[Toxic]:
        with self._lock:
            return list(self._toxics.values())

    def set_down(self, down: bool) -> None:
        """``down``: refuse new connections and drop open ones (Toxiproxy's disable)."""
        self._down = down
        if down:
            self._call(self._drop_all())
        self._emit(ek.DRILL_PROXY_DOWN if down else ek.DRILL_PROXY_UP)

    async def _drop_all(self) -> None:
        for conn in list(self._conns.values()):
            conn.close()

    def _emit(self, kind: str, **data: Any) -> None:
        if self.events is not None:
            self.events.emit(kind, subject=self.name, port=self.port, **data)

    def statistics(self) -> ProxyStatistics:
        with self._lock:
            return ProxyStatistics(
                name=self.name,
                port=self.port,
                upstream=f"{self.upstream_host}:{self.upstream_port}",
                down=self._down,
                open=len(self._conns),
                toxics=[asdict(t) for t in self._toxics.values()],
                **self._stats,
            )

    # -- the data path ---------------------------------------------------------------------

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        if me is not None:
            self._handlers.add(me)
            me.add_done_callback(self._handlers.discard)
        if self._down:
            self._stats["refused"] += 1
            c_writer.close()
            return
        try:
            u_reader, u_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            self._stats["refused"] += 1
            c_writer.close()
            return
        self._next_cid += 1
        conn = _Conn(
            self._next_cid,
            c_reader=c_reader,
            c_writer=c_writer,
            u_reader=u_reader,
            u_writer=u_writer,
            rng=self._rng,
        )
        self._conns[conn.cid] = conn
        self._stats["connections"] += 1
        conn.tasks = [
            asyncio.create_task(self._pipe(conn, c_reader, u_writer, "upstream")),
            asyncio.create_task(self._pipe(conn, u_reader, c_writer, "downstream")),
            asyncio.create_task(self._watch(conn)),
        ]
        try:
            # Cancelled only when the proxy stops: end quietly, since asyncio's streams
            # log a client handler that ends cancelled as an "Exception in callback".
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*conn.tasks[:2], return_exceptions=True)
        finally:
            conn.tasks[2].cancel()
            conn.close()
            self._conns.pop(conn.cid, None)

    def _active(self, conn: _Conn, stream: _Stream) -> list[Toxic]:
        return [t for t in self.toxics() if t.stream == stream and conn.affected(t)]

    async def _watch(self, conn: _Conn) -> None:
        """Apply the connection-level toxics (reset_peer, timeout) even when idle."""
        while not conn.closed:
            for toxic in self.toxics():
                if not conn.affected(toxic):
                    continue
                if toxic.type == "reset_peer":
                    since = toxic.__dict__.setdefault("_since", time.monotonic())
                    if (
                        time.monotonic() - max(since, conn.started)
                        >= toxic.attr("timeout_ms") / 1e3
                    ):
                        self._stats["resets"] += 1
                        conn.reset()
                        return
            await asyncio.sleep(_POLL_S)

    async def _pipe(
        self,
        conn: _Conn,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        stream: _Stream,
    ) -> None:
        try:
            while not conn.closed:
                data = await reader.read(65536)
                if not data:
                    break
                await self._through_toxics(conn, data, writer, stream)
            if not conn.closed:
                with contextlib.suppress(OSError, RuntimeError):
                    writer.write_eof()
        except (ConnectionError, OSError, asyncio.CancelledError):
            conn.close()

    async def _through_toxics(
        self, conn: _Conn, data: bytes, writer: asyncio.StreamWriter, stream: _Stream
    ) -> None:
        toxics = self._active(conn, stream)
        pieces = [data]
        delay_between = 0.0
        rate = 0.0
        for toxic in toxics:
            if toxic.type == "timeout":
                await self._blackhole(conn, toxic)
                return
            if toxic.type == "latency":
                jitter = toxic.attr("jitter_ms")
                delay = toxic.attr("latency_ms") + self._rng.uniform(-jitter, jitter)
                await asyncio.sleep(max(0.0, delay) / 1e3)
            elif toxic.type == "bandwidth":
                rate = toxic.attr("rate_kbps") * 1024
            elif toxic.type == "slicer":
                pieces = self._slice(b"".join(pieces), toxic)
                delay_between = toxic.attr("delay_us") / 1e6
            elif toxic.type == "limit_data":
                limit = int(toxic.attr("bytes"))
                room = limit - conn.sent[stream]
                joined = b"".join(pieces)
                if room <= len(joined):
                    if room > 0:
                        await self._write(conn, writer, joined[:room], stream, rate)
                    conn.close()
                    return
        for i, piece in enumerate(pieces):
            if i and delay_between:
                await asyncio.sleep(delay_between)
            await self._write(conn, writer, piece, stream, rate)

    def _slice(self, data: bytes, toxic: Toxic) -> list[bytes]:
        avg = max(1, int(toxic.attr("average_size", 1)))
        var = int(toxic.attr("size_variation"))
        out, i = [], 0
        while i < len(data):
            size = max(1, avg + self._rng.randint(-var, var))
            out.append(data[i : i + size])
            i += size
        return out

    async def _write(
        self, conn: _Conn, writer: asyncio.StreamWriter, data: bytes, stream: _Stream, rate: float
    ) -> None:
        if rate > 0:
            # Send in 1/20 s worth of bytes at a time, so the cap holds within a chunk.
            step = max(1, int(rate / 20))
            for off in range(0, len(data), step):
                part = data[off : off + step]
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(len(part) / rate)
        else:
            writer.write(data)
            await writer.drain()
        conn.sent[stream] += len(data)
        self._stats["bytes_up" if stream == "upstream" else "bytes_down"] += len(data)

    async def _blackhole(self, conn: _Conn, toxic: Toxic) -> None:
        """Drop data; close after ``timeout_ms``, or hold until the toxic is removed."""
        timeout = toxic.attr("timeout_ms") / 1e3
        started = time.monotonic()
        while not conn.closed:
            if toxic.name not in {t.name for t in self.toxics()}:
                return  # removed: the dropped chunk stays dropped, later data flows
            if timeout > 0 and time.monotonic() - started >= timeout:
                conn.close()
                return
            await asyncio.sleep(_POLL_S)


class ToxicFault(Fault):
    """A toxic as a fault: inject adds it to the proxy, revert removes it. ``Toxic`` of
    type ``down`` is not a toxic; use ``ToxicFault.down(proxy)`` for that."""

    kind = "network.toxic"

    def __init__(
        self,
        proxy: TcpFaultProxy,
        toxic: Toxic | None,
        *,
        events: Emit | None = None,
        subject: str = "",
    ) -> None:
        super().__init__(events=events, subject=subject or proxy.name)
        self.proxy = proxy
        self.toxic = toxic

    @classmethod
    def down(cls, proxy: TcpFaultProxy, **kwargs: Any) -> ToxicFault:
        return cls(proxy, None, **kwargs)

    def describe(self) -> dict[str, Any]:
        what = asdict(self.toxic) if self.toxic is not None else {"type": "down"}
        return {"proxy": self.proxy.name, "port": self.proxy.port, "toxic": what}

    def _inject(self) -> dict[str, Any]:
        if self.toxic is None:
            self.proxy.set_down(True)
        else:
            self.proxy.add_toxic(self.toxic)
        return {}

    def _revert(self) -> dict[str, Any]:
        if self.toxic is None:
            self.proxy.set_down(False)
        else:
            self.proxy.remove_toxic(self.toxic.name)
        return {}


class ToxiproxyApi:
    """A Toxiproxy-compatible HTTP API (on 127.0.0.1) over running ``TcpFaultProxy``s,
    so existing Toxiproxy clients and scripts can change toxics from another process.

    Endpoints (as Toxiproxy's): ``GET /proxies``; ``GET /proxies/{name}``;
    ``POST /proxies/{name}`` with ``{"enabled": false}`` (down) or ``true``;
    ``GET|POST /proxies/{name}/toxics``; ``DELETE /proxies/{name}/toxics/{toxic}``;
    ``POST /reset`` (every proxy up, every toxic removed). Creating proxies over the API
    is not offered: a proxy's upstream must be checked against a drill's scope.
    """

    def __init__(self, proxies: dict[str, TcpFaultProxy], *, port: int = 0) -> None:
        self.proxies = proxies
        self.port = port
        self._thread: LoopThread | None = None
        self._runner: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ToxiproxyApi:
        self._thread = LoopThread("toxiproxy-api")
        try:
            self._thread.start(self._serve(), timeout=15)
        except Exception as exc:
            raise UsageError(f"toxiproxy api: could not start: {exc!r}") from None
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop(self._runner.cleanup() if self._runner is not None else None)
            self._thread = None

    def __enter__(self) -> ToxiproxyApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/proxies", self._list)
        app.router.add_get("/proxies/{name}", self._get)
        app.router.add_post("/proxies/{name}", self._update)
        app.router.add_get("/proxies/{name}/toxics", self._toxics)
        app.router.add_post("/proxies/{name}/toxics", self._add)
        app.router.add_delete("/proxies/{name}/toxics/{toxic}", self._remove)
        app.router.add_post("/reset", self._reset)
        self._runner, self.port = await serve_app(app, "127.0.0.1", self.port)

    def _view(self, name: str, proxy: TcpFaultProxy) -> dict[str, Any]:
        return {
            "name": name,
            "listen": f"127.0.0.1:{proxy.port}",
            "upstream": f"{proxy.upstream_host}:{proxy.upstream_port}",
            "enabled": not proxy.statistics().down,
            "toxics": [asdict(t) for t in proxy.toxics()],
        }

    def _proxy(self, request: Any) -> TcpFaultProxy:
        from aiohttp import web

        name = request.match_info["name"]
        if name not in self.proxies:
            raise web.HTTPNotFound(text=json.dumps({"error": "proxy not found", "status": 404}))
        return self.proxies[name]

    async def _list(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response({n: self._view(n, p) for n, p in self.proxies.items()})

    async def _get(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response(self._view(request.match_info["name"], self._proxy(request)))

    async def _update(self, request: Any) -> Any:
        from aiohttp import web

        proxy = self._proxy(request)
        body = await request.json()
        if "enabled" in body:
            await asyncio.to_thread(proxy.set_down, not bool(body["enabled"]))
        return web.json_response(self._view(request.match_info["name"], proxy))

    async def _toxics(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response([asdict(t) for t in self._proxy(request).toxics()])

    async def _add(self, request: Any) -> Any:
        from aiohttp import web

        proxy = self._proxy(request)
        try:
            body = await request.json()
            toxic = Toxic(
                str(body["type"]),
                name=str(body.get("name", "")),
                stream=body.get("stream", "downstream"),
                toxicity=float(body.get("toxicity", 1.0)),
                attributes={k: float(v) for k, v in (body.get("attributes") or {}).items()},
            )
            proxy.add_toxic(toxic)
        except (UsageError, KeyError, ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": str(exc), "status": 400}, status=400)
        return web.json_response(asdict(toxic))

    async def _remove(self, request: Any) -> Any:
        from aiohttp import web

        proxy = self._proxy(request)
        name = request.match_info["toxic"]
        if name not in {t.name for t in proxy.toxics()}:
            return web.json_response({"error": "toxic not found", "status": 404}, status=404)
        proxy.remove_toxic(name)
        return web.Response(status=204)

    async def _reset(self, request: Any) -> Any:
        from aiohttp import web

        for proxy in self.proxies.values():
            for toxic in proxy.toxics():
                proxy.remove_toxic(toxic.name)
            if proxy.statistics().down:
                await asyncio.to_thread(proxy.set_down, False)
        return web.Response(status=204)


def main(argv: list[str] | None = None) -> int:
    """Run one proxy and its Toxiproxy-compatible API as a process; prints both ports."""
    import argparse

    from bastion.drill.faults.scope import Scope

    parser = argparse.ArgumentParser(prog="python -m bastion.drill.faults.network")
    parser.add_argument("--name", default="proxy")
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--listen-port", type=int, default=0)
    parser.add_argument("--api-port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    scope = Scope.of(ports=[args.upstream_port], name="cli")
    proxy = TcpFaultProxy(
        upstream_port=args.upstream_port,
        scope=scope,
        listen_port=args.listen_port,
        name=args.name,
        seed=args.seed,
    ).start()
    api = ToxiproxyApi({args.name: proxy}, port=args.api_port).start()
    print(json.dumps({"listen": proxy.port, "api": api.url}), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        api.stop()
        proxy.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
