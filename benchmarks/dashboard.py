"""The control plane's API (issue 17, part 2's benchmark; the browser figures come with
the dashboard).

1. Events endpoint: an event log of ``--events`` (1,000,000) rows, 40 kinds over 60
   subjects and two segments, written straight into the log's own table; then
   ``GET /api/events`` pages of 100 filtered by kind, by subject, by kind and subject,
   and by segment, each from a random point of the log (``before``), sent one at a time
   from an aiohttp client to the real API of a real ``Up``. Goal: p99 <= 50 ms. The floor
   beside it is the same page read by a plain ``sqlite3`` query in this process (no HTTP,
   no JSON): the ratio is what the API adds.
   Then, over the same log: SSE fan-out (``--clients`` 50 open streams each receive
   every new event; the p99 delay from emit to read, against one stream; goal: <= 100 ms
   added) and the dashboard's first meaningful paint in Debian's chromium (the first view
   drawn with its data, the page's own ``bastion-loaded`` mark, Performance API; the
   shell's first contentful paint beside it; goal: <= 1 s).
2. ``bastion up`` to every service healthy, on the example (a copy with its own ports
   and a committed model): the wall time of ``bastion up --detach`` (it returns once every
   gateway answers /healthz), with ``bastion serve`` of the same service to its first
   healthy /healthz as the baseline. Goal: <= 5 s.

Run: ``.venv/bin/python benchmarks/dashboard.py [--events 1000000] [--requests 400]
[--rounds 3] [--seed N] [--only api|up]`` (the seed is printed; ``--only`` runs one
part).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bastion.control import Up  # noqa: E402
from bastion.events import EventLog  # noqa: E402
from bastion.events._sql import select  # noqa: E402
from bastion.events._sqlite import _DIALECT  # noqa: E402
from bastion.manifest import load  # noqa: E402

BASTION = [sys.executable, "-m", "bastion"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fill(state: Path, n: int, rng: random.Random) -> tuple[list[str], list[str]]:
    kinds = [f"bench.{a}.{b}" for a in ("serve", "vault", "train", "drill") for b in range(10)]
    subjects = [f"component-{i}" for i in range(60)]
    EventLog.in_state_dir(state).close()  # the log's own schema and indexes
    conn = sqlite3.connect(state / "events.db")
    conn.execute("PRAGMA journal_mode = WAL")
    t0, mono = time.time() - n * 0.01, time.monotonic_ns()
    batch = []
    for i in range(n):
        batch.append(
            (
                t0 + i * 0.01,
                mono + i * 10_000_000,
                rng.choice(kinds),
                rng.choice(subjects),
                rng.choice(("prod", "staging")),
                json.dumps({"i": i, "backend": "local-0", "reason": "bench"}),
            )
        )
        if len(batch) == 100_000:
            conn.executemany(
                "INSERT INTO events (ts, mono_ns, kind, subject, segment, data) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                batch,
            )
            conn.commit()
            batch.clear()
    if batch:
        conn.executemany(
            "INSERT INTO events (ts, mono_ns, kind, subject, segment, data) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            batch,
        )
        conn.commit()
    conn.execute("ANALYZE")
    conn.close()
    return kinds, subjects


def _plain_page(conn: sqlite3.Connection, f: dict[str, Any]) -> list[Any]:
    """The floor: the same page as one plain SQLite query in this process (the log's own
    SQL, rows decoded from JSON), with no HTTP, no API and no event objects."""
    kind = f.get("kind")
    sql, args = select(
        _DIALECT,
        kind=kind,
        glob=bool(kind) and any(c in kind for c in "*?["),
        subject=f.get("subject"),
        segment=f.get("segment"),
        before=f.get("before"),
        newest_first=True,
        limit=101,
    )
    return [(*r[:6], json.loads(r[6])) for r in conn.execute(sql, args).fetchall()]


def bench_events(args: argparse.Namespace, rng: random.Random) -> None:
    root = Path(tempfile.mkdtemp(prefix="bastion-bench-api-"))
    try:
        t = time.perf_counter()
        kinds, subjects = fill(root / ".bastion", args.events, rng)
        print(f"event log: {args.events:,} events written in {time.perf_counter() - t:.1f} s")
        (root / "bastion.yaml").write_text(
            f"version: 1\nsystem: bench\ncontrol: {{listen: '127.0.0.1:{free_port()}', "
            "scrub: null, guard: false}\n"
        )
        up = Up(load(root / "bastion.yaml"))
        up.start()
        try:
            shapes: dict[str, Any] = {
                "kind": lambda: {"kind": rng.choice(kinds)},
                "subject": lambda: {"subject": rng.choice(subjects)},
                "kind+subject": lambda: {
                    "kind": rng.choice(kinds),
                    "subject": rng.choice(subjects),
                },
                "segment": lambda: {"segment": "staging"},
            }
            floor_conn = sqlite3.connect(
                f"file:{root / '.bastion' / 'events.db'}?mode=ro", uri=True
            )
            print(
                f"\nGET /api/events, pages of 100, {args.requests} requests per filter "
                "(p50 / p99 ms); floor: the same page by a plain sqlite3 query"
            )
            print(
                f"{'filter':14} {'api p50':>8} {'api p99':>8} {'floor p99':>10} {'ratio p99':>10}"
            )
            worst = 0.0
            for name, make in shapes.items():
                cases = []
                for _ in range(args.requests):
                    f = make()
                    f["before"] = rng.randrange(1000, args.events)
                    cases.append(f)
                api_ms = asyncio.run(_time_api(up.api_url, cases))
                floor_ms = []
                for f in cases:
                    t0 = time.perf_counter()
                    _plain_page(floor_conn, f)
                    floor_ms.append((time.perf_counter() - t0) * 1000)
                p99, fp99 = quantile(api_ms, 0.99), quantile(floor_ms, 0.99)
                worst = max(worst, p99)
                print(
                    f"{name:14} {quantile(api_ms, 0.5):8.2f} {p99:8.2f} {fp99:10.2f} "
                    f"{p99 / fp99:10.1f}x"
                )
            floor_conn.close()
            print(f"worst p99 {worst:.2f} ms (goal <= 50 ms): {'met' if worst <= 50 else 'MISSED'}")
            bench_fanout(up, args)
            bench_paint(up)
        finally:
            up.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_fanout(up: Up, args: argparse.Namespace) -> None:
    """N open streams (dashboards) each receive every new event; the delay from the emit
    (in this process, monotonic clock) to each client's read of it, 50 clients against 1."""
    one = asyncio.run(_fanout(up, 1, args.fanout_events))
    many = asyncio.run(_fanout(up, args.clients, args.fanout_events))
    p1, pn = quantile(one, 0.99), quantile(many, 0.99)
    print(
        f"\nSSE fan-out, {args.fanout_events} events: 1 stream p99 {p1:.1f} ms; "
        f"{args.clients} streams p99 {pn:.1f} ms (p50 {quantile(many, 0.5):.1f}); added "
        f"{pn - p1:.1f} ms (goal <= 100 ms: {'met' if pn - p1 <= 100 else 'MISSED'})"
    )


async def _fanout(up: Up, clients: int, events: int) -> list[float]:
    import aiohttp

    delays: list[float] = []
    log = EventLog.in_state_dir(up.manifest.state_dir)
    subject = f"fanout-{clients}-{secrets.token_hex(4)}"

    async def client(session: aiohttp.ClientSession, ready: asyncio.Event, n: list[int]) -> None:
        async with session.get(
            up.api_url + "/api/events/stream", params={"subject": subject}
        ) as resp:
            seen = 0
            async for line in resp.content:
                if line.startswith(b": bastion"):
                    n[0] += 1
                    if n[0] == clients:
                        ready.set()
                if line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    delays.append((time.monotonic_ns() - event["data"]["sent_ns"]) / 1e6)
                    seen += 1
                    if seen == events:
                        return

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        ready, n = asyncio.Event(), [0]
        tasks = [asyncio.create_task(client(session, ready, n)) for _ in range(clients)]
        await asyncio.wait_for(ready.wait(), 60)
        for _ in range(events):
            await asyncio.to_thread(
                log.emit, "control.action", subject, action="bench", sent_ns=time.monotonic_ns()
            )
            await asyncio.sleep(0.1)
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
        except TimeoutError:
            print(f"  fan-out: {len(delays)} of {clients * events} deliveries within 60 s")
            raise
    log.close()
    return delays


def bench_paint(up: Up) -> None:
    """Time to the first meaningful paint (the first view drawn with its data, marked by
    the page as ``bastion-loaded``) in Debian's chromium, beside the browser's own first
    contentful paint of the page shell (the floor)."""
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        chromium = None
    if chromium is None:
        print("\nfirst meaningful paint: skipped (chromium or playwright missing)")
        return
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        for view in ("events", "services", "map"):
            marks, shells = [], []
            for _ in range(5):
                page = browser.new_page()
                page.goto(f"{up.api_url}/#/{view}")
                page.wait_for_selector(f'main[data-loaded="{view}"]', timeout=60_000)
                marks.append(
                    page.evaluate("performance.getEntriesByName('bastion-loaded')[0].startTime")
                )
                shells.append(
                    page.evaluate(
                        "(performance.getEntriesByName('first-contentful-paint')[0] || {})"
                        ".startTime || 0"
                    )
                )
                page.close()
            mark = statistics.median(marks)
            print(
                f"first meaningful paint #/{view}: {mark:.0f} ms (median of 5; shell's first "
                f"contentful paint {statistics.median(shells):.0f} ms; goal <= 1000 ms: "
                f"{'met' if mark <= 1000 else 'MISSED'})"
            )
        browser.close()


async def _time_api(url: str, cases: list[dict[str, Any]]) -> list[float]:
    import aiohttp

    out = []
    async with aiohttp.ClientSession() as session:
        for f in cases:
            t0 = time.perf_counter()
            async with session.get(url + "/api/events", params={**f, "limit": 100}) as resp:
                body = await resp.json()
                assert resp.status == 200, body
            out.append((time.perf_counter() - t0) * 1000)
    return out


def _example(seed: int) -> tuple[Path, Path, int]:
    from ruamel.yaml import YAML
    from tests.helpers import commit_model

    root = Path(tempfile.mkdtemp(prefix="bastion-bench-up-"))
    example = root / "digits"
    shutil.copytree(
        ROOT / "examples" / "digits",
        example,
        ignore=shutil.ignore_patterns(".bastion", "__pycache__"),
    )
    commit_model(example, seed)
    path = example / "bastion.yaml"
    yaml = YAML()
    doc = yaml.load(path)
    port = free_port()
    doc["services"]["digits"]["listen"] = f"127.0.0.1:{port}"
    doc["services"]["digits"]["backends"][1]["url"] = f"http://127.0.0.1:{free_port()}"
    doc["control"] = {"listen": f"127.0.0.1:{free_port()}", "scrub": None}
    yaml.dump(doc, path)
    return root, path, port


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def bench_up(args: argparse.Namespace) -> None:
    root, path, port = _example(args.seed)
    try:
        ups, serves = [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            done = subprocess.run(
                [*BASTION, "up", "--detach", "-f", str(path)],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            ups.append(time.perf_counter() - t0)
            assert done.returncode == 0, done.stdout + done.stderr
            assert _healthy(port)
            subprocess.run([*BASTION, "down", "-f", str(path)], capture_output=True, check=True)
            t0 = time.perf_counter()
            serve = subprocess.Popen(
                [*BASTION, "serve", "digits", "-f", str(path)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            while not _healthy(port):
                assert serve.poll() is None, "bastion serve exited"
                time.sleep(0.02)
            serves.append(time.perf_counter() - t0)
            serve.terminate()
            serve.wait(60)
        up_s, serve_s = statistics.median(ups), statistics.median(serves)
        print(
            f"\nbastion up --detach to every service healthy (example, median of "
            f"{args.rounds}): {up_s:.2f} s; baseline bastion serve to healthy {serve_s:.2f} s; "
            f"ratio {up_s / serve_s:.2f}x (goal <= 5 s: {'met' if up_s <= 5 else 'MISSED'})"
        )
    finally:
        subprocess.run([*BASTION, "down", "-f", str(path)], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--fanout-events", type=int, default=40)
    parser.add_argument("--seed", type=int, default=secrets.randbelow(2**32))
    parser.add_argument(
        "--only",
        choices=("api", "up"),
        default=None,
        help="run one part: api (events, SSE fan-out, paint) or up (bastion up to healthy)",
    )
    args = parser.parse_args()
    print(f"seed {args.seed}")
    rng = random.Random(args.seed)
    if args.only in (None, "api"):
        bench_events(args, rng)
    if args.only in (None, "up"):
        bench_up(args)


if __name__ == "__main__":
    main()
