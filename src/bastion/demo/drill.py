"""Demo scene: drills from the example's experiments, with recovery measured from events.

Runs three Chaos Toolkit experiments through Bastion's runner on the demo's copy of the
example: a hung server (time to detect, RTO), a latency toxic on the data path (RTO),
and a runaway ransomware drill stopped by its abort condition and rolled back (files
lost). Then a data fault on a copy of the dataset (label flips), counted.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from bastion.drill.faults import LabelFlip, Scope
from bastion.drill.runner import run_experiment

if TYPE_CHECKING:
    from bastion.demo import DemoContext, Scene

TITLE = "Drills: real faults, recovery measured (time to detect, RTO, RPO)"


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.2f} s" if isinstance(value, float) else str(value)


def _digests(root: Any) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob("*.csv"))}


def run(ctx: DemoContext) -> Scene:
    from bastion.demo import Scene

    scene = Scene(TITLE)
    experiments = ctx.workdir / "experiments"
    state_dir = ctx.manifest().state_dir
    dataset = ctx.workdir / "dataset"
    before = _digests(dataset)

    for name, expect in (("process-hang", 0), ("tcp-latency", 0), ("ransomware-abort", 1)):
        journal = ctx.workdir / "drills" / f"{name}.json"
        result = run_experiment(
            experiments / f"{name}.yaml", state_dir=state_dir, journal_path=journal, seed=7
        )
        m = result.measurements
        line = (
            f"{name}: exit {result.exit_code} ({result.status}); "
            f"detected after {_fmt(m['time_to_detect_s'])} by {m['detected_by'] or '-'}, "
            f"RTO {_fmt(m['rto_s'])}"
        )
        if m["files_lost"] is not None:
            line += f", files lost {m['files_lost']}"
        if result.aborted:
            line += f"; aborted: {result.aborted}"
        scene.findings.append(line)
        if result.exit_code != expect:
            scene.ok = False
            scene.findings.append(f"  expected exit {expect}: {'; '.join(result.problems)}")
    if _digests(dataset) != before:
        scene.ok = False
        scene.findings.append("the dataset is NOT as it was after the drills' rollbacks")
    else:
        scene.findings.append(
            f"after every rollback the dataset's {len(before)} shards are bit-identical "
            f"(journals in {ctx.workdir / 'drills'})"
        )

    copy = ctx.workdir / "drills" / "dataset-label-flip"
    with LabelFlip(
        dataset, scope=Scope.of(paths=[copy]), copy_to=copy, fraction=0.1, seed=7
    ) as fault:
        scene.findings.append(
            f"data fault on a copy: {fault.rows_changed} labels flipped (10%) across "
            f"{len(list(copy.glob('*.csv')))} shards; the original is untouched: "
            f"{_digests(dataset) == before}"
        )
    return scene
