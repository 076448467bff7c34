"""Synthetic load against a twin's gateway: requests at a steady rate, for a while.

Owns: ``replay_synthetic``, an open-loop load (each request is sent at its scheduled
time, not when the one before it returned, so a slow twin shows as latency and
failures rather than a quietly lower rate) of ``POST /v1/predict`` with seeded random
inputs, and the ``LoadStatistics`` it returns.

Must never: send to anything but the twin's own ``listen:`` address, or sleep to
synchronise anything but its own schedule. Recorded load (``bastion.twin._record``)
is sent by the same open loop (``open_loop``).
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bastion.errors import UsageError

__all__ = ["LoadStatistics", "Planned", "open_loop", "replay_synthetic"]


@dataclass(frozen=True)
class LoadStatistics:
    """What a load run did: requests sent, answered 2xx, failed (an error status or no
    answer), the rate asked for, and latency percentiles of the answered ones (ms)."""

    target: str
    sent: int
    ok: int
    failed: int
    rate: float
    seconds: float
    p50_ms: float | None
    p99_ms: float | None


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def replay_synthetic(
    listen: str,
    *,
    rate: float = 20.0,
    seconds: float = 5.0,
    seed: int = 0,
    width: int = 64,
    timeout_s: float = 2.0,
) -> LoadStatistics:
    """Send ``rate`` requests a second for ``seconds`` to the gateway at ``listen``
    (``host:port``); each carries ``width`` seeded random numbers as its inputs."""
    if rate <= 0 or seconds <= 0:
        raise UsageError("twin load: --rate and --seconds must be positive (e.g. 20 and 5)")
    rng = random.Random(seed)
    total = max(1, int(rate * seconds))
    bodies = [
        json.dumps({"inputs": [round(rng.random() * 16, 3) for _ in range(width)]}).encode()
        for _ in range(min(total, 256))
    ]
    plan = [
        Planned(due_s=i / rate, method="POST", path="/v1/predict", body=bodies[i % len(bodies)])
        for i in range(total)
    ]
    return open_loop(listen, plan, rate=rate, timeout_s=timeout_s)


@dataclass(frozen=True)
class Planned:
    """One request of a load: when to send it (seconds after the start), and what."""

    due_s: float
    method: str
    path: str
    body: bytes


def open_loop(
    listen: str,
    plan: list[Planned],
    *,
    rate: float,
    timeout_s: float = 2.0,
    workers: int | None = None,
) -> LoadStatistics:
    """Send each planned request at its time (open loop: not when the one before it
    returned). ``workers`` threads send (default: enough for ``rate``); with 1 the
    requests leave strictly in the plan's order."""
    host, _, port = listen.rpartition(":")
    lock = threading.Lock()
    latencies: list[float] = []
    counts = {"ok": 0, "failed": 0}
    local = threading.local()
    opened: list[http.client.HTTPConnection] = []  # one per worker thread, closed at the end

    def send(item: Planned, due: float) -> None:
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # the schedule itself, not synchronisation
        t0 = time.perf_counter()
        ok = False
        conn = getattr(local, "conn", None)
        try:
            if conn is None:
                conn = local.conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
                with lock:
                    opened.append(conn)
            headers = {"Content-Type": "application/json"} if item.body else {}
            conn.request(item.method, item.path, body=item.body or None, headers=headers)
            response = conn.getresponse()
            response.read()
            ok = 200 <= response.status < 300
        except (OSError, http.client.HTTPException):
            if conn is not None:
                conn.close()
            local.conn = None
        elapsed = (time.perf_counter() - t0) * 1000
        with lock:
            counts["ok" if ok else "failed"] += 1
            if ok:
                latencies.append(elapsed)

    start = time.monotonic()
    threads = workers or min(32, max(2, int(rate // 10) + 2))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for item in plan:
            pool.submit(send, item, start + item.due_s)
    for conn in opened:
        conn.close()
    return LoadStatistics(
        target=listen,
        sent=len(plan),
        ok=counts["ok"],
        failed=counts["failed"],
        rate=rate,
        seconds=round(time.monotonic() - start, 3),
        p50_ms=_percentile(latencies, 0.50),
        p99_ms=_percentile(latencies, 0.99),
    )
