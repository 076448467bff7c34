"""The reference drill suite (issue 15, part 5): twelve scenarios against a sandbox twin.

``run_suite(manifest, short=..., only=...)`` makes a twin of the manifest's system, runs
each scenario that applies (a replica killed or hung, vendor 429s and outage, network
latency, a full disk, a corrupt checkpoint, a killed training worker, ransomware on the
dataset, poisoned data, a swapped model, a lost vault replica) as a Chaos Toolkit
experiment in the twin's scope, measures time to detect, RTO and RPO from the events
against the manifest's ``recovery`` targets, and gives each a verdict: passed, failed,
errored (the experiment broke: never a pass) or skipped (with why). Journals go to
``<state_dir>/drills/suite/<suite id>/``. ``demo_suite`` is the short version the demo
runs. See docs/drills.md, "The reference suite".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bastion.drill.suite._run import (
    SUITE_FORMAT,
    ScenarioResult,
    SuiteResult,
    fingerprint,
    run_suite,
    select,
)
from bastion.drill.suite._scenarios import SCENARIOS, Scenario, SuiteEnv, scenario_names

__all__ = [
    "DEMO_SCENARIOS",
    "SCENARIOS",
    "SUITE_FORMAT",
    "Scenario",
    "ScenarioResult",
    "SuiteEnv",
    "SuiteResult",
    "demo_suite",
    "fingerprint",
    "run_suite",
    "scenario_names",
    "select",
    "summary_lines",
]

#: the demo's scenarios: infrastructure and ML, none that trains (seconds each)
DEMO_SCENARIOS = (
    "replica-killed",
    "vendor-outage",
    "network-latency",
    "ransomware-dataset",
    "poisoned-data",
    "swapped-model",
    "vault-replica-lost",
)


def demo_suite(manifest: str | Path, *, seed: int | None = 7, **kwargs: Any) -> SuiteResult:
    """The suite's short version for the demo: ``DEMO_SCENARIOS``, short holds, on a
    fresh twin of ``manifest``. Keyword arguments go to ``run_suite`` (``on_progress``,
    ``output``...). About a minute on the example on 2 cores, most of it the gateways'
    start-up."""
    return run_suite(manifest, short=True, only=DEMO_SCENARIOS, seed=seed, **kwargs)


def summary_lines(result: SuiteResult) -> list[str]:
    """One line per scenario (verdict, time to detect, RTO, RPO, why) and the counts:
    what a demo scene or a log shows."""

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} s"

    lines = []
    for s in result.scenarios:
        if s.verdict == "skipped":
            lines.append(f"{s.name}: skipped ({s.reason})")
            continue
        lines.append(
            f"{s.name}: {s.verdict}; detected {fmt(s.time_to_detect_s)} by {s.detected_by or '-'}, "
            f"RTO {fmt(s.rto_s)}, RPO {fmt(s.rpo_s) if s.stateful else 'n/a'}"
            + ("" if s.verdict == "passed" and s.time_to_detect_s is not None else f" ({s.reason})")
        )
    counts = ", ".join(f"{n} {v}" for v, n in result.counts.items() if n)
    lines.append(f"suite {result.suite}: {counts}; journals in {result.directory}")
    return lines
