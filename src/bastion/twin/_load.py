"""Synthetic load against a twin's gateway: requests at a steady rate, for a while.

Owns: ``replay_synthetic``, an open-loop load (each request is sent at its scheduled
time, not when the one before it returned, so a slow twin shows as latency and
failures rather than a quietly lower rate) of ``POST /v1/predict`` with seeded random
inputs, and the ``LoadStatistics`` it returns.

Must never: send to anything but the twin's own ``listen:`` address, or sleep to
synchronise anything but its own schedule. Replaying recorded load (from the event
log's requests) is later work: the log does not hold request bodies yet.
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

__all__ = ["LoadStatistics", "replay_synthetic"]


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
    host, _, port = listen.rpartition(":")
    rng = random.Random(seed)
    total = max(1, int(rate * seconds))
    bodies = [
        json.dumps({"inputs": [round(rng.random() * 16, 3) for _ in range(width)]}).encode()
        for _ in range(min(total, 256))
    ]
    lock = threading.Lock()
    latencies: list[float] = []
    counts = {"ok": 0, "failed": 0}
    local = threading.local()
    opened: list[http.client.HTTPConnection] = []  # one per worker thread, closed at the end

    def send(i: int, due: float) -> None:
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # the schedule itself, not synchronisation
        t0 = time.perf_counter()
        ok = False
        try:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
                with lock:
                    opened.append(conn)
            conn.request(
                "POST",
                "/v1/predict",
                body=bodies[i % len(bodies)],
                headers={"Content-Type": "application/json"},
            )
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
    with ThreadPoolExecutor(max_workers=min(32, max(2, int(rate // 10) + 2))) as pool:
        for i in range(total):
            pool.submit(send, i, start + i / rate)
    for conn in opened:
        conn.close()
    return LoadStatistics(
        target=listen,
        sent=total,
        ok=counts["ok"],
        failed=counts["failed"],
        rate=rate,
        seconds=round(time.monotonic() - start, 3),
        p50_ms=_percentile(latencies, 0.50),
        p99_ms=_percentile(latencies, 0.99),
    )
