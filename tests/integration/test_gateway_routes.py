"""The gateway's routes, end to end: real `openai` client, real sockets, real processes.

Two stand-in vendor processes behind one gateway; chat (plain and streamed), embeddings,
models, metrics, status; and bad requests that must get a clear 4xx, never a 500.
"""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
from collections.abc import Iterator

import aiohttp
import openai
import pytest

from bastion.manifest import GatewayPolicy
from bastion.serve import Gateway, GatewayThread, UpstreamSpec, spawn_server, stop_server


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayThread]:
    procs: list[subprocess.Popen[str]] = []
    try:
        gw = Gateway("digits", GatewayPolicy(timeout_ms=2000, hedge="p95"))
        for i in range(2):
            proc, port = spawn_server(["-m", "bastion.serve.standin", "--name", f"v{i}"])
            procs.append(proc)
            gw.add_upstream(
                UpstreamSpec(
                    name=f"v{i}",
                    url=f"http://127.0.0.1:{port}",
                    group="vendor",
                    model_name="vendor-model" if i else None,
                )
            )
        with GatewayThread(gw) as thread:
            yield thread
    finally:
        for proc in procs:
            stop_server(proc)


def test_openai_client_chat_stream_embeddings_models(gateway: GatewayThread) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    seen = set()
    for _ in range(20):
        reply = client.chat.completions.create(
            model="digits", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content == "ok"
        seen.add(reply.model)
    # Model names are translated per backend: v1 sees vendor-model, v0 the client's name.
    assert seen == {"digits", "vendor-model"}
    chunks = client.chat.completions.create(
        model="digits", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("ok from v")
    emb = client.embeddings.create(model="digits", input=["a", "b"])
    assert len(emb.data) == 2
    assert [m.id for m in client.models.list()] == ["digits"]


def _raw(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        return sock.recv(65536)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/chat/completions", b"{not json", 400),
        ("POST", "/v1/chat/completions", b"[1, 2]", 400),
        ("POST", "/v1/chat/completions", b"", 400),
        ("POST", "/v1/chat/completions", b"\xff\xfe", 400),
        ("POST", "/v1/chat/completions", b"[" * 100_000, 400),  # nesting past the parser's limit
        ("GET", "/v1/nothing-here", b"", 404),
        ("POST", "/v1/models", b"{}", 405),
        ("POST", "/v1/embeddings", b"x" * (5 * 1024 * 1024), 413),
    ],
)
def test_bad_requests_get_a_clear_4xx(
    gateway: GatewayThread, method: str, path: str, body: bytes, status: int
) -> None:
    async def go() -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as s,
            s.request(
                method,
                gateway.url + path,
                data=io.BytesIO(body),
                headers={"Content-Type": "application/json"},
            ) as r,
        ):
            return r.status, await r.text()

    got, text = gateway.call(go())
    assert got == status, text
    if got in (400, 413):
        assert "error" in json.loads(text)


def test_bad_deadline_header_is_400(gateway: GatewayThread) -> None:
    async def go() -> int:
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                gateway.url + "/v1/chat/completions",
                json={"messages": []},
                headers={"x-bastion-deadline-ms": "soon"},
            ) as r,
        ):
            return r.status

    assert gateway.call(go()) == 400


def test_header_injection_is_refused_not_500(gateway: GatewayThread) -> None:
    port = gateway.gateway.port
    reply = _raw(
        port,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Evil: a\rb\r\n"
        b"Content-Length: 2\r\n\r\n{}",
    )
    assert re.match(rb"HTTP/1\.[01] 4", reply), reply[:80]
    reply = _raw(port, b"GET /v1/models\x00 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert re.match(rb"HTTP/1\.[01] 4", reply), reply[:80]


def test_metrics_and_status(gateway: GatewayThread) -> None:
    async def go() -> tuple[str, dict[str, object]]:
        async with aiohttp.ClientSession() as s:
            async with s.get(gateway.url + "/metrics") as r:
                metrics = await r.text()
            async with s.get(gateway.url + "/bastion/status") as r:
                status = await r.json()
        return metrics, status

    metrics, status = gateway.call(go())
    assert "bastion_gateway_backend_requests_total" in metrics
    assert "bastion_gateway_breaker_state" in metrics
    assert status["service"] == "digits"
