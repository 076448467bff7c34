"""The gateway as an OpenAI client and a Prometheus scraper see it: the model routes,
error JSON for every refusal, ``n``, ``x-request-id``, metric negotiation, and one log
line per malformed request.

Real parts: the ``openai`` client, a stand-in vendor and the gateway each on a real
127.0.0.1 socket, raw sockets for malformed HTTP, prometheus_client's own parsers.
"""

from __future__ import annotations

import json
import logging
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from aiohttp import web
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from bastion import event_kinds as ek
from bastion.events import Relay
from bastion.manifest import GatewayPolicy
from bastion.serve import Gateway, GatewayThread, UpstreamSpec, shapes
from bastion.serve.standin import make_app
from tests.helpers import served

MESSAGES: Any = [{"role": "user", "content": "hello"}]


@pytest.fixture
def gateway() -> Iterator[GatewayThread]:
    with served(make_app(name="vendor")) as vendor_url:
        gw = Gateway("chat", GatewayPolicy(timeout_ms=5000), probe_interval_s=0.2)
        gw.add_upstream(UpstreamSpec(name="vendor", url=vendor_url, group="vendor"))
        with GatewayThread(gw) as thread:
            yield thread


def _client(thread: GatewayThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=thread.url + "/v1", api_key="x", max_retries=0)


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_models_list_and_retrieve_with_the_openai_client(gateway: GatewayThread) -> None:
    client = _client(gateway)
    listed = [m.id for m in client.models.list()]
    assert listed == ["chat"]
    model = client.models.retrieve("chat")
    assert (model.id, model.object, model.owned_by) == ("chat", "model", "bastion")
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("gpt-nothing")
    assert err.value.code == "model_not_found"
    assert "gpt-nothing" in err.value.message
    assert "'chat'" in err.value.message


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v1/nothing", 404), ("GET", "/v1/chat/completions", 405)],
)
def test_404_and_405_are_openai_error_json(
    gateway: GatewayThread, method: str, path: str, status: int
) -> None:
    request = urllib.request.Request(gateway.url + path, method=method)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == status
    assert err.value.headers["Content-Type"].startswith("application/json")
    body = json.loads(err.value.read())
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert path in body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"
    if status == 405:
        assert "POST" in err.value.headers["Allow"]


def test_the_openai_client_raises_not_found_for_an_unknown_route(gateway: GatewayThread) -> None:
    client = _client(gateway)
    with pytest.raises(openai.NotFoundError) as err:
        client.get("/nothing/here", cast_to=object)
    assert "no such route" in err.value.message


def test_n_above_one_is_refused_with_a_400_naming_n(gateway: GatewayThread) -> None:
    client = _client(gateway)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="chat", messages=MESSAGES, n=2)
    assert err.value.param == "n"
    assert "n=2" in err.value.message
    one = client.chat.completions.create(model="chat", messages=MESSAGES, n=1)
    assert len(one.choices) == 1


def test_request_id_is_echoed_or_made_and_logged(
    gateway: GatewayThread, caplog: pytest.LogCaptureFixture
) -> None:
    client = _client(gateway)
    caplog.set_level(logging.INFO, logger="bastion.access")
    given = client.chat.completions.with_raw_response.create(
        model="chat", messages=MESSAGES, extra_headers={"x-request-id": "trace-42"}
    )
    assert given.headers["x-request-id"] == "trace-42"
    made = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    made_id = made.headers["x-request-id"]
    assert len(made_id) == 32
    assert int(made_id, 16) >= 0
    stream = client.chat.completions.with_raw_response.create(
        model="chat", messages=MESSAGES, stream=True, extra_headers={"x-request-id": "s-1"}
    )
    assert stream.headers["x-request-id"] == "s-1"
    assert "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)
    # A header that is not a plain token is not echoed into the response or the log.
    status, headers, _ = _get(gateway.url + "/healthz", {"x-request-id": "a b\tc"})
    assert status == 200
    assert headers["x-request-id"] != "a b\tc"
    access = [r.getMessage() for r in caplog.records if r.name == "bastion.access"]
    assert any("request_id=trace-42" in line and "POST /v1/chat" in line for line in access)
    assert any(f"request_id={made_id}" in line for line in access)


def _families(text: str, parse: Any) -> dict[str, Any]:
    return {f.name: f for f in parse(text)}


def test_metrics_negotiate_text_and_openmetrics(gateway: GatewayThread) -> None:
    client = _client(gateway)
    for _ in range(3):
        client.chat.completions.create(model="chat", messages=MESSAGES)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")

    status, headers, body = _get(gateway.url + "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = _families(body.decode(), parse_text)

    status, headers, body = _get(
        gateway.url + "/metrics",
        {"Accept": "application/openmetrics-text; version=1.0.0; charset=utf-8"},
    )
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    om = _families(body.decode(), parse_openmetrics)

    for families in (text, om):
        duration = families["bastion_gateway_request_duration_seconds"]
        counts = {
            (s.labels["route"], s.labels["code"]): s.value
            for s in duration.samples
            if s.name.endswith("_count")
        }
        assert counts[("/v1/chat/completions", "200")] == 3
        assert counts[("/v1/models/{model}", "404")] == 1
        queue = families["bastion_gateway_queue_depth"]
        assert [s.value for s in queue.samples] == [0.0]
        build = families["bastion_build_info"]
        assert build.samples[0].labels["version"]
        assert any(name.startswith("process_") for name in families)


def test_malformed_http_logs_one_line_without_traceback(
    gateway: GatewayThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bastion.http")
    with socket.create_connection(("127.0.0.1", gateway.gateway.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        answer = sock.recv(65536)
    assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")
    lines = [r for r in caplog.records if r.name == "bastion.http"]
    assert lines, "nothing was logged for a malformed request"
    for record in lines:
        assert record.exc_info is None
        assert "\n" not in record.getMessage()
    assert any("Error handling request" in r.getMessage() for r in lines)


def test_request_id_reaches_the_backend() -> None:
    seen: list[str | None] = []

    async def chat(request: web.Request) -> web.Response:
        seen.append(request.headers.get("x-request-id"))
        return web.json_response(shapes.chat_completion("m", "ok"))

    async def models(request: web.Request) -> web.Response:
        return web.json_response(shapes.model_list(["m"], owned_by="test"))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    with served(app) as backend_url:
        gw = Gateway("chat", GatewayPolicy(timeout_ms=5000), probe_interval_s=0.2)
        gw.add_upstream(UpstreamSpec(name="b", url=backend_url, group="b"))
        with GatewayThread(gw) as thread:
            client = _client(thread)
            client.chat.completions.create(
                model="chat", messages=MESSAGES, extra_headers={"x-request-id": "end-to-end-7"}
            )
            raw = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    assert seen == ["end-to-end-7", raw.headers["x-request-id"]]


def test_an_ejection_a_request_caused_names_its_request_id() -> None:
    recorded: list[tuple[str, dict[str, Any]]] = []
    events = Relay(lambda kind, _subject, _at, data: recorded.append((kind, data)))

    async def cut(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.abort()  # the connection resets before any answer
        return web.Response()

    async def models(request: web.Request) -> web.Response:
        return web.json_response(shapes.model_list(["m"], owned_by="test"))

    flaky = web.Application()
    flaky.router.add_post("/v1/chat/completions", cut)
    flaky.router.add_get("/v1/models", models)
    with served(flaky) as flaky_url, served(make_app(name="vendor")) as vendor_url:
        gw = Gateway("chat", GatewayPolicy(timeout_ms=5000), events=events)
        gw.add_upstream(UpstreamSpec(name="flaky", url=flaky_url, group="flaky", tier=0))
        gw.add_upstream(UpstreamSpec(name="vendor", url=vendor_url, group="v", tier=1))
        with GatewayThread(gw) as thread:
            raw = _client(thread).chat.completions.with_raw_response.create(
                model="chat", messages=MESSAGES, extra_headers={"x-request-id": "ev-1"}
            )
            assert raw.headers["x-bastion-backend"] == "vendor"
    ejected = [data for kind, data in recorded if kind == ek.SERVE_BACKEND_EJECTED]
    assert ejected, recorded
    assert ejected[0]["backend"] == "flaky"
    assert ejected[0]["request_id"] == "ev-1"
    started = [data for kind, data in recorded if kind == ek.SERVE_STARTED]
    assert "request_id" not in started[0]  # nothing is tagged outside a request
