"""Hypothesis fuzz of the gateway's HTTP API: any body, header or path a client can send
gets a clear answer (2xx, or a 4xx with an error object), never a 500."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.manifest import GatewayPolicy
from bastion.serve import Gateway, GatewayThread, UpstreamSpec, spawn_server, stop_server


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayThread]:
    proc: subprocess.Popen[str] | None = None
    try:
        proc, port = spawn_server(["-m", "bastion.serve.standin"])
        gw = Gateway("svc", GatewayPolicy(timeout_ms=2000))
        gw.add_upstream(UpstreamSpec(name="b", url=f"http://127.0.0.1:{port}"))
        with GatewayThread(gw) as thread:
            yield thread
    finally:
        if proc is not None:
            stop_server(proc)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30)


async def _send(url: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.post(url + path, data=body, headers=headers) as r:
        return r.status, await r.text()


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(
        [
            "/v1/chat/completions",
            "/v1/embeddings",
            "/v1/predict",
            "/v1/completions",
            "/v1/x",
            "/metrics",
        ]
    ),
    body=st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64)),
    deadline=st.one_of(st.none(), header_text),
    priority=st.one_of(st.none(), header_text),
)
def test_no_input_makes_a_500(
    gateway: GatewayThread, path: str, body: bytes, deadline: str | None, priority: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if deadline is not None:
        headers["x-bastion-deadline-ms"] = deadline
    if priority is not None:
        headers["x-bastion-priority"] = priority
    status, text = gateway.call(_send(gateway.url, path, body, headers))
    assert status != 500, text
    assert status < 500 or status in (502, 503, 504), (status, text)
    if 400 <= status < 500 and status not in (404, 405):
        assert "error" in json.loads(text)
