"""Every primary hangs (real replica processes, SIGSTOPped): the fallback tier still
answers every request, inside the request's deadline.

Before the per-attempt timeout, the first attempt on a hung replica spent the whole
``timeout_ms`` and the request ended ``504 every attempt failed ... (tried: local-0)``
without ever reaching the healthy fallback.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from bastion.manifest import GatewayPolicy
from bastion.serve import Gateway, GatewayThread, UpstreamSpec, spawn_server, stop_server
from bastion.serve.standin import make_app
from tests.helpers import served, write_model

PIXELS = ",".join(["8"] * 64)


@pytest.fixture
def two_replicas(tmp_path: Path, seed: int) -> Iterator[list[tuple[subprocess.Popen[str], int]]]:
    model = write_model(tmp_path / "model", seed)
    procs: list[tuple[subprocess.Popen[str], int]] = []
    try:
        argv = ["-m", "bastion.serve.replica", "model/digits@test", "--dir", str(model)]
        procs.extend(spawn_server(argv) for _ in range(2))
        yield procs
    finally:
        for proc, _ in procs:
            with_cont(proc)
            stop_server(proc)


def with_cont(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)


def _wait(cond: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def _gateway(ports: list[int], fallback_url: str, policy: GatewayPolicy) -> Gateway:
    gw = Gateway("digits", policy, probe_interval_s=0.2, probe_timeout_s=0.2)
    for i, port in enumerate(ports):
        gw.add_upstream(
            UpstreamSpec(
                name=f"local-{i}",
                url=f"http://127.0.0.1:{port}",
                group="local",
                tier=0,
                kind="local",
                probe_path="/health",
            )
        )
    gw.add_upstream(UpstreamSpec(name="vendor", url=fallback_url, group="vendor", tier=1))
    return gw


def _all_routable(thread: GatewayThread) -> bool:
    return thread.run(lambda: all(u.routable() for u in thread.gateway.pool.upstreams.values()))


@pytest.mark.parametrize(
    ("attempt_timeout_ms", "stream"), [(None, False), (200.0, False), (None, True)]
)
def test_every_primary_hung_fallback_answers_every_request(
    two_replicas: list[tuple[subprocess.Popen[str], int]],
    rng: random.Random,
    attempt_timeout_ms: float | None,
    stream: bool,
) -> None:
    policy = GatewayPolicy(
        timeout_ms=1000,
    )
    with served(make_app(name="vendor")) as vendor_url:
        gw = _gateway([p for _, p in two_replicas], vendor_url, policy)
        with GatewayThread(gw) as thread:
            _wait(lambda: _all_routable(thread))
            client = openai.OpenAI(base_url=thread.url + "/v1", api_key="x", max_retries=0)
            # Both replicas answer first, so the hang below is one of live processes.
            for _ in range(4):
                client.chat.completions.create(
                    model="digits", messages=[{"role": "user", "content": PIXELS}]
                )
            order = [proc for proc, _ in two_replicas]
            rng.shuffle(order)
            for proc in order:
                os.kill(proc.pid, signal.SIGSTOP)
            failed: list[str] = []
            served_by: list[str | None] = []
            for _ in range(12):
                try:
                    raw = client.chat.completions.with_raw_response.create(
                        model="digits",
                        messages=[{"role": "user", "content": PIXELS}],
                        stream=stream,
                    )
                    if stream:
                        text = "".join(
                            c.choices[0].delta.content or "" for c in raw.parse() if c.choices
                        )
                        assert text, "an empty stream"
                except openai.OpenAIError as exc:
                    failed.append(repr(exc))
                    continue
                served_by.append(raw.headers.get("x-bastion-backend"))
            stats = thread.run(gw.statistics)
    assert failed == [], failed[:3]
    assert served_by == ["vendor"] * 12
    hung = [u for u in stats.pool.upstreams if u.name.startswith("local-")]
    assert all(u.breaker.state != "closed" or u.needs_probe for u in hung), hung
