"""Issue 16's benchmarks: segments that contain a breach, and the playbooks that respond.

This file holds the playbook section; the vault server's ingest, quarantine and
reconstitution sections are added beside it.

**Playbook latency**: from an event appended to the log to its playbook action starting.
A real ``bastion playbook run`` process follows a fresh log (its default poll, 10 ms when
idle); this process appends ``--triggers`` events (``train.exited`` with ``oom: true``,
each its own incident) at seeded random gaps, and the latency of each is the
``playbook.action.started`` event's ``mono_ns`` minus the trigger's (CLOCK_MONOTONIC is one
clock for every process). Goal: p99 <= 100 ms. The floor beside it is a bare follower
process: ``EventLog.follow`` at the same poll interval, which only reads each event and
notes when (what any follower of the log pays); the ratio is what planning, claiming the
incident and the action (the ledger's transactions) and recording the decisions add.

Run: ``.venv/bin/python benchmarks/segments.py [--triggers 300] [--seed N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bastion import event_kinds as ek
from bastion.events import EventLog

GOAL_P99_MS = 100.0

FLOOR = """
import sys, time
from bastion.events import EventLog
log = EventLog(sys.argv[1])
print("READY", flush=True)
for event in log.follow(after_id=int(sys.argv[2]), poll_s=float(sys.argv[3])):
    print(event.id, time.monotonic_ns(), flush=True)
"""

MANIFEST = """version: 1
system: bench
playbooks:
  limits: {rate_burst: 10000, rate_per_minute: 100000, blast_radius: 10}
  rules:
    oom:
      on: train.exited
      when: {data.oom: true}
      actions:
        - do: run
          command: ["true"]
"""


def _quantiles(values_ms: list[float]) -> dict[str, float]:
    ordered = sorted(values_ms)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    return {
        "p50": q(0.50),
        "p90": q(0.90),
        "p99": q(0.99),
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


def _wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def playbook_latency(triggers: int, rng: random.Random, poll_s: float) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="bastion-bench-playbooks-"))
    (root / "bastion.yaml").write_text(MANIFEST)
    db = root / ".bastion" / "events.db"
    log = EventLog(db)
    runner = subprocess.Popen(
        [sys.executable, "-m", "bastion", "playbook", "run", "-f", str(root / "bastion.yaml"),
         "--poll-ms", str(poll_s * 1000)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    floor = subprocess.Popen(
        [sys.executable, "-c", FLOOR, str(db), "0", str(poll_s)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert floor.stdout is not None
        assert floor.stdout.readline().strip() == "READY"
        _wait(lambda: log.count(ek.PLAYBOOK_RUNNER_STARTED) == 1, 60, "the runner to start")
        time.sleep(0.5)  # both followers idle, polling, as in production between events
        sent: dict[int, int] = {}
        for _ in range(triggers):
            event = log.emit(ek.TRAIN_EXITED, "train-digits", oom=True, code=137)
            sent[event.id] = event.mono_ns
            time.sleep(rng.uniform(0.005, 0.05))
        _wait(
            lambda: log.count(ek.PLAYBOOK_RESOLVED) + log.count(ek.PLAYBOOK_ESCALATED) >= triggers,
            120,
            "every trigger's playbook to finish",
        )
        started = {
            int(e.data["incident"]): e.mono_ns for e in log.query(kind=ek.PLAYBOOK_ACTION_STARTED)
        }
        bastion = [(started[i] - mono) / 1e6 for i, mono in sent.items()]
        floor_seen: dict[int, int] = {}
        while len(floor_seen) < len(sent):
            line = floor.stdout.readline()
            if not line:
                break
            ident, seen = map(int, line.split())
            if ident in sent:
                floor_seen[ident] = seen
        base = [(floor_seen[i] - sent[i]) / 1e6 for i in sent if i in floor_seen]
    finally:
        for proc in (runner, floor):
            proc.terminate()
            proc.communicate(timeout=60)
        log.close()
    return {"bastion_ms": _quantiles(bastion), "floor_ms": _quantiles(base), "n": len(bastion)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--triggers", type=int, default=300)
    parser.add_argument("--poll-ms", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else secrets.randbelow(2**32)
    print(f"seed {seed} (replay: --seed {seed}); {os.cpu_count()} CPUs")
    result = playbook_latency(args.triggers, random.Random(seed), args.poll_ms / 1000)
    b, f = result["bastion_ms"], result["floor_ms"]
    assert isinstance(b, dict)
    assert isinstance(f, dict)
    print(f"\nplaybook latency, event appended -> action started ({result['n']} triggers)")
    print(f"{'':>22} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}")
    for name, q in (("bastion playbook run", b), ("bare follower (floor)", f)):
        print(f"{name:>22} " + " ".join(f"{q[k]:8.1f}" for k in ("p50", "p90", "p99", "max")))
    ratio = b["p99"] / f["p99"] if f["p99"] > 0 else float("inf")
    verdict = "PASS" if b["p99"] <= GOAL_P99_MS else "FAIL"
    print(f"p99 {b['p99']:.1f} ms (goal <= {GOAL_P99_MS:.0f} ms): {verdict}; "
          f"bastion / floor p99 = {ratio:.2f}x")  # fmt: skip
    if args.json:
        print(json.dumps({"seed": seed, "playbook_latency": result}, sort_keys=True))


if __name__ == "__main__":
    main()
