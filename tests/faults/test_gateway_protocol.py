"""Backends that break the OpenAI protocol are failing backends, never a success.

A stand-in vendor on a real socket answers 200 with what hypothesis generates: an HTML
page, a body that is not JSON or not the shape of a chat completion, a stream that is not
SSE, whose events are malformed, or which ends without its finish. A healthy fallback
sits beside it. The real ``openai`` client (``max_retries=0``) must get the fallback's
correct answer every time, and the bad backend's error and breaker counts must move.
A violation after the stream's first content reached the client ends it with a
well-formed SSE error event, which the client raises as ``APIError``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import openai
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.manifest import GatewayPolicy
from bastion.serve import Gateway, GatewayThread, UpstreamSpec, shapes, standin
from tests.helpers import served


@dataclass
class _Script:
    """What the bad vendor answers next: a content type and the body's pieces."""

    content_type: str = "application/json"
    pieces: list[bytes] = field(default_factory=list)
    served: int = 0
    gate: threading.Event | None = None  # set: send the pieces after the first


@pytest.fixture(scope="module")
def vendors() -> Iterator[tuple[str, str, _Script]]:
    script = _Script()

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        script.served += 1
        resp = web.StreamResponse(status=200, headers={"Content-Type": script.content_type})
        await resp.prepare(request)
        for i, piece in enumerate(script.pieces):
            if i == 1 and script.gate is not None:
                await asyncio.to_thread(script.gate.wait, 10)
            await resp.write(piece)
        await resp.write_eof()
        return resp

    async def models(request: web.Request) -> web.Response:
        return web.json_response(shapes.model_list(["m"], owned_by="bad"))

    bad = web.Application()
    bad.router.add_post("/v1/chat/completions", chat)
    bad.router.add_get("/v1/models", models)
    with served(bad) as bad_url, served(standin.make_app(name="good")) as good_url:
        yield bad_url, good_url, script


def _gateway(bad_url: str, good_url: str) -> Gateway:
    gw = Gateway("svc", GatewayPolicy(timeout_ms=5000), probe_interval_s=30)
    gw.add_upstream(UpstreamSpec(name="bad", url=bad_url))  # the primary
    gw.add_upstream(UpstreamSpec(name="good", url=good_url, tier=1))  # the idle fallback
    return gw


# -- generated violations ---------------------------------------------------------------
_GOOD = shapes.chat_completion("m", "hello")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _not_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return True
    return False


def _mutations() -> st.SearchStrategy[dict[str, Any]]:
    """A chat completion with one thing the protocol requires broken."""

    def drop_choices(v: Any) -> dict[str, Any]:
        return {k: x for k, x in _GOOD.items() if k != "choices"} | (
            {} if v is None else {"choices": v}
        )

    def with_message(v: Any) -> dict[str, Any]:
        choice = {"index": 0, "finish_reason": "stop"} | ({} if v is None else {"message": v})
        return {**_GOOD, "choices": [choice]}

    def with_content(v: Any) -> dict[str, Any]:
        message = {"role": "assistant", "content": v}
        return {**_GOOD, "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}

    not_list = json_values.filter(lambda v: not isinstance(v, list))
    not_dict = json_values.filter(lambda v: not isinstance(v, dict))
    content = st.integers() | st.booleans() | st.lists(st.integers(), max_size=2) | st.none()
    return st.one_of(
        not_list.map(drop_choices),
        st.lists(not_dict, min_size=1, max_size=2).map(drop_choices),
        not_dict.map(with_message),
        content.map(with_content),
        st.text(max_size=20).map(lambda m: shapes.error(m, "server_error", 500)),
    )


def _body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


_HTML = b"<!doctype html><html><body><h1>502 Bad Gateway</h1></body></html>"
unary_violations = st.one_of(
    # Not JSON at all, whatever the content type says.
    st.tuples(
        st.sampled_from(["text/html", "text/plain", "application/octet-stream"]),
        st.sampled_from([_HTML, b"", _body(_GOOD)]) | st.binary(max_size=40),
    ),
    st.tuples(st.just("application/json"), st.binary(max_size=40).filter(_not_json)),
    # A chat completion cut short.
    st.integers(0, len(_body(_GOOD)) - 1).map(lambda n: ("application/json", _body(_GOOD)[:n])),
    # JSON, but not an object.
    st.tuples(
        st.just("application/json"),
        json_values.filter(lambda v: not isinstance(v, dict)).map(_body),
    ),
    # An object, but not a chat completion.
    st.tuples(st.just("application/json"), _mutations().map(_body)),
)


def _sse(obj: Any) -> bytes:
    return shapes.sse(obj)


_ROLE = st.sampled_from(
    [
        _sse(shapes.chat_chunk("m", {"role": "assistant"})),
        _sse(shapes.chat_chunk("m", {"role": "assistant", "content": ""})),
        b": keep-alive\n\n",
    ]
)
_FINISH = _sse(shapes.chat_chunk("m", {}, "stop"))
_bad_event = st.one_of(
    st.text(alphabet="abcxyz <>{}", min_size=1, max_size=20).map(lambda t: t.encode() + b"\n\n"),
    st.binary(min_size=1, max_size=30)
    .filter(_not_json)
    .map(lambda b: b"data: " + b.replace(b"\n", b"") + b"\n\n"),
    json_values.filter(lambda v: not isinstance(v, dict)).map(_sse),
    _mutations().map(_sse),  # a chat.completion object is not a chunk either
    st.text(max_size=10).map(lambda m: _sse(shapes.error(m, "server_error", 500))),
    st.just(b"data: [DONE]\n\n"),  # done before any finish
)
stream_violations = st.one_of(
    # Not an event stream.
    st.tuples(
        st.sampled_from(["text/html", "application/json", "text/plain"]),
        st.sampled_from([[_HTML], [_body(_GOOD)], [b"data: [DONE]\n\n"]]),
    ),
    # An event stream that is empty, malformed before its first token, or ends unfinished.
    st.tuples(
        st.just("text/event-stream"),
        st.one_of(
            st.lists(_ROLE, max_size=2).map(lambda r: r),
            st.tuples(st.lists(_ROLE, max_size=2), _bad_event).map(lambda t: [*t[0], t[1]]),
            st.lists(_ROLE, max_size=2).map(lambda r: [*r, _FINISH]),
            st.lists(_ROLE, max_size=2).map(lambda r: [*r, _FINISH, b'data: {"choi']),
        ),
    ),
)


def _counts(gw: Gateway) -> tuple[float, int]:
    up = gw.pool.upstreams["bad"]
    return up.metrics.errors.value, up.statistics().breaker.window_failures


def test_a_whole_answer_that_breaks_the_protocol_is_retried_on_the_fallback(
    vendors: tuple[str, str, _Script], seed: int
) -> None:
    bad_url, good_url, script = vendors

    @hypothesis.seed(seed)
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(unary_violations)
    def check(violation: tuple[str, bytes]) -> None:
        script.content_type, body = violation
        script.pieces = [body]
        script.served = 0
        with GatewayThread(_gateway(bad_url, good_url)) as thread:
            client = openai.OpenAI(base_url=thread.url + "/v1", api_key="x", max_retries=0)
            answer = client.chat.completions.create(model="svc", messages=[])
            assert answer.choices[0].message.content == "ok", answer
            assert script.served == 1  # the bad vendor was asked first
            errors, failures = thread.run(lambda: _counts(thread.gateway))
        assert errors >= 1
        assert failures >= 1

    check()


def test_a_stream_that_breaks_the_protocol_before_its_first_token_is_retried(
    vendors: tuple[str, str, _Script], seed: int
) -> None:
    bad_url, good_url, script = vendors

    @hypothesis.seed(seed)
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(stream_violations)
    def check(violation: tuple[str, list[bytes]]) -> None:
        script.content_type, script.pieces = violation
        script.served = 0
        with GatewayThread(_gateway(bad_url, good_url)) as thread:
            client = openai.OpenAI(base_url=thread.url + "/v1", api_key="x", max_retries=0)
            stream = client.chat.completions.create(model="svc", messages=[], stream=True)
            chunks = list(stream)
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text == "ok from good"
            assert chunks[-1].choices[0].finish_reason == "stop"
            assert script.served == 1
            errors, failures = thread.run(lambda: _counts(thread.gateway))
        assert errors >= 1
        assert failures >= 1

    check()


def test_a_violation_after_the_first_token_ends_with_an_error_event(
    vendors: tuple[str, str, _Script], seed: int
) -> None:
    """Bytes reached the client: the stream cannot move, so it ends with the gateway's
    SSE error event on its own line (the client raises it), and the backend is charged."""
    bad_url, good_url, script = vendors

    @hypothesis.seed(seed)
    @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_bad_event, st.booleans())
    def check(bad: bytes, cut_mid_line: bool) -> None:
        script.content_type = "text/event-stream"
        first = _sse(shapes.chat_chunk("m", {"role": "assistant", "content": "he"}))
        if cut_mid_line:
            bad = bad[: max(1, len(bad) // 2)]
        script.pieces = [first, bad]
        script.gate = threading.Event()
        with GatewayThread(_gateway(bad_url, good_url)) as thread:
            client = openai.OpenAI(base_url=thread.url + "/v1", api_key="x", max_retries=0)
            stream = client.chat.completions.create(model="svc", messages=[], stream=True)
            # The first token reached the client before the vendor breaks the protocol.
            assert next(stream).choices[0].delta.content == "he"
            script.gate.set()
            with pytest.raises(openai.APIError) as raised:
                list(stream)
            script.gate = None
            assert "cannot resume" in raised.value.message
            errors, failures = thread.run(lambda: _counts(thread.gateway))
        assert errors >= 1
        assert failures >= 1

    check()
