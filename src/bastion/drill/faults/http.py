"""The fault-injecting HTTP upstream: an OpenAI-compatible stand-in for a model vendor.

Owns: a real aiohttp server on 127.0.0.1 that answers ``/v1/chat/completions`` (plain and
SSE streaming), ``/v1/completions`` and ``/v1/models`` as the OpenAI API does, and serves
the fault it is told to, changeable at runtime (``set_fault`` in-process, or
``POST /_bastion/fault`` from another process): chosen status codes, 429 with or without
``Retry-After``, a slow first byte, a stream cut mid-way, a malformed JSON body.

Must never: listen on anything but loopback; answer with a fault nobody asked for (its
randomness comes from the seed it was given).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bastion import event_kinds as ek
from bastion.aio import LoopThread, serve_app
from bastion.drill.faults._base import Fault
from bastion.errors import ScopeError, UsageError
from bastion.serve import shapes

if TYPE_CHECKING:
    from bastion.events import Emit

__all__ = ["FaultyUpstream", "HttpFault", "HttpFaultInjection", "UpstreamStatistics", "main"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class HttpFault:
    """What the upstream does to the next requests. Every field defaults to "no fault".

    ``status``: answer with this HTTP status and an OpenAI-style error body.
    ``retry_after``: with ``status`` (usually 429), send ``Retry-After`` with this many
    seconds; ``None`` sends no header. ``first_byte_delay_s``: wait before the first byte.
    ``cut_stream_after``: for ``stream: true``, drop the connection after this many SSE
    chunks (no ``[DONE]``). ``chunk_delay_s``: wait this long between SSE chunks (a
    stalling stream). ``malformed_body``: answer 200 with a body that is not JSON.
    ``probability``: the share of requests that get the fault (seeded). ``times``: apply to
    the next N requests only, then clear itself.
    """

    status: int | None = None
    retry_after: float | None = None
    first_byte_delay_s: float = 0.0
    cut_stream_after: int | None = None
    chunk_delay_s: float = 0.0
    malformed_body: bool = False
    probability: float = 1.0
    times: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HttpFault:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UsageError(
                f"http fault: unknown field(s) {sorted(unknown)}; known: {sorted(known)}"
            )
        numbers = {
            "status": int,
            "retry_after": float,
            "first_byte_delay_s": float,
            "cut_stream_after": int,
            "chunk_delay_s": float,
            "probability": float,
            "times": int,
        }
        clean: dict[str, Any] = {}
        for key, value in data.items():
            if key == "malformed_body":
                if not isinstance(value, bool):
                    raise UsageError(
                        f"http fault: malformed_body must be true or false, got {value!r}"
                    )
                clean[key] = value
                continue
            if value is None and key in ("status", "retry_after", "cut_stream_after", "times"):
                clean[key] = None
                continue
            kind = numbers[key]
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise UsageError(f"http fault: {key} must be a finite number, got {value!r}")
            if kind is int and value != int(value):
                raise UsageError(f"http fault: {key} must be a whole number, got {value!r}")
            clean[key] = kind(value)
            if clean[key] < 0:
                raise UsageError(f"http fault: {key} must be >= 0, got {value!r}")
        fault = cls(**clean)
        if fault.status is not None and not 100 <= fault.status <= 599:
            raise UsageError(f"http fault: status {fault.status} is not an HTTP status")
        if not 0.0 <= fault.probability <= 1.0:
            raise UsageError(f"http fault: probability {fault.probability} must be in [0, 1]")
        return fault

    def is_none(self) -> bool:
        return self == HttpFault()


@dataclass
class _Counters:
    requests: int = 0
    ok: int = 0
    faulted: int = 0
    by_fault: dict[str, int] = field(default_factory=dict)


def _label(fault: HttpFault | None) -> str | None:
    """What a served fault was, for ``statistics()``: None for a clean answer."""
    if fault is None:
        return None
    if fault.first_byte_delay_s > 0:
        return "slow_first_byte"
    if fault.chunk_delay_s > 0:
        return "slow_stream"
    return None


@dataclass(frozen=True, slots=True)
class UpstreamStatistics:
    """What a fault upstream has served so far (also at its ``/_bastion/stats``)."""

    name: str
    url: str
    requests: int
    #: answered cleanly
    ok: int
    #: answered with a fault
    faulted: int
    #: faulted answers by fault label (``stream_cut``, ``status``, ...)
    by_fault: dict[str, int]
    #: the fault it serves now (``HttpFault`` as a dict)
    fault: dict[str, Any]


class FaultyUpstream:
    """An OpenAI-compatible server on 127.0.0.1 whose faults change at runtime.

    ``with FaultyUpstream(name="vendor-b") as up:`` then point a client at
    ``up.base_url`` (``http://127.0.0.1:PORT/v1``). Every reply carries
    ``x-bastion-upstream: <name>`` so a test can tell who answered.

    Its ``usage`` is exact and under control (a cost test's known truth): every answer
    counts ``prompt_tokens`` input tokens and ``completion_tokens`` output tokens (None:
    one per word of the reply), never more than the request's ``max_tokens``; a stream
    sends a final usage chunk when asked (``stream_options.include_usage``), as OpenAI
    does. ``omit_usage`` leaves ``usage`` out of every answer (a vendor that sends none).
    Each may be changed while it runs.
    """

    def __init__(
        self,
        *,
        name: str = "stand-in",
        model: str = "stand-in-model",
        reply: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
        events: Emit | None = None,
        prompt_tokens: int = 8,
        completion_tokens: int | None = None,
        omit_usage: bool = False,
    ) -> None:
        if host not in _LOOPBACK:
            raise ScopeError(
                f"http upstream: refused to listen on {host}; a drill's stand-in listens "
                "on 127.0.0.1 only"
            )
        self.name = name
        self.model = model
        self.reply = reply
        self.host = host
        self.port = port
        self.events = events
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.omit_usage = omit_usage
        self._rng = random.Random(seed)
        self._fault = HttpFault()
        self._lock = threading.Lock()
        self._counters = _Counters()
        self._runner: web.AppRunner | None = None
        self._thread: LoopThread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> FaultyUpstream:
        self._thread = LoopThread(f"upstream-{self.name}")
        try:
            self._thread.start(self._start_site(), timeout=15)
        except TimeoutError:
            raise UsageError(f"http upstream {self.name}: did not start within 15 s") from None
        except Exception as exc:
            raise UsageError(f"http upstream {self.name}: could not start: {exc}") from None
        return self

    async def _start_site(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_post("/_bastion/fault", self._control_set)
        app.router.add_delete("/_bastion/fault", self._control_clear)
        app.router.add_get("/_bastion/stats", self._control_stats)
        self._runner, self.port = await serve_app(app, self.host, self.port, shutdown_timeout=0.5)

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop(self._shutdown())
            self._thread = None

    def __enter__(self) -> FaultyUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults ----------------------------------------------------------------------------

    def set_fault(self, fault: HttpFault | None = None, **kwargs: Any) -> None:
        """Serve ``fault`` (or one built from keyword fields) from the next request on."""
        new = fault if fault is not None else HttpFault.from_dict(kwargs)
        with self._lock:
            self._fault = new
        if self.events is not None:
            self.events.emit(
                ek.DRILL_HTTP_FAULT_SET, subject=self.name, **asdict(new), url=self.url
            )

    def clear_fault(self) -> None:
        self.set_fault(HttpFault())

    @property
    def fault(self) -> HttpFault:
        with self._lock:
            return self._fault

    def _take_fault(self) -> HttpFault | None:
        with self._lock:
            fault = self._fault
            if fault.is_none():
                return None
            if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._fault = HttpFault()
            return fault

    def statistics(self) -> UpstreamStatistics:
        with self._lock:
            c = self._counters
            return UpstreamStatistics(
                name=self.name,
                url=self.url,
                requests=c.requests,
                ok=c.ok,
                faulted=c.faulted,
                by_fault=dict(c.by_fault),
                fault=asdict(self._fault),
            )

    def _count(self, label: str | None) -> None:
        with self._lock:
            self._counters.requests += 1
            if label is None:
                self._counters.ok += 1
            else:
                self._counters.faulted += 1
                self._counters.by_fault[label] = self._counters.by_fault.get(label, 0) + 1

    # -- handlers --------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"x-bastion-upstream": self.name}

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "name": self.name}, headers=self._headers())

    async def _models(self, request: web.Request) -> web.Response:
        body = shapes.model_list([self.model], owned_by=self.name)
        return web.json_response(body, headers=self._headers())

    async def _control_set(self, request: web.Request) -> web.Response:
        try:
            payload = await request.json()
            self.set_fault(HttpFault.from_dict(dict(payload)))
        except (UsageError, ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"fault": asdict(self.fault)})

    async def _control_clear(self, request: web.Request) -> web.Response:
        self.clear_fault()
        return web.json_response({"fault": asdict(self.fault)})

    async def _control_stats(self, request: web.Request) -> web.Response:
        return web.json_response(asdict(self.statistics()))

    def _text_for(self, payload: dict[str, Any]) -> str:
        if self.reply is not None:
            return self.reply
        messages = payload.get("messages") or []
        last = str(messages[-1].get("content", "")) if messages else str(payload.get("prompt", ""))
        return f"{self.name} says: {last[:200]}"

    def usage_for(self, payload: dict[str, Any], text: str) -> tuple[int, int]:
        """The (prompt, completion) tokens this upstream bills for ``payload``."""
        out = len(text.split()) if self.completion_tokens is None else self.completion_tokens
        cap = payload.get("max_completion_tokens", payload.get("max_tokens"))
        if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0:
            out = min(out, cap)
        return self.prompt_tokens, out

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            payload = await request.json()
        except ValueError:
            self._count("bad_request")
            return web.json_response(
                {"error": {"message": "body is not JSON", "type": "invalid_request_error"}},
                status=400,
                headers=self._headers(),
            )
        fault = self._take_fault()
        if fault is not None and fault.first_byte_delay_s > 0:
            await asyncio.sleep(fault.first_byte_delay_s)
        if fault is not None and fault.status is not None:
            self._count(f"status_{fault.status}")
            headers = self._headers()
            if fault.retry_after is not None:
                headers["Retry-After"] = f"{fault.retry_after:g}"
            err_type = "rate_limit_error" if fault.status == 429 else "server_error"
            return web.json_response(
                {"error": {"message": f"injected {fault.status}", "type": err_type}},
                status=fault.status,
                headers=headers,
            )
        if fault is not None and fault.malformed_body:
            self._count("malformed_body")
            return web.Response(
                text='{"id": "chatcmpl-x", "choices": [{"message": ',
                content_type="application/json",
                headers=self._headers(),
            )
        text = self._text_for(payload)
        created = int(time.time())
        rid = f"chatcmpl-{self._rng.getrandbits(48):012x}"
        if payload.get("stream"):
            options = payload.get("stream_options")
            usage = None
            if isinstance(options, dict) and options.get("include_usage") and not self.omit_usage:
                usage = self.usage_for(payload, text)
            return await self._stream(request, rid, created, text, fault, usage=usage)
        self._count(_label(fault))
        prompt, completion = self.usage_for(payload, text)
        body = shapes.chat_completion(
            payload.get("model") or self.model,
            text,
            id=rid,
            created=created,
            prompt_tokens=prompt,
            completion_tokens=completion,
        )
        if self.omit_usage:
            del body["usage"]
        return web.json_response(body, headers=self._headers())

    async def _stream(
        self,
        request: web.Request,
        rid: str,
        created: int,
        text: str,
        fault: HttpFault | None,
        *,
        usage: tuple[int, int] | None = None,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={**self._headers(), "Content-Type": "text/event-stream"})
        await resp.prepare(request)
        pieces = [w + " " for w in text.split()] or [""]
        cut = fault.cut_stream_after if fault is not None else None
        delay = fault.chunk_delay_s if fault is not None else 0.0
        for i, piece in enumerate(pieces):
            if i and delay > 0:
                await asyncio.sleep(delay)
            if cut is not None and i >= cut:
                self._count("stream_cut")
                # Drop the connection mid-stream, as a vendor's load balancer does.
                if request.transport is not None:
                    request.transport.abort()
                return resp
            chunk = shapes.chat_chunk(self.model, {"content": piece}, id=rid, created=created)
            await resp.write(shapes.sse(chunk))
        final = shapes.sse(shapes.chat_chunk(self.model, {}, "stop", id=rid, created=created))
        if usage is not None:
            tail = shapes.chat_chunk(self.model, {}, id=rid, created=created)
            tail["choices"] = []
            tail["usage"] = {
                "prompt_tokens": usage[0],
                "completion_tokens": usage[1],
                "total_tokens": sum(usage),
            }
            final += shapes.sse(tail)
        # Counted before the last write: a client that has read [DONE] may ask at once.
        self._count(_label(fault))
        await resp.write(final + b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


class HttpFaultInjection(Fault):
    """A fault on a running ``FaultyUpstream``: inject sets it, revert clears it."""

    kind = "http.fault"

    def __init__(
        self,
        upstream: FaultyUpstream,
        fault: HttpFault,
        *,
        events: Emit | None = None,
        subject: str = "",
    ) -> None:
        super().__init__(events=events, subject=subject or upstream.name)
        self.upstream = upstream
        self.fault = fault

    def describe(self) -> dict[str, Any]:
        return {"upstream": self.upstream.url, **{k: v for k, v in asdict(self.fault).items() if v}}

    def _inject(self) -> dict[str, Any]:
        self.upstream.set_fault(self.fault)
        return {}

    def _revert(self) -> dict[str, Any]:
        self.upstream.clear_fault()
        return {}


def main(argv: list[str] | None = None) -> int:
    """Run the upstream as its own process; prints its URL on the first line."""
    parser = argparse.ArgumentParser(prog="python -m bastion.drill.faults.http")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="stand-in")
    parser.add_argument("--model", default="stand-in-model")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    upstream = FaultyUpstream(name=args.name, model=args.model, port=args.port, seed=args.seed)
    upstream.start()
    print(upstream.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        upstream.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
