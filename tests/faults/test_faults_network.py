"""The TCP fault proxy's toxics, measured from a real client over real sockets.

Bounds are generous on purpose (2 shared cores): each assert checks that a toxic clearly
does what it says, never a tight timing.
"""

from __future__ import annotations

import socket
import socketserver
import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from bastion.drill.faults import Scope, TcpFaultProxy, Toxic, ToxicFault
from bastion.errors import ScopeError, UsageError


class _Handler(socketserver.StreamRequestHandler):
    """Echo each line; ``SEND n`` answers with n bytes."""

    def handle(self) -> None:
        try:
            for line in self.rfile:
                if line.startswith(b"SEND "):
                    self.wfile.write(b"x" * int(line.split()[1]))
                else:
                    self.wfile.write(line)
                self.wfile.flush()
        except OSError:
            pass  # the proxy reset or dropped this connection: that is the test


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def upstream() -> Iterator[int]:
    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(upstream: int, seed: int) -> Iterator[TcpFaultProxy]:
    with TcpFaultProxy(upstream_port=upstream, scope=Scope.of(ports=[upstream]), seed=seed) as p:
        yield p


def _connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def _rtt(sock: socket.socket) -> float:
    started = time.monotonic()
    sock.sendall(b"ping\n")
    got = b""
    while not got.endswith(b"\n"):
        chunk = sock.recv(100)
        assert chunk, "connection closed during an echo"
        got += chunk
    return time.monotonic() - started


def _download(sock: socket.socket, n: int) -> tuple[bytes, int]:
    sock.sendall(f"SEND {n}\n".encode())
    got, recvs = b"", 0
    while len(got) < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
        recvs += 1
    return got, recvs


def test_plain_proxy_passes_bytes(proxy: TcpFaultProxy) -> None:
    with _connect(proxy.port) as sock:
        assert _rtt(sock) < 5
        got, _ = _download(sock, 100_000)
        assert got == b"x" * 100_000
    assert proxy.statistics().connections == 1


def test_latency_with_jitter_adds_measured_delay(proxy: TcpFaultProxy) -> None:
    with _connect(proxy.port) as sock:
        base = statistics.median(_rtt(sock) for _ in range(5))
        with ToxicFault(proxy, Toxic("latency", attributes={"latency_ms": 300, "jitter_ms": 50})):
            slow = statistics.median(_rtt(sock) for _ in range(5))
        after = statistics.median(_rtt(sock) for _ in range(5))
    print(f"rtt base {base * 1e3:.1f} ms, with latency toxic {slow * 1e3:.1f} ms")
    assert slow - base > 0.15  # 300 +- 50 ms asked; half of it is plainly there
    assert after < slow


def test_bandwidth_caps_throughput(proxy: TcpFaultProxy) -> None:
    size = 150_000
    proxy.add_toxic(Toxic("bandwidth", attributes={"rate_kbps": 100}))
    with _connect(proxy.port) as sock:
        started = time.monotonic()
        got, _ = _download(sock, size)
        elapsed = time.monotonic() - started
    rate = len(got) / elapsed / 1024
    print(f"measured {rate:.0f} KB/s under a 100 KB/s cap")
    assert len(got) == size
    assert rate < 200  # twice the cap: generous; unthrottled it is tens of MB/s


def test_reset_peer_resets_the_client(proxy: TcpFaultProxy) -> None:
    with _connect(proxy.port) as sock:
        assert _rtt(sock) < 5
        proxy.add_toxic(Toxic("reset_peer", attributes={"timeout_ms": 0}))
        # An idle connection is reset too: recv ends with ECONNRESET, not a clean EOF.
        with pytest.raises(ConnectionResetError):
            sock.recv(100)
    assert proxy.statistics().resets >= 1


def test_timeout_blackholes_then_closes(proxy: TcpFaultProxy) -> None:
    proxy.add_toxic(Toxic("timeout", attributes={"timeout_ms": 400}))
    with _connect(proxy.port) as sock:
        sock.sendall(b"SEND 10\n")
        # No data ever arrives; the connection is closed once the timeout passes.
        assert sock.recv(100) == b""


def test_timeout_zero_holds_until_removed(proxy: TcpFaultProxy) -> None:
    toxic = proxy.add_toxic(Toxic("timeout", attributes={"timeout_ms": 0}))
    with _connect(proxy.port, timeout=0.5) as sock:
        sock.sendall(b"ping\n")
        with pytest.raises(TimeoutError):
            sock.recv(100)
        proxy.remove_toxic(toxic.name)
        sock.settimeout(10)
        assert _rtt(sock) < 5  # the held chunk stays dropped; new data flows


def test_slicer_cuts_data_into_small_pieces(proxy: TcpFaultProxy) -> None:
    proxy.add_toxic(
        Toxic("slicer", attributes={"average_size": 64, "size_variation": 16, "delay_us": 2000})
    )
    with _connect(proxy.port) as sock:
        got, recvs = _download(sock, 8_000)
    assert got == b"x" * 8_000
    assert recvs >= 20  # unsliced, 8 kB arrives in one or two reads


def test_limit_data_closes_after_the_limit(proxy: TcpFaultProxy) -> None:
    proxy.add_toxic(Toxic("limit_data", attributes={"bytes": 1000}))
    with _connect(proxy.port) as sock:
        got, _ = _download(sock, 5000)
    assert len(got) == 1000


def test_down_refuses_then_up_serves(proxy: TcpFaultProxy) -> None:
    open_sock = _connect(proxy.port)
    assert _rtt(open_sock) < 5
    with ToxicFault.down(proxy):
        assert open_sock.recv(100) == b""  # the open connection was dropped
        with _connect(proxy.port) as sock:
            assert sock.recv(100) == b""  # a new one is closed at once
    open_sock.close()
    with _connect(proxy.port) as sock:
        assert _rtt(sock) < 5


def test_toxiproxy_attribute_names() -> None:
    toxic = Toxic("bandwidth", attributes={"rate": 100})
    assert toxic.attr("rate_kbps") == 100
    with pytest.raises(UsageError):
        Toxic("latency", attributes={"latency": 1, "latency_ms": 2})


def test_upstream_port_outside_scope_is_refused(upstream: int) -> None:
    with pytest.raises(ScopeError, match=f"port {upstream}"):
        TcpFaultProxy(upstream_port=upstream, scope=Scope.of(ports=[1]))


def _api(method: str, url: str, body: dict[str, object] | None = None) -> tuple[int, object]:
    import json
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read() or b"null")


def test_toxiproxy_api_from_another_process(upstream: int, seed: int) -> None:
    """The proxy as its own process, driven through Toxiproxy's REST API."""
    import json
    import subprocess
    import sys

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bastion.drill.faults.network",
            "--name",
            "db",
            "--upstream-port",
            str(upstream),
            "--seed",
            str(seed),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ports = json.loads(proc.stdout.readline())
        api, listen = ports["api"], ports["listen"]
        status, listing = _api("GET", f"{api}/proxies")
        assert status == 200
        assert listing["db"]["enabled"] is True  # type: ignore[index]
        with _connect(listen) as sock:
            base = statistics.median(_rtt(sock) for _ in range(3))
            status, _ = _api(
                "POST",
                f"{api}/proxies/db/toxics",
                {
                    "name": "slow",
                    "type": "latency",
                    "attributes": {"latency": 300, "jitter": 10},
                },
            )
            assert status == 200
            slow = statistics.median(_rtt(sock) for _ in range(3))
            assert slow - base > 0.15
            assert _api("DELETE", f"{api}/proxies/db/toxics/slow")[0] == 204
            assert _api("DELETE", f"{api}/proxies/db/toxics/slow")[0] == 404
            assert _rtt(sock) < slow
        assert _api("POST", f"{api}/proxies/db/toxics", {"type": "nonsense"})[0] == 400
        assert _api("POST", f"{api}/proxies/db", {"enabled": False})[0] == 200
        with _connect(listen) as sock:
            assert sock.recv(100) == b""  # down: closed at once
        assert _api("POST", f"{api}/reset")[0] == 204
        with _connect(listen) as sock:
            assert _rtt(sock) < 5
        assert _api("GET", f"{api}/proxies/nope")[0] == 404
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
