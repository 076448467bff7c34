"""Gateway behaviour over real sockets: deadline propagation, the retry budget under a
total outage, queue-then-503 with Retry-After when every backend is out, the events it
writes (dep.used once per backend, ejections, overload episodes), a stream bounded by its
deadline to its end, and SSE error events on their own lines."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from bastion.drill.faults.http import FaultyUpstream
from bastion.events import EventLog, EventWriter
from bastion.manifest import GatewayPolicy
from bastion.serve import Gateway, GatewayThread, UpstreamSpec
from tests.helpers import served


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _post(
    url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(url + "/v1/chat/completions", json=body, headers=headers) as r,
    ):
        return r.status, dict(r.headers), await r.text()


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A backend that records each request's headers and body (an aiohttp app in a thread)."""
    seen: list[dict[str, str]] = []

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append({**dict(request.headers), "_model": str(body.get("model"))})
        return web.json_response({"id": "x", "object": "chat.completion", "choices": []})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    with served(app) as url:
        yield url, seen


def test_deadline_and_model_name_reach_the_backend_auth_does_not(
    recorder: tuple[str, list[dict[str, str]]], tmp_path: Path
) -> None:
    url, seen = recorder
    sink = EventWriter.in_state_dir(tmp_path)
    gw = Gateway("svc", GatewayPolicy(timeout_ms=2000), events=sink)
    gw.add_upstream(
        UpstreamSpec(
            name="b", url=url, group="vendor-x", model_name="vendor-x", api_key="sk-backend"
        )
    )
    with GatewayThread(gw) as thread:
        for _ in range(3):
            thread.call(_post(thread.url, {"model": "svc", "messages": []}))
        status, _, _ = thread.call(
            _post(
                thread.url,
                {"model": "svc", "messages": []},
                {"x-bastion-deadline-ms": "300", "Authorization": "Bearer client-secret"},
            )
        )
    assert status == 200
    got = seen[-1]
    assert 0 < int(got["x-bastion-deadline-ms"]) <= 300
    assert got["_model"] == "vendor-x"
    assert got["Authorization"] == "Bearer sk-backend"
    sink.close()
    with EventLog.in_state_dir(tmp_path) as log:
        used = log.query(kind="dep.used")
        assert len(used) == 1  # once per backend per gateway process, not per request
        assert used[0].subject == "svc"
        assert used[0].data["target"] == "vendor-x"
        assert used[0].data["via"] == "backend"
        assert "sk-backend" not in json.dumps([e.data for e in log.query()])


def test_retry_budget_bounds_load_during_a_total_outage(seed: int) -> None:
    gw = Gateway("svc", GatewayPolicy(timeout_ms=2000, retry_budget=0.2), probe_interval_s=30)
    ups = [FaultyUpstream(name=f"b{i}", seed=seed + i).start() for i in range(3)]
    try:
        for i, up in enumerate(ups):
            up.set_fault(status=500)
            gw.add_upstream(UpstreamSpec(name=f"b{i}", url=up.url))
        # No ejection, so every request may want up to 3 attempts; only the budget stops it.
        for u in gw.pool.upstreams.values():
            u.breaker.consecutive = 10**6
            u.breaker.min_requests = 10**6
        with GatewayThread(gw) as thread:

            async def go() -> list[int]:
                out = []
                async with aiohttp.ClientSession() as s:
                    for _ in range(200):
                        async with s.post(
                            thread.url + "/v1/chat/completions", json={"model": "m", "messages": []}
                        ) as r:
                            await r.read()
                            out.append(r.status)
                return out

            codes = thread.call(go(), timeout=60)
            attempts = thread.run(
                lambda: sum(
                    gw.metrics.registry.get_sample_value(
                        "bastion_gateway_backend_requests_total",
                        {"service": "svc", "backend": f"b{i}"},
                    )
                    or 0.0
                    for i in range(3)
                )
            )
    finally:
        for up in ups:
            up.stop()
    assert set(codes) == {502}  # a clear upstream error, never our own 500
    retries = attempts - 200
    # ratio * requests + the 10/s floor over the run (a few seconds) + the balance cap
    assert retries <= 0.2 * 200 + 10 * 5 + 20, retries


def test_every_backend_out_queues_briefly_then_503_with_retry_after(tmp_path: Path) -> None:
    sink = EventWriter.in_state_dir(tmp_path)
    gw = Gateway(
        "svc",
        GatewayPolicy(timeout_ms=2000, queue_timeout_ms=100),
        events=sink,
        probe_interval_s=30,
    )
    for i in range(2):
        gw.add_upstream(
            UpstreamSpec(name=f"dead{i}", url=f"http://127.0.0.1:{_closed_port()}", group="dead")
        )
    with GatewayThread(gw) as thread:
        first = thread.call(_post(thread.url, {"messages": []}))
        t0 = time.monotonic()
        second = thread.call(_post(thread.url, {"messages": []}))
        waited = time.monotonic() - t0
    sink.close()
    # The first request finds them refusing (502), or the first probe got there first (503).
    assert first[0] in (502, 503)
    assert json.loads(first[2])["error"]["message"].startswith("service svc: ")
    assert second[0] == 503
    assert int(second[1]["Retry-After"]) >= 1
    assert waited < 2.0  # it did not sit out the whole 2 s request timeout
    log = EventLog.in_state_dir(tmp_path)
    kinds = [e.kind for e in log.query()]
    assert kinds.count("serve.backend.ejected") == 2
    assert "serve.overload.started" in kinds
    log.close()


def test_hedge_to_another_backend_wins_and_the_slow_attempt_is_cancelled(seed: int) -> None:
    gw = Gateway("svc", GatewayPolicy(timeout_ms=3000, hedge="20ms"), probe_interval_s=30)
    with (
        FaultyUpstream(name="slow", seed=seed) as slow,
        FaultyUpstream(name="fast", seed=seed) as fast,
    ):
        slow.set_fault(first_byte_delay_s=2.0)
        gw.add_upstream(UpstreamSpec(name="slow", url=slow.url))
        gw.add_upstream(UpstreamSpec(name="fast", url=fast.url))
        with GatewayThread(gw) as thread:
            answers = [
                thread.call(_post(thread.url, {"model": "m", "messages": []})) for _ in range(10)
            ]
            stats = thread.run(gw.statistics)
            hedges = gw.metrics.registry.get_sample_value(
                "bastion_gateway_hedges_total", {"service": "svc", "backend": "fast"}
            )
    assert [a[0] for a in answers] == [200] * 10
    # Every answer came from fast: nobody waited out slow's 2 s first byte.
    assert {a[1]["x-bastion-backend"] for a in answers} == {"fast"}
    assert hedges is not None
    assert hedges >= 1  # P2C picked the slow one at least once (its score starts at 0)
    slow_stats = next(u for u in stats.pool.upstreams if u.name == "slow")
    assert slow_stats.outstanding == 0  # the losing attempt was cancelled, not left running


def _events(raw: bytes) -> list[bytes]:
    """The SSE events of a stream, each checked to be whole ``data:`` lines."""
    events = [e for e in raw.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]
    for event in events:
        for line in event.strip(b"\n").split(b"\n"):
            assert line.startswith(b"data: "), (line[:80], raw[-300:])
    return events


async def _stream(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, float]:
    t0 = time.monotonic()
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            url + "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True},
            headers=headers,
        ) as r,
    ):
        raw = await r.read()
        return r.status, raw, time.monotonic() - t0


def test_a_stream_is_bounded_by_the_deadline_to_its_end(seed: int) -> None:
    """A backend that trickles a long answer (100 words, one per 50 ms: 5 s) past the
    request's 500 ms deadline is cut at the deadline, and the client gets a well-formed
    SSE error event, not a stream that outlives its deadline."""
    words = " ".join(f"w{i}" for i in range(100))
    policy = GatewayPolicy(timeout_ms=5000, stall_timeout_ms=2000)
    gw = Gateway("svc", policy, probe_interval_s=30)
    with FaultyUpstream(name="slow", seed=seed, reply=words) as slow:
        slow.set_fault(chunk_delay_s=0.05)
        gw.add_upstream(UpstreamSpec(name="slow", url=slow.url))
        with GatewayThread(gw) as thread:
            status, raw, took = thread.call(
                _stream(thread.url, {"x-bastion-deadline-ms": "500"}), timeout=30
            )
            client = openai.OpenAI(
                base_url=thread.url + "/v1", api_key="x", max_retries=0, timeout=30
            )
            chunks = client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                extra_headers={"x-bastion-deadline-ms": "500"},
            )
            with pytest.raises(openai.APIError, match="deadline"):
                for _ in chunks:
                    pass
            stats = thread.run(gw.statistics)
    assert status == 200
    assert took < 2.5, f"the stream ran {took:.2f} s, past its 0.5 s deadline"
    events = _events(raw)
    assert len(events) > 1  # some words came before the deadline
    last = json.loads(events[-1].removeprefix(b"data: "))
    assert last["error"]["type"] == "stream_interrupted"
    assert "deadline" in last["error"]["message"]
    assert b"[DONE]" not in raw
    backend = stats.pool.upstreams[0]
    assert backend.outstanding == 0
    assert backend.limit.inflight == 0
    assert not backend.needs_probe  # slow, not dead: a soft failure, no hard ejection


def test_a_stream_cut_mid_line_ends_with_an_error_event_on_its_own_line() -> None:
    """The backend's answer ends in the middle of an SSE line: the gateway forwards whole
    lines only, so its error event is never glued onto the partial one."""

    async def chat(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        chunk = {"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": None}]}
        await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await resp.write(b'data: {"choices": [{"index": 0, "del')
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    with served(app) as url:
        gw = Gateway("svc", GatewayPolicy(timeout_ms=3000), probe_interval_s=30)
        gw.add_upstream(UpstreamSpec(name="b", url=url))
        with GatewayThread(gw) as thread:
            status, raw, _ = thread.call(_stream(thread.url), timeout=30)
    assert status == 200
    events = _events(raw)
    assert len(events) == 2, raw
    assert json.loads(events[0].removeprefix(b"data: "))["choices"][0]["delta"] == {"content": "a"}
    error = json.loads(events[1].removeprefix(b"data: "))["error"]
    assert "ended without [DONE]" in error["message"]
    assert "cannot resume" in error["message"]
