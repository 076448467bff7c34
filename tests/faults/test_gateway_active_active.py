"""Gateways active-active (issue 18, item 5): two `bastion serve` processes for one
service, at two of its ``gateways``, share no state but the logs in state_dir and run
behind an L4 load balancer. The real ``openai`` client, with its own retries, sends load
through the balancer; one gateway is SIGKILLed under that load. No request fails after
the client's retry, and the survivor serves everything after the kill.

The balancer is ``L4Balancer`` below: a TCP proxy on loopback that round-robins each new
connection over its backends and skips one that refuses, as HAProxy or an NLB does with a
TCP health check. It is written here (about 60 lines) because no load balancer is
installable from PyPI, and Debian's haproxy is not among the system packages the project
installs; it only forwards bytes, so what it shows holds behind any L4 balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from bastion.aio import LoopThread
from tests.helpers import BASTION, run_bastion

HARD = 1000.0  # the service's hard budget; each of its two gateways holds half


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class L4Balancer:
    """A TCP load balancer on 127.0.0.1: each new client connection goes to the next
    backend in turn; a backend that refuses the connection is skipped (the next one is
    tried). Counts connections per backend, and requests the openai client retried."""

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self.connections = [0] * len(backends)
        self.refused = [0] * len(backends)
        self.retried = 0  # requests carrying x-stainless-retry-count >= 1
        self._next = 0
        self._thread = LoopThread("l4-balancer")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    def __enter__(self) -> L4Balancer:
        self._thread.start()
        self._server = self._thread.call(
            asyncio.start_server(self._client, "127.0.0.1", 0), timeout=10
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.stop(self._close())

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()  # each connection's pipes then end on their own
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = None
        for _ in range(len(self.backends)):
            i = self._next
            self._next = (i + 1) % len(self.backends)
            try:
                upstream = await asyncio.open_connection(*self.backends[i])
            except OSError:
                self.refused[i] += 1
                continue
            self.connections[i] += 1
            break
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream
        self._writers.update((writer, up_writer))
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, count=True),
                self._pipe(up_reader, writer, count=False),
            )
        finally:
            self._writers.difference_update((writer, up_writer))
            self._tasks.discard(task)

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, count: bool
    ) -> None:
        try:
            while chunk := await src.read(65536):
                if count and b"x-stainless-retry-count: " in chunk:
                    at = chunk.index(b"x-stainless-retry-count: ") + 25
                    self.retried += chunk[at : at + 1] not in (b"0",)
                dst.write(chunk)
                await dst.drain()
        except OSError:
            pass  # a side died (SIGKILL): close the other, as an L4 balancer does
        finally:
            with contextlib.suppress(OSError):
                dst.close()


def _get(port: int, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        doc: dict[str, Any] = json.loads(r.read())
        return doc


def _wait(cond: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(0.05)


def _answers(port: int) -> bool:
    try:
        return bool(_get(port, "/healthz")["ok"])
    except OSError:
        return False


def _ok_responses(port: int) -> int:
    """How many requests this gateway answered 2xx (its own count, from /metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("bastion_gateway_responses_total") and 'code="2xx"' in line
        )
    )


@pytest.fixture
def vendor() -> Iterator[int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion.serve.standin", "--name", "vendor"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("PORT"), line
        yield int(line.split()[1])
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _manifest(tmp_path: Path, vendor: int, ports: list[int]) -> Path:
    path = tmp_path / "bastion.yaml"
    gateways = ", ".join(f"127.0.0.1:{p}" for p in ports)
    path.write_text(
        f"version: 1\nsystem: s\nservices:\n  chat:\n    listen: 127.0.0.1:{ports[0]}\n"
        f"    gateways: [{gateways}]\n"
        f"    backends:\n      - name: vendor\n        url: http://127.0.0.1:{vendor}\n"
        "        price: {input_per_1k: 0.01, output_per_1k: 0.03}\n"
        f"    budgets:\n      - {{window: 1d, hard: {HARD:g}}}\n"
    )
    return path


@pytest.mark.slow
def test_a_sigkilled_gateway_loses_no_request_the_client_retries(
    tmp_path: Path, vendor: int, seed: int, rng: random.Random
) -> None:
    ports = [_free_port(), _free_port()]
    manifest = _manifest(tmp_path, vendor, ports)
    procs = [
        subprocess.Popen(
            [*BASTION, "serve", "chat", "-f", str(manifest), "--listen", f"127.0.0.1:{port}"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    victim = rng.randrange(2)
    survivor = 1 - victim
    kill_after = rng.randrange(100, 300)
    after_kill = rng.randrange(200, 400)
    print(f"kill gateway {victim} after {kill_after} answers, then {after_kill} more")
    failed: list[str] = []
    done = [0]
    lock = threading.Lock()
    stop = threading.Event()
    try:
        for proc, port in zip(procs, ports, strict=True):
            _wait(lambda port=port, proc=proc: proc.poll() is None and _answers(port), "listen")
        # each gateway holds half of the service's budget: the two never spend more
        for port in ports:
            (budget,) = _get(port, "/bastion/status")["cost"]["budgets"]
            assert budget["hard"] == pytest.approx(HARD / 2)
        with L4Balancer([("127.0.0.1", p) for p in ports]) as lb:
            client = openai.OpenAI(
                base_url=f"http://127.0.0.1:{lb.port}/v1",
                api_key="unused",
                max_retries=5,
                timeout=20.0,
            )

            def worker() -> None:
                while not stop.is_set():
                    try:
                        answer = client.chat.completions.create(
                            model="chat", messages=[{"role": "user", "content": "hi"}]
                        )
                        assert answer.choices[0].message.content
                    except Exception as exc:  # every failure is the finding
                        with lock:
                            failed.append(f"{type(exc).__name__}: {exc}")
                    with lock:
                        done[0] += 1

            with ThreadPoolExecutor(8) as pool:
                for _ in range(8):
                    pool.submit(worker)
                try:
                    _wait(lambda: done[0] >= kill_after, "load before the kill")
                    assert all(_ok_responses(p) > 0 for p in ports), "both gateways serve"
                    procs[victim].send_signal(signal.SIGKILL)
                    procs[victim].wait(10)
                    at_kill = done[0]
                    survivor_before = _ok_responses(ports[survivor])
                    _wait(
                        lambda: done[0] >= at_kill + after_kill,
                        f"load after the kill ({failed[:3]})",
                        60,
                    )
                finally:
                    stop.set()
            client.close()
            after = done[0] - at_kill
            served = _ok_responses(ports[survivor]) - survivor_before
            print(
                f"answered {done[0]}, {after} after the kill; connections per gateway "
                f"{lb.connections}, refused {lb.refused}; requests the client retried: "
                f"{lb.retried}; the survivor answered {served} after the kill"
            )
        assert failed == [], failed[:5]
        # the survivor absorbed the load: every request answered after the kill was its
        # own (a request in flight at the kill may be counted on either side of it)
        assert served >= after - 8
        assert lb.refused[victim] > 0 or lb.connections[victim] > 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    # both gateways wrote spend to the one shared log, each under its own address
    with contextlib.closing(sqlite3.connect(tmp_path / ".bastion" / "spend.db")) as conn:
        writers = {row[0] for row in conn.execute("SELECT DISTINCT gateway FROM spend")}
    assert f"127.0.0.1:{ports[survivor]}" in writers
    report = run_bastion("cost", "report", "--json", cwd=tmp_path)
    assert report.returncode == 0, report.stderr


def test_listen_must_be_one_of_the_service_gateways(tmp_path: Path, vendor: int) -> None:
    ports = [_free_port(), _free_port()]
    manifest = _manifest(tmp_path, vendor, ports)
    other = f"127.0.0.1:{_free_port()}"
    got = run_bastion("serve", "chat", "-f", str(manifest), "--listen", other, cwd=tmp_path)
    assert got.returncode == 2
    assert f"--listen {other}: not a gateway of service 'chat'" in got.stderr
    assert "services.chat.gateways" in got.stderr
    text = manifest.read_text().replace(f"gateways: [127.0.0.1:{ports[0]}, ", "gateways: [")
    manifest.write_text(text)
    got = run_bastion("serve", "chat", "-f", str(manifest), cwd=tmp_path)
    assert got.returncode == 2
    assert "gateways must include listen" in got.stderr
    assert manifest.name in got.stderr


def test_a_gateway_address_of_another_service_is_a_located_error(tmp_path: Path) -> None:
    a, b = _free_port(), _free_port()
    manifest = tmp_path / "bastion.yaml"
    manifest.write_text(
        "version: 1\nsystem: s\nservices:\n"
        f"  one:\n    listen: 127.0.0.1:{a}\n"
        "    backends: [{name: v, url: 'http://127.0.0.1:9'}]\n"
        f"  two:\n    listen: 127.0.0.1:{b}\n    gateways: [127.0.0.1:{b}, 127.0.0.1:{a}]\n"
        "    backends: [{name: v, url: 'http://127.0.0.1:9'}]\n"
    )
    got = run_bastion("serve", "two", "-f", str(manifest), cwd=tmp_path)
    assert got.returncode == 2
    assert "services.two.gateways[1]" in got.stderr or "services.two.gateways.1" in got.stderr
    assert f"127.0.0.1:{a} is already the address of service 'one'" in got.stderr
