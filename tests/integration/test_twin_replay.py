"""Recorded load (issue 15, part 4: "It replays synthetic or recorded load").

Real traffic through a real gateway is recorded by the recording proxy; the recording is
replayed on a second (the twin's) real gateway, whose backend sees the same requests, in
the same order and of the same shapes. What is recorded holds no header, no query string
and (unless asked) no body; an asked-for body has its secrets redacted.
"""

from __future__ import annotations

import http.client
import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bastion.errors import UsageError
from bastion.manifest import GatewayPolicy
from bastion.serve import Gateway, GatewayThread, UpstreamSpec
from bastion.twin import Recorder, read_recording, replay_recorded
from bastion.twin._record import shape_of
from tests.helpers import served

SECRET = "sk-live-0123456789abcdefghijklmnop"


@contextmanager
def _backend(seen: list[tuple[str, dict[str, Any]]]) -> Iterator[str]:
    """A backend that answers everything and notes each POST's path and body shape."""

    async def any_route(request: web.Request) -> web.Response:
        body = await request.read()
        if request.method == "POST":
            seen.append((request.path, shape_of(request.path, body)))
        return web.json_response({"data": [], "outputs": [0], "choices": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", any_route)
    with served(app) as url:
        yield url


@contextmanager
def _gateway(backend: str) -> Iterator[str]:
    gw = Gateway("svc", GatewayPolicy(timeout_ms=5000), probe_interval_s=30)
    gw.add_upstream(UpstreamSpec(name="b0", url=backend))
    with GatewayThread(gw) as thread:
        yield thread.url


def _traffic(rng: random.Random) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Mixed requests of several shapes, in a seeded order."""
    out: list[tuple[str, str, dict[str, Any] | None]] = []
    for i in range(24):
        kind = rng.choice(["chat", "chat-long", "predict", "embed", "models"])
        if kind == "chat":
            body = {"model": "small", "messages": [{"role": "user", "content": f"hi {i}"}]}
            out.append(("POST", "/v1/chat/completions", body))
        elif kind == "chat-long":
            msgs = [{"role": "user", "content": "x" * rng.randrange(50, 400)} for _ in range(3)]
            out.append(("POST", "/v1/chat/completions", {"model": "large", "messages": msgs}))
        elif kind == "predict":
            width = rng.choice([4, 8, 16])
            out.append(("POST", "/v1/predict", {"inputs": [rng.random() for _ in range(width)]}))
        elif kind == "embed":
            out.append(("POST", "/v1/embeddings", {"model": "emb", "input": "some text " * 5}))
        else:
            out.append(("GET", "/v1/models", None))
    return out


def _send(url: str, requests: list[tuple[str, str, dict[str, Any] | None]]) -> None:
    host, _, port = url.removeprefix("http://").rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        for method, path, body in requests:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
            conn.request(method, f"{path}?api_key={SECRET}", body=data, headers=headers)
            answer = conn.getresponse()
            answer.read()
            assert answer.status == 200, (method, path, answer.status)
    finally:
        conn.close()


def test_recorded_production_load_replays_on_the_twin_in_order_and_shape(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    traffic = _traffic(rng)
    recording = tmp_path / "load.jsonl"
    prod_seen: list[tuple[str, dict[str, Any]]] = []
    with _backend(prod_seen) as backend, _gateway(backend) as prod:
        with Recorder(prod, recording).start() as rec:
            _send(rec.url, traffic)
        assert rec.rows == len(traffic)
    text = recording.read_text()
    assert SECRET not in text  # neither the header nor the query string was recorded
    assert "hi 0" not in text
    assert "xxxx" not in text
    assert recording.stat().st_mode & 0o777 == 0o600
    loaded = read_recording(recording)
    assert [(r["method"], r["path"]) for r in loaded.rows] == [(m, p) for m, p, _ in traffic]
    assert [r["status"] for r in loaded.rows] == [200] * len(traffic)
    times = [r["t"] for r in loaded.rows]
    assert times == sorted(times)

    twin_seen: list[tuple[str, dict[str, Any]]] = []
    with _backend(twin_seen) as backend, _gateway(backend) as twin:
        stats = replay_recorded(
            twin.removeprefix("http://"), loaded, speed=4.0, seed=seed, workers=1
        )
    assert (stats.sent, stats.ok, stats.failed) == (len(traffic), len(traffic), 0)
    # the twin's backend got what production's got: the same POSTs, order and shapes
    # (model, messages, inputs, and the body's size within the filler's few bytes)
    assert [p for p, _ in twin_seen] == [p for p, _ in prod_seen]
    for (_, want), (_, got) in zip(prod_seen, twin_seen, strict=True):
        assert {k: v for k, v in got.items() if k != "bytes"} == {
            k: v for k, v in want.items() if k != "bytes"
        }
        if "inputs" not in want:  # filler text makes up the size
            assert abs(got["bytes"] - want["bytes"]) <= 2, (want, got)


def test_bodies_are_recorded_only_when_asked_and_then_redacted(tmp_path: Path) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    body = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "api_key": SECRET}
    recording = tmp_path / "with-bodies.jsonl"
    with (
        _backend(seen) as backend,
        _gateway(backend) as prod,
        Recorder(prod, recording, bodies=True).start() as rec,
    ):
        _send(rec.url, [("POST", "/v1/chat/completions", body)])
    text = recording.read_text()
    assert SECRET not in text
    (row,) = read_recording(recording).rows
    assert row["body"]["messages"][0]["content"] == "hello"
    assert row["body"]["api_key"] != SECRET


def test_a_file_that_is_not_a_recording_is_refused_naming_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "something else"}\n')
    with pytest.raises(UsageError, match=r"bad.jsonl:1: not a load recording"):
        read_recording(bad)
    bad.write_text('{"format": "bastion.load/1"}\n{"t": 0, "method": "POST"}\n')
    with pytest.raises(UsageError, match=r"bad.jsonl:2: a row needs t"):
        read_recording(bad)
    with pytest.raises(UsageError, match="cannot read the recording"):
        read_recording(tmp_path / "missing.jsonl")


def test_twin_load_replay_of_a_missing_recording_is_exit_2(example_copy: Path) -> None:
    from tests.helpers import run_bastion

    assert run_bastion("twin", "up", cwd=example_copy).returncode == 0
    done = run_bastion("twin", "load", "--replay", "nowhere.jsonl", cwd=example_copy)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot read the recording" in done.stderr
    assert run_bastion("twin", "down", cwd=example_copy).returncode == 0
