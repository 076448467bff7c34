"""Connections that never finish their headers (slowloris) are closed by the gateway's
header-read timeout, while a well-behaved client keeps being served.

Real parts: raw TCP sockets on 127.0.0.1 that trickle one header line at a time, the
gateway on its own socket, a stand-in vendor behind it.
"""

from __future__ import annotations

import errno
import random
import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest

from bastion.manifest import GatewayPolicy
from bastion.serve import Gateway, GatewayThread, UpstreamSpec
from bastion.serve.standin import make_app
from tests.helpers import served

CONNECTIONS = 200
TRICKLE_FOR_S = 20.0
"""How long the slow clients keep trickling: shorter than the 75 s keep-alive time, so
only the header timeout can close them in time."""
PACE_S = 0.25
"""One header line per connection per pace: 80 lines at most, under aiohttp's own limit
on header lines (which would otherwise close them with a 400, header timeout or not)."""


@pytest.fixture
def gateway() -> Iterator[GatewayThread]:
    with served(make_app(name="vendor")) as vendor_url:
        policy = GatewayPolicy(timeout_ms=2000, header_timeout_ms=2000)
        gw = Gateway("chat", policy, probe_interval_s=0.2)
        gw.add_upstream(UpstreamSpec(name="vendor", url=vendor_url, group="vendor"))
        with GatewayThread(gw) as thread:
            yield thread


def _closed(sock: socket.socket) -> bool:
    try:
        data = sock.recv(4096)
    except BlockingIOError:
        return False
    except OSError as exc:
        return exc.errno in (errno.ECONNRESET, errno.EPIPE)
    return data == b""


def test_slowloris_connections_are_closed_and_others_served(
    gateway: GatewayThread, rng: random.Random
) -> None:
    port = gateway.gateway.port
    socks = []
    try:
        for _ in range(CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            sock.setblocking(False)  # so a look at whether it closed never waits
            socks.append(sock)
        open_ = set(range(CONNECTIONS))
        served_meanwhile = 0
        line = 0
        ends = time.monotonic() + TRICKLE_FOR_S
        while open_ and time.monotonic() < ends:
            line += 1
            for i in sorted(open_):
                if _closed(socks[i]):
                    open_.discard(i)
                    continue
                try:
                    socks[i].sendall(f"X-Pad-{line}: {rng.randrange(10**6)}\r\n".encode())
                except OSError:
                    open_.discard(i)
            with urllib.request.urlopen(gateway.url + "/healthz", timeout=5) as resp:
                served_meanwhile += resp.status == 200
            time.sleep(PACE_S)  # the trickle's pace, not a synchronisation
    finally:
        for sock in socks:
            sock.close()
    assert open_ == set(), f"{len(open_)} of {CONNECTIONS} slow connections still open"
    assert served_meanwhile >= 1
    assert line > 1  # they did trickle before being closed
