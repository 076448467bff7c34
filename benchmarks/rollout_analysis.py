"""Rollout analysis benchmark: how long one ``judge`` call takes, and (``--aa``) the
false-rollback rate of A/A rollouts under the default plan of 40 looks.

    .venv/bin/python benchmarks/rollout_analysis.py              # timing at 300 .. 5000 per arm
    .venv/bin/python benchmarks/rollout_analysis.py --aa 2000    # + 2000 A/A rollouts, 40 looks

Goal (issue 14): well under 50 ms per call at 5000 latencies per arm, on 2 shared cores;
the controller calls it once per arm pair per evaluation interval.

The arms are those of tests/unit/test_rollout_analysis.py: lognormal latencies around
40 ms (sigma 0.35), 1 % errors, a histogram over 6 labels, a golden probe every 4
requests. An A/A rollout here is 5 steps of 8 cumulative looks (50 .. 400 requests per
arm, a fresh window each step); any ``fail`` in it is a false rollback.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests" / "unit"))

from test_rollout_analysis import stream  # noqa: E402

from bastion.rollout import AnalysisSettings, judge  # noqa: E402


def timing(sizes: list[int], repeat: int) -> None:
    rng = np.random.default_rng(0)
    for n in sizes:
        b, c = stream(rng, n), stream(rng, n)
        wb, wc = b.window(n), c.window(n)
        judge(wb, wc, look=1)  # imports, first-call caches
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            judge(wb, wc, look=1)
            times.append(time.perf_counter() - t0)
        print(
            f"judge, {n:>5} per arm: median {statistics.median(times) * 1000:.2f} ms, "
            f"best {min(times) * 1000:.2f} ms, worst {max(times) * 1000:.2f} ms ({repeat} runs)"
        )


def aa(rollouts: int, seed: int) -> None:
    cfg = AnalysisSettings()
    per_step = [50, 100, 150, 200, 250, 300, 350, 400]
    steps = cfg.max_looks // len(per_step)
    rng = np.random.default_rng(seed)
    false_rollbacks = 0
    by_check: dict[str, int] = {}
    t0 = time.perf_counter()
    for _ in range(rollouts):
        look, failed = 0, False
        for _ in range(steps):
            b, c = stream(rng, per_step[-1]), stream(rng, per_step[-1])
            for n in per_step:
                look += 1
                v = judge(b.window(n), c.window(n), look=look, settings=cfg)
                if v.outcome == "fail":
                    failed = True
                    for ch in v.checks:
                        if ch.outcome == "fail":
                            by_check[ch.name] = by_check.get(ch.name, 0) + 1
        false_rollbacks += failed
    print(
        f"A/A, seed {seed}: {false_rollbacks}/{rollouts} rollouts of {steps * len(per_step)} "
        f"looks falsely rolled back ({false_rollbacks / rollouts:.2%}, alpha {cfg.alpha:.0%}); "
        f"failing checks {by_check}; {time.perf_counter() - t0:.0f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 1000, 5000])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--aa", type=int, default=0, metavar="ROLLOUTS")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    timing(args.sizes, args.repeat)
    if args.aa:
        aa(args.aa, args.seed)


if __name__ == "__main__":
    main()
