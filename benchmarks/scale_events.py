"""Event append throughput and p99 latency, PostgreSQL beside SQLite, 4 writer processes
(issue 18, item 4's benchmark; ``benchmarks/scale.py`` calls ``main()``).

Each of ``--writers`` processes (spawned, started together on one barrier) appends
``--events`` events through ``EventLog.emit``, timing each call (an event is acknowledged
when emit returns, after its commit). Throughput is all events over the wall time from the
barrier to the last writer's end; p50/p99 are over every call of every writer.

SQLite: a temp ``events.db`` (WAL, ``synchronous=NORMAL``: a commit is not fsynced, so
the last commits may be lost on power loss, never on a process crash). PostgreSQL: a
private server started here exactly as the tests start theirs (tests/pg_server.py:
Debian's postgresql, initdb in a temp dir) but with ``fsync=on`` and its default
``synchronous_commit=on``, so an acknowledged event is on disk; or ``--url`` for a server
of yours (the password from PGPASSWORD / ~/.pgpass). PostgreSQL appends are serialised by
an advisory lock (ids in commit order, see src/bastion/events/_postgres.py), so a ratio
below 1 is that lock plus a round trip per statement over loopback TCP.

Run: ``.venv/bin/python benchmarks/scale_events.py [--writers 4] [--events 500] [--url URL]``
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _writer(target: str, n: int, barrier: Any, out: Any) -> None:
    from bastion.events import EventLog

    log = EventLog(target)
    barrier.wait()
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        log.emit("bench.append", "writer", i=i, note="x" * 64)
        lat.append(time.perf_counter() - t0)
    log.close()
    out.put((time.perf_counter(), lat))


def run(target: str, writers: int, events: int) -> dict[str, float]:
    from bastion.events import EventLog

    EventLog(target).close()  # the schema exists before the clock starts
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(writers + 1)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(target, events, barrier, out)) for _ in range(writers)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    start = time.perf_counter()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    end = max(r[0] for r in results)
    lat = sorted(x for r in results for x in r[1])
    total = writers * events
    return {
        "events": total,
        "per_s": total / (end - start),
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
    }


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--events", type=int, default=500, help="per writer")
    parser.add_argument("--url", help="an existing PostgreSQL database (default: start one)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    load = os.getloadavg()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bastion-bench-events-") as tmp:
        results["sqlite"] = run(str(Path(tmp) / "events.db"), args.writers, args.events)
    server = None
    url = args.url
    if url is None:
        from tests.pg_server import PASSWORD, PgServer

        os.environ["PGPASSWORD"] = PASSWORD
        server = PgServer(fsync=True)
        url = server.create_database()
    try:
        results["postgresql"] = run(url, args.writers, args.events)
    finally:
        if server is not None:
            server.close()
    s, p = results["sqlite"], results["postgresql"]
    print(
        f"event append, {args.writers} writer processes x {args.events} events "
        f"(load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} before)"
    )
    print(f"{'':14}{'SQLite':>12}{'PostgreSQL':>14}{'PG / SQLite':>14}")
    print(f"{'events/s':14}{s['per_s']:12.0f}{p['per_s']:14.0f}{p['per_s'] / s['per_s']:14.2f}")
    for key in ("p50_ms", "p99_ms"):
        print(f"{key:14}{s[key]:12.2f}{p[key]:14.2f}{p[key] / s[key]:14.2f}")
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return results


if __name__ == "__main__":
    main()
