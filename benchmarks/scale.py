"""Scale-out benchmark (issue 18), in one run: each part measures Bastion and its
baseline side by side and prints the ratio.

    .venv/bin/python benchmarks/scale.py                 # all three parts
    .venv/bin/python benchmarks/scale.py --only s3,events

Parts (each is also a script of its own, with its own options and goals):
- ``s3``     benchmarks/scale_s3.py: 1 GiB vault ingest into a local S3 server
             (SeaweedFS) against boto3's ``upload_file`` of the same files. Goal >= 0.8x.
- ``ray``    benchmarks/scale_ray.py: a Ray node lost mid-training to the first resumed
             step, against Ray Train's ``FailureConfig`` recovery. Goal <= 60 s.
- ``events`` benchmarks/scale_events.py: event append throughput and p99 with 4 writer
             processes, PostgreSQL beside SQLite.

A part runs in its own process, so one part's servers and clusters are gone before the
next one starts (the machine has 2 cores).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = {"s3": "scale_s3.py", "ray": "scale_ray.py", "events": "scale_events.py"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts")
    args = parser.parse_args()
    chosen = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    failed: list[str] = []
    for part in chosen:
        print(f"\n=== {part}: {PARTS[part]} ===", flush=True)
        started = time.monotonic()
        done = subprocess.run([sys.executable, str(HERE / PARTS[part])], check=False)
        print(f"--- {part}: exit {done.returncode} in {time.monotonic() - started:.0f} s")
        if done.returncode:
            failed.append(part)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
