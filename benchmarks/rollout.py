"""Model rollouts, measured: time to roll back, exposure, gateway CPU with a split, wall time.

The example's digits model is served by ``bastion serve`` (the gateway in its own process,
one supervised replica per arm) from a vault this script fills: ``@prod`` (the NumPy MLP
the demo trains), a bad candidate (its weights degraded: it loads and answers 200, wrongly;
``bastion.demo.rollout.prepare``) and a good one (trained longer, with a passing
model-gate verdict). Open-loop load at ``--rate`` req/s, each request from one of 10,000
users (``x-bastion-user``, so the canary's share is by user), one ``/v1/predict`` body.
Measured, in one run:

- **Time to roll back**: a canary of the bad candidate at a 10% step, at each
  ``--intervals`` (default 1, 2 and 5 s), ``--repeats`` times each: from its first
  answer (the client's view: the first response whose ``x-bastion-backend`` is a
  candidate replica) and from ``rollout.step`` (its weight set to 10%) to
  ``rollout.rolled_back`` (its weight 0), from the event log's monotonic times, which
  are the client's clock. Also the last answer the client got from it. Goal: <= 2
  evaluation intervals, and <= 10 s at a 5 s interval. Beside it, Flagger's defaults
  (interval 60 s x threshold 5: about 300 s of failed checks before a rollback).
- **Exposure**: requests the bad candidate answered before its rollback, against the
  share each step gave it x the requests answered while it held that step.
- **Gateway CPU per request** (user+sys of the gateway process alone, not its replicas,
  from /proc through psutil, over closed-loop load of ``--concurrency`` clients) with a
  canary split (10%) and with shadow mirroring (10% copied), against the same gateway with
  no rollout, in interleaved rounds (the machine's load drifts); the median of per-round
  ratios. Goal: <= 1.15x for a canary; for shadow the ratio is printed (a mirrored copy
  is a second upstream request, by design).
- **Wall time** of a full canary rollout of the good candidate (steps 5, 25, 50, 100 at a
  ``--wall-interval``, one look a step) from its first step to ``rollout.promoted``,
  against the sum of its planned steps (3 x interval). Goal: <= 1.05x. The candidate
  replicas' start (before the first step) is printed apart.

``min_samples`` is set to ``--min-samples`` (default 20): a property of the traffic, so
that at 10% of ``--rate`` one interval holds enough requests per arm. Seeded
(``--seed``, printed): the users' order.

Run: ``.venv/bin/python benchmarks/rollout.py [--rate 300] [--intervals 1,2,5] [--seed N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "digits"
FLAGGER_S = 60 * 5  # Flagger's default interval x threshold
ACTIVE = ("starting", "running")
PRELOAD = ""  # an experiment: modules the gateway imports before it starts
RUN = "\nfrom bastion.cli.main import main\nmain()\n"

MANIFEST = """\
version: 1
system: digits
state_dir: .bastion-{phase}
vault:
  replicas: [.bastion/vault/a, .bastion/vault/b]
  key: .bastion/keys/signing.key
  admin_key: .bastion/keys/admin.key
services:
  digits:
    listen: 127.0.0.1:{port}
    backends:
      - name: local
        model: model/digits@prod
        replicas: {{min: 1, max: 1}}
    policy: {{timeout_ms: 2000, retry_budget: 0.2}}
    rollout:
      steps: {steps}
      interval_s: {interval}
      looks_per_step: 1
      min_samples: {min_samples}
      max_extensions: 10
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``bastion serve`` on one phase's manifest, in its own process."""

    def __init__(self, root: Path, phase: str, **policy: Any) -> None:
        self.port = free_port()
        self.path = root / f"bastion-{phase}.yaml"
        self.path.write_text(MANIFEST.format(phase=phase, port=self.port, **policy))
        self.state = root / f".bastion-{phase}"
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PRELOAD + RUN, "serve", "-f", str(self.path)]
            if PRELOAD
            else [sys.executable, "-m", "bastion", "serve", "-f", str(self.path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.ps = psutil.Process(self.proc.pid)

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()  # this process only: its replicas are children
        return float(t.user + t.system)

    def events(self, kind: str) -> list[Any]:
        from bastion.events import EventLog

        with EventLog.in_state_dir(self.state) as log:
            return list(log.query(kind=kind))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def wait_ready(session: Any, server: Server, body: bytes, within: float = 120) -> None:
    import aiohttp

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            async with session.post(
                server.url + "/v1/predict", data=body, headers={"Content-Type": "application/json"}
            ) as r:
                await r.read()
                if r.status == 200 and "local-" in r.headers.get("x-bastion-backend", ""):
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit(f"{server.url} never answered from its replica (logs: {server.state})")


async def rollout(session: Any, server: Server, method: str, path: str = "", **body: Any) -> Any:
    url = server.url + "/bastion/rollout" + path
    if method == "GET":
        async with session.get(url) as r:
            return (await r.json())["rollout"]
    async with session.post(url, json=body) as r:
        got = await r.json()
        if r.status != 200:
            raise SystemExit(f"POST {url} {body}: {r.status} {got}")
        return got["rollout"]


async def until(session: Any, server: Server, cond: Any, within: float = 120) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        state = await rollout(session, server, "GET")
        if state is not None and cond(state):
            return state
        await asyncio.sleep(0.02)
    raise SystemExit(f"rollout on {server.url} did not reach the state in {within:g} s")


class Load:
    """Open-loop load at ``rate`` req/s; every answer kept as (done mono, status, backend)."""

    def __init__(self, session: Any, url: str, body: bytes, rate: float, rng: random.Random):
        self.session, self.url, self.body, self.rate, self.rng = session, url, body, rate, rng
        self.answers: list[tuple[float, int, str]] = []
        self.failed = 0
        self.kinds: dict[str, int] = {}
        self.failed_at: list[float] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _one(self) -> None:
        import aiohttp

        headers = {
            "Content-Type": "application/json",
            "x-bastion-user": f"u{self.rng.randrange(10_000)}",
        }
        try:
            async with self.session.post(self.url, data=self.body, headers=headers) as r:
                await r.read()
                self.answers.append(
                    (time.monotonic(), r.status, r.headers.get("x-bastion-backend", ""))
                )
                if r.status != 200:
                    self.failed += 1
                    self.failed_at.append(time.monotonic())
                    self.kinds[str(r.status)] = self.kinds.get(str(r.status), 0) + 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.failed += 1
            self.failed_at.append(time.monotonic())
            self.kinds[type(exc).__name__] = self.kinds.get(type(exc).__name__, 0) + 1

    async def _run(self) -> None:
        tasks: set[asyncio.Task[None]] = set()
        start, i = time.monotonic(), 0
        while not self._stop.is_set():
            due = int((time.monotonic() - start) * self.rate)
            while i < due:
                t = asyncio.create_task(self._one())
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                i += 1
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task


async def closed_loop(session: Any, url: str, body: bytes, concurrency: int, seconds: float) -> int:
    done = 0
    stop = time.monotonic() + seconds
    rng = random.Random(0)

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < stop:
            headers = {
                "Content-Type": "application/json",
                "x-bastion-user": f"u{rng.randrange(10_000)}",
            }
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
                done += r.status == 200

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def _looks(events: list[Any]) -> list[str]:
    """Each verdict as "t+<s since the step> <outcome> <candidate>/<baseline requests>"."""
    out, t0 = [], None
    for e in events:
        if e.kind == "rollout.step":
            t0 = _mono(e)
            out.append(f"step {e.data['weight']:g}%")
        elif e.kind == "rollout.verdict" and t0 is not None:
            out.append(
                f"t+{_mono(e) - t0:.2f} {e.data.get('outcome')} "
                f"{e.data.get('candidate_requests')}/{e.data.get('baseline_requests')}"
            )
    return out


def _mono(e: Any) -> float:
    return float(e.mono_ns) / 1e9


async def rollbacks(
    root: Path, made: Any, interval: float, args: argparse.Namespace, rng: random.Random
) -> list[dict[str, Any]]:
    import aiohttp

    server = Server(
        root,
        f"rollback-{interval:g}",
        steps="[10, 50, 100]",
        interval=interval,
        min_samples=args.min_samples,
    )
    rows = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            await wait_ready(s, server, made.body)
            for _ in range(args.repeats):
                load = Load(s, server.url + "/v1/predict", made.body, args.rate, rng)
                load.start()
                await asyncio.sleep(1.0)
                started = await rollout(s, server, "POST", candidate=made.bad.ref)
                rid = started["id"]
                end = await until(
                    s, server, lambda st, rid=rid: st["id"] == rid and st["status"] not in ACTIVE
                )
                await asyncio.sleep(0.5)
                await load.stop()
                mine = [e for e in server.events("rollout.*") if e.data.get("rollout") == rid]
                step = next(e for e in mine if e.kind == "rollout.step" and e.data["weight"] > 0)
                gone = next(e for e in mine if e.kind in ("rollout.rolled_back", "rollout.aborted"))
                tag = f"-candidate-{rid[-6:]}-"
                bad = [t for t, _, b in load.answers if tag in b]
                window = [t for t, _, _ in load.answers if _mono(step) <= t <= _mono(gone)]
                held = _mono(gone) - _mono(step)
                rate = len(window) / held if held > 0 else 0.0
                # the share each step gave it x the requests answered while it held
                marks = [(_mono(e), e.data["weight"]) for e in mine if e.kind == "rollout.step"]
                marks.append((_mono(gone), 0.0))
                expected = sum(
                    w / 100 * sum(1 for t in window if a <= t < b)
                    for (a, w), (b, _) in itertools.pairwise(marks)
                )
                rows.append(
                    {
                        "interval_s": interval,
                        "status": end["status"],
                        "looks": end["looks"],
                        "reason": end["reason"][:120],
                        "step_to_weight0_s": held,
                        "first_bad_to_weight0_s": _mono(gone) - min(bad) if bad else None,
                        "first_to_last_bad_answer_s": max(bad) - min(bad) if bad else None,
                        "exposed": len(bad),
                        "expected_exposure": expected,
                        "steps_reached": [w for _, w in marks[:-1]],
                        "achieved_rps": rate,
                        "failed": load.failed,
                        "failures": load.kinds,
                        "failed_s_after_step": [
                            round(min(load.failed_at) - _mono(step), 2),
                            round(max(load.failed_at) - _mono(step), 2),
                        ]
                        if load.failed_at
                        else None,
                        "looks_seen": _looks(mine),
                    }
                )
    finally:
        server.stop()
    return rows


async def cpu(root: Path, made: Any, args: argparse.Namespace) -> list[dict[str, float]]:
    import aiohttp

    server = Server(root, "cpu", steps="[10, 50, 100]", interval=3600, min_samples=args.min_samples)
    rounds = []
    url = server.url + "/v1/predict"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            await wait_ready(s, server, made.body)
            await closed_loop(s, url, made.body, args.concurrency, 1.0)  # warm

            async def measure() -> float:
                c0 = server.cpu_s()
                n = await closed_loop(s, url, made.body, args.concurrency, args.cpu_seconds)
                return (server.cpu_s() - c0) / n * 1e3

            for _ in range(args.rounds):
                row = {"none": await measure()}
                for strategy in ("canary", "shadow"):
                    await rollout(s, server, "POST", candidate=made.good.ref, strategy=strategy)
                    await until(
                        s, server, lambda st: st["status"] == "running" and st["weight"] > 0
                    )
                    await closed_loop(s, url, made.body, args.concurrency, 0.5)  # warm
                    row[strategy] = await measure()
                    await rollout(s, server, "POST", "/abort")
                row["none_after"] = await measure()
                rounds.append(row)
    finally:
        server.stop()
    return rounds


async def wall(
    root: Path, made: Any, args: argparse.Namespace, rng: random.Random
) -> dict[str, Any]:
    import aiohttp

    steps = [5, 25, 50, 100]
    server = Server(
        root, "wall", steps=str(steps), interval=args.wall_interval, min_samples=args.min_samples
    )
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            await wait_ready(s, server, made.body)
            load = Load(s, server.url + "/v1/predict", made.body, args.rate, rng)
            load.start()
            await asyncio.sleep(1.0)
            started = await rollout(s, server, "POST", candidate=made.good.ref)
            rid = started["id"]
            end = await until(s, server, lambda st: st["id"] == rid and st["status"] not in ACTIVE)
            await asyncio.sleep(0.5)
            await load.stop()
            mine = [e for e in server.events("rollout.*") if e.data.get("rollout") == rid]
    finally:
        server.stop()
    begun = next(e for e in mine if e.kind == "rollout.started")
    first = next(e for e in mine if e.kind == "rollout.step")
    last = next(
        e for e in mine if e.kind in ("rollout.promoted", "rollout.rolled_back", "rollout.aborted")
    )
    planned = (len(steps) - 1) * args.wall_interval
    return {
        "status": end["status"],
        "reason": end["reason"][:120],
        "looks": end["looks"],
        "planned_looks": len(steps) - 1,
        "planned_s": planned,
        "steps_wall_s": _mono(last) - _mono(first),
        "candidate_start_s": _mono(first) - _mono(begun),
        "failed": load.failed,
        "failures": load.kinds,
        "looks_seen": _looks(mine),
        "answered": len(load.answers),
        "looks_wall_s": end["looks"] * args.wall_interval,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=120.0, help="open-loop load, req/s")
    ap.add_argument("--intervals", default="1,2,5", help="analysis intervals, seconds")
    ap.add_argument("--repeats", type=int, default=2, help="rollbacks per interval")
    ap.add_argument("--min-samples", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=16, help="CPU phase's clients")
    ap.add_argument("--cpu-seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved CPU rounds")
    ap.add_argument("--wall-interval", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=None)

    args = ap.parse_args()
    seed = args.seed if args.seed is not None else secrets.randbelow(2**32)
    print(f"seed {seed} (replay: --seed {seed})")
    rng = random.Random(seed)
    from bastion.demo.rollout import prepare
    from bastion.manifest import load
    from bastion.starter import init
    from bastion.vault import Vault

    root = Path(tempfile.mkdtemp(prefix="bastion-rbench-")) / "digits"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".bastion", "__pycache__"))
    try:
        init(root)
        made = prepare(Vault.from_manifest(load(root / "bastion.yaml")), root)
        print(f"@prod {made.prod.ref}; bad {made.bad.ref}; good {made.good.ref}; {made.gate}")
        intervals = [float(x) for x in args.intervals.split(",")]
        back = [row for i in intervals for row in asyncio.run(rollbacks(root, made, i, args, rng))]
        print(json.dumps({"rollback": back}, indent=1))
        rounds = asyncio.run(cpu(root, made, args))
        print(json.dumps({"cpu_ms_per_request": rounds}, indent=1))
        w = asyncio.run(wall(root, made, args, rng))
        print(json.dumps({"wall": w}, indent=1))
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)

    print(f"\nseed {seed}; load {args.rate:g} req/s open loop, min_samples {args.min_samples}")
    for i in intervals:
        rows = [r for r in back if r["interval_s"] == i]
        firsts = [
            r["first_bad_to_weight0_s"] for r in rows if r["first_bad_to_weight0_s"] is not None
        ]
        steps_s = [r["step_to_weight0_s"] for r in rows]
        worst = max(firsts) if firsts else float("nan")
        goal = 2 * i
        print(
            f"time to roll back at a {i:g} s interval ({len(rows)} runs, "
            f"{', '.join(r['status'] for r in rows)}): first bad answer -> weight 0 "
            f"worst {worst:.2f} s = {worst / i:.2f} intervals (runs: "
            f"{', '.join(f'{x:.2f}' for x in firsts)}); step -> weight 0 "
            f"{', '.join(f'{x:.2f}' for x in steps_s)} s (goal <= {goal:g} s); "
            f"Flagger's defaults ~{FLAGGER_S} s = {FLAGGER_S / worst:.0f}x"
        )
    exposed = sum(r["exposed"] for r in back)
    expected = sum(r["expected_exposure"] for r in back)
    print(
        f"exposure: {exposed} requests answered by the bad candidate in {len(back)} rollbacks, "
        f"against the steps' share x requests while it held it {expected:.0f} "
        f"({exposed / expected:.2f}x); "
        f"{sum(r['failed'] for r in back)} client requests failed"
    )
    for strategy, goal in (("canary", "goal <= 1.15x"), ("shadow", "a copy per mirrored request")):
        ratios = sorted(r[strategy] / ((r["none"] + r["none_after"]) / 2) for r in rounds)
        print(
            f"gateway CPU/request with a {strategy} split (10%): "
            f"{statistics.median(r[strategy] for r in rounds):.3f} ms vs "
            f"{statistics.median(r['none'] for r in rounds):.3f} ms without a rollout: median "
            f"ratio {statistics.median(ratios):.3f}x (rounds: "
            f"{', '.join(f'{x:.3f}' for x in ratios)}; {goal})"
        )
    print(
        f"wall time of a full rollout ({w['status']}, {w['looks']} looks of "
        f"{w['planned_looks']} planned): {w['steps_wall_s']:.2f} s against "
        f"{w['planned_s']:g} s planned = {w['steps_wall_s'] / w['planned_s']:.3f}x "
        f"(goal <= 1.05x); against its {w['looks']} looks x interval "
        f"{w['steps_wall_s'] / w['looks_wall_s']:.3f}x; the candidate's replicas started in "
        f"{w['candidate_start_s']:.2f} s "
        f"before; {w['failed']} of {w['answered']} client requests failed"
    )


if __name__ == "__main__":
    main()
