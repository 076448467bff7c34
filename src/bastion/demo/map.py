"""Demo scene: the example system's dependency map, its SPOFs and availability vs objective.

Derives the map from the demo copy's ``bastion.yaml`` (so it cannot drift from what the
other scenes ran), reports every single point of failure and each service's exact
availability against its SLO objective, writes the HTML page next to the manifest, and
compares the declared map with the ``dep.used`` events the earlier scenes recorded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion import event_kinds as ek
from bastion.map import map_manifest, observed_dependencies, render
from bastion.map._analysis import fmt_availability

if TYPE_CHECKING:
    from bastion.demo import DemoContext, Scene

TITLE = "The dependency map: single points of failure and exact availability"


def run(ctx: DemoContext) -> Scene:
    from bastion.demo import Scene

    scene = Scene(TITLE)
    manifest = ctx.manifest()
    report = map_manifest(manifest, max_order=2)
    st = report.statistics
    scene.findings.append(
        f"derived {int(st['nodes'])} components ({int(st['events'])} failure events, "
        f"{sum(e.kind == 'common-cause' for e in report.tree.events)} common-cause groups) "
        f"from {ctx.manifest_path.name}; cut sets up to order 2 in "
        f"{(st['cut_sets_s'] + st['availability_s']) * 1000:.1f} ms"
    )
    for event_id, downed in report.spofs.items():
        scene.findings.append(f"SPOF {event_id}: takes down {', '.join(downed)}")
    for top in report.tops:
        line = f"{top.kind} {top.id}: availability {fmt_availability(top.availability)}"
        if top.objective is not None:
            line += f" vs objective {top.objective}: {'met' if top.met else 'BREACHED'}"
        pairs = [" + ".join(c.events) for c in top.cut_sets if c.order == 2]
        if pairs:
            line += f"; shared-fate pairs: {'; '.join(pairs[:3])}"
        scene.findings.append(line)
    page = ctx.workdir / "map.html"
    with ctx.events() as log:
        observed = observed_dependencies(manifest, log)
        page.write_text(render(report, "html", observed), encoding="utf-8")
        log.emit(
            ek.MAP_ANALYSED,
            subject=manifest.system,
            spofs=len(report.spofs),
            tops={t.id: t.availability for t in report.tops},
            undeclared=len(observed.undeclared),
        )
    scene.findings.append(
        f"observed: {observed.events} dep.used event(s) in the log, "
        f"{len(observed.undeclared)} undeclared dependency(ies)"
        + "".join(f"; {d.subject} -> {d.target}" for d in observed.undeclared[:3])
    )
    scene.findings.append(
        f"wrote {page} (open it in a browser); `bastion map` would exit "
        f"{0 if report.ok else 1} ({'ok' if report.ok else 'SPOF or breach: gate CI on it'})"
    )
    with_objective = [t for t in report.tops if t.objective is not None]
    scene.ok = bool(report.tops) and bool(with_objective) and bool(report.spofs)
    if not scene.ok:
        scene.findings.append(
            "expected the example to show a SPOF and a service with an availability objective"
        )
    return scene
