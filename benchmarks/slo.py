"""SLO evaluation over a month of per-second SLI rows, and what recording them costs the
gateway.

Evaluation: 30 days of per-second rows for one service (2,592,000 rows, one backend, a
seeded trickle of errors and slow answers, one 20-minute outage) written through the same
``write_rows`` the gateway's writer thread uses (so the minute and hour rollups are there
as in production), then 10 objectives evaluated at the end of the month: availability and
latency, rolling 30d, 28d and 7d, the calendar month, occurrences and time slices, every
burn pair (1h/5m, 6h/30m, 3d/6h), budgets and no-data. Goal: <= 1 s for all 10. The floor
it is compared with is one plain ``SELECT sum(...) ... GROUP BY service`` over the same
second rows (what a store without rollups must do for one window of one objective); the
ratio below 1 is the rollups at work.

Write path: the Bastion gateway of ``benchmarks/gateway.py`` (same script, same stand-in
backend, ``bastion.serve.standin``) in two processes, one recording SLI rows into a
temporary state directory (``SliRecorder`` + ``SliWriter``, flushed every second, as
``bastion serve`` does) and one not. Each round sends the same concurrent load (aiohttp,
``--concurrency`` in flight) to both, interleaved, and reads each process's CPU time per
request. Goal: with / without <= 1.05 (median of the rounds' ratios).

Run: ``.venv/bin/python benchmarks/slo.py [--days 30] [--rounds 5] [--requests 4000]
[--seed N]`` (the seed is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gateway import BASTION, BODY, cpu_s, free_port, start, wait_http  # noqa: E402

from bastion.events import EventLog  # noqa: E402
from bastion.slo import BOUNDS_MS, SliRow, SqliteSli, Window, evaluate  # noqa: E402
from bastion.slo._core import Objective  # noqa: E402
from bastion.slo._sli import write_rows  # noqa: E402

NB = len(BOUNDS_MS) + 1
# the gateway script of benchmarks/gateway.py, recording SLI rows as `bastion serve` does
WITH_SLI = BASTION.replace(
    "    await gw.start()\n",
    """    from bastion.serve.gateway import _POST_ROUTES
    from bastion.slo import SliRecorder, SliWriter
    import time
    writer = SliWriter.in_state_dir(sys.argv[3])
    gw.sli = rec = SliRecorder("bench", writer, routes=_POST_ROUTES)

    async def flush():
        while True:
            await asyncio.sleep(1.0 - time.time() % 1.0 + 0.01)
            rec.flush(before=int(time.time()))

    flusher = asyncio.ensure_future(flush())
    await gw.start()
""",
)
assert WITH_SLI != BASTION


def month_of_rows(start: int, days: int, rng: random.Random) -> Iterator[list[SliRow]]:
    outage = start + rng.randrange(days * 86400 - 1200)
    for day in range(days):
        batch = []
        for s in range(86400):
            t = start + day * 86400 + s
            total = 20 + (s % 7)
            down = outage <= t < outage + 1200
            good = 0 if down else total - (1 if rng.random() < 0.0005 else 0)
            slow = 1 if rng.random() < 0.003 else 0
            buckets = [0] * NB
            buckets[2] = total - slow
            buckets[7] = slow
            batch.append(SliRow("svc", t, "b0", good, total, tuple(buckets)))
        yield batch


def objectives() -> list[Objective]:
    budgets: list[Any] = ["occurrences"] * 4 + ["timeslices"]
    return [
        Objective(
            f"{sli}-{window}-{budgeting}",
            "x",
            "svc",
            sli,  # type: ignore[arg-type]
            0.999 if sli == "availability" else 0.99,
            Window.parse(window),
            threshold_ms=250.0 if sli == "latency" else None,
            budgeting=budgeting,
        )
        for window, budgeting in zip(("30d", "28d", "7d", "month", "30d"), budgets, strict=True)
        for sli in ("availability", "latency")
    ]


def evaluation(days: int, seed: int) -> None:
    rng = random.Random(seed)
    tmp = Path(tempfile.mkdtemp(prefix="bastion-slo-bench-"))
    try:
        EventLog.in_state_dir(tmp).close()
        conn = sqlite3.connect(tmp / "events.db")
        SqliteSli.in_state_dir(tmp).close()  # the schema
        start = 1_790_000_000 - 1_790_000_000 % 86400
        t0 = time.perf_counter()
        n = sum(write_rows(conn, batch) for batch in month_of_rows(start, days, rng))
        conn.close()
        wrote = time.perf_counter() - t0
        print(f"wrote {n:,} per-second rows (and their rollups) in {wrote:.1f} s")
        end = start + days * 86400
        store = SqliteSli.in_state_dir(tmp)
        objs = objectives()
        evaluate(objs[0], store, end)  # page cache warm, as in a running loop
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            statuses = [evaluate(o, store, end, watching_since=start) for o in objs]
            times.append(time.perf_counter() - t0)
        took = statistics.median(times)
        conn = sqlite3.connect(tmp / "events.db")
        sums = ", ".join(f"sum({c})" for c in ("good", "total", *(f"l{i}" for i in range(NB))))
        floors = []
        for _ in range(3):
            t0 = time.perf_counter()
            conn.execute(
                f"SELECT service, {sums} FROM sli_s WHERE t >= ? AND t < ? GROUP BY service",
                (end - 30 * 86400, end),
            ).fetchall()
            floors.append(time.perf_counter() - t0)
        conn.close()
        floor = statistics.median(floors)
        for s in statuses:
            sli = "-" if s.sli is None else f"{100 * s.sli:.4f}%"
            print(
                f"  {s.objective.id:34} SLI {sli:>10} of {s.total:>10,}  budget spent "
                f"{100 * s.budget_spent:6.1f}%"
            )
        verdict = "meets" if took <= 1.0 else "MISSES"
        print(
            f"evaluation of {len(objs)} SLOs, all windows and pairs: {took * 1e3:.1f} ms "
            f"(median of 5), {verdict} the goal of <= 1 s"
        )
        print(
            f"floor, one GROUP BY over the {n:,} second rows: {floor * 1e3:.1f} ms; "
            f"ratio evaluation / floor {took / floor:.3f}"
        )
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def load(port: int, n: int, concurrency: int) -> int:
    import aiohttp

    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    ok = 0
    left = n
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:

        async def worker() -> None:
            nonlocal ok, left
            while left > 0:
                left -= 1
                async with s.post(
                    url, data=BODY, headers={"Content-Type": "application/json"}
                ) as r:
                    await r.read()
                    ok += r.status == 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


def observe_cost_us() -> float:
    """What one ``SliRecorder.observe`` costs on the event loop, in microseconds (the flush
    to the writer thread once a second included): the stable part of the write path's cost,
    which the end-to-end ratio below measures through the machine's noise."""
    from bastion.serve.gateway import _POST_ROUTES
    from bastion.slo import SliRecorder

    batches: list[object] = []
    rec = SliRecorder("bench", batches.append, routes=_POST_ROUTES)
    n = 300_000
    t0 = time.process_time()
    for i in range(n):
        rec.observe("/v1/chat/completions", 200 if i % 97 else 503, 0.004, "b0")
    return (time.process_time() - t0) / n * 1e6


def write_path(rounds: int, requests: int, concurrency: int) -> None:
    py = sys.executable
    procs: list[subprocess.Popen[str]] = []
    state = Path(tempfile.mkdtemp(prefix="bastion-slo-write-"))
    try:
        backend, bport = start([py, "-m", "bastion.serve.standin", "--name", "backend"])
        procs.append(backend)
        upstream = f"http://127.0.0.1:{bport}"
        targets = []
        for name, code, extra in (("without", BASTION, []), ("with SLI", WITH_SLI, [str(state)])):
            proc, port = start([py, "-c", code, upstream, str(free_port()), *extra])
            procs.append(proc)
            wait_http(port)
            asyncio.run(load(port, 300, concurrency))  # warm
            targets.append((name, port, proc))
        per: dict[str, list[float]] = {name: [] for name, _, _ in targets}
        ratios = []
        for r in range(rounds):
            row = {}
            order = targets if r % 2 == 0 else targets[::-1]
            for name, port, proc in order:
                c0 = cpu_s(proc)
                ok = asyncio.run(load(port, requests, concurrency))
                c1 = cpu_s(proc)
                assert ok == requests, (name, ok)
                row[name] = (c1 - c0) / requests * 1e3
                per[name].append(row[name])
            ratios.append(row["with SLI"] / row["without"])
        rows = SqliteSli.in_state_dir(state)
        recorded = rows.tally("bench", 0, int(time.time()) + 2).total
        rows.close()
        for name, values in per.items():
            print(f"  gateway CPU per request, {name:8}: {statistics.median(values):.3f} ms")
        medians = statistics.median(per["with SLI"]) / statistics.median(per["without"])
        print(f"  ratio of the medians: {medians:.3f}")
        ratio = statistics.median(ratios)
        import psutil

        sli_proc = next(proc for name, _, proc in targets if name == "with SLI")
        threads = sorted(psutil.Process(sli_proc.pid).threads(), key=lambda t: -t.user_time)
        others = sum(t.user_time + t.system_time for t in threads[1:])
        main_cpu = threads[0].user_time + threads[0].system_time
        print(
            f"  threads other than the event loop's (the SLI writer) used {others:.3f} s of "
            f"CPU, {others / max(main_cpu, 1e-9) * 100:.2f}% of the event loop's {main_cpu:.1f} s"
        )
        cost = observe_cost_us()
        base = statistics.median(per["without"]) * 1e3
        print(
            f"  SliRecorder.observe: {cost:.2f} us a request on the event loop, "
            f"{cost / base * 100:.2f}% of the gateway's {base:.0f} us a request "
            f"(ratio {1 + cost / base:.4f} from this part alone)"
        )
        verdict = "meets" if ratio <= 1.05 else "MISSES"
        print(
            f"SLI write path: CPU per request with / without = {ratio:.3f} (median of "
            f"{rounds} interleaved rounds of {requests} requests, {concurrency} in flight; "
            f"rounds {', '.join(f'{x:.3f}' for x in ratios)}); {verdict} the goal of <= 1.05; "
            f"{recorded:,} requests recorded in SLI rows"
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--skip-write-path", action="store_true")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else secrets.randbelow(2**32)
    print(f"seed {seed}")
    evaluation(args.days, seed)
    if not args.skip_write_path:
        write_path(args.rounds, args.requests, args.concurrency)


if __name__ == "__main__":
    main()
