"""Drawing a ``MapReport``: text (SPOFs first, with what to do), JSON, Mermaid, DOT.

Owns: turning the report into strings. The HTML page is ``_html``. Must never: compute
anything the report does not hold (a renderer that decides is a second analysis).
"""

from __future__ import annotations

import json
import re
from typing import Any

from bastion.map._analysis import MapReport, advice, fmt_availability, to_json
from bastion.map._observed import ObservedReport

__all__ = ["FORMATS", "render"]

FORMATS = ("text", "json", "mermaid", "dot", "html")


def render(report: MapReport, fmt: str, observed: ObservedReport | None = None) -> str:
    if fmt == "text":
        return _text(report, observed)
    if fmt == "json":
        doc: dict[str, Any] = to_json(report)
        doc["observed"] = observed.to_json() if observed is not None else None
        return json.dumps(doc, indent=2, sort_keys=False) + "\n"
    if fmt == "mermaid":
        return _mermaid(report)
    if fmt == "dot":
        return _dot(report)
    if fmt == "html":
        from bastion.map._html import html

        return html(report, observed)
    raise ValueError(f"unknown format {fmt!r} (use one of: {', '.join(FORMATS)})")


def _describe(report: MapReport, event_id: str) -> str:
    event = report.event(event_id)
    if event.kind == "common-cause":
        return f"everything on {event.tag} {event.value} ({', '.join(event.members)})"
    node = report.graph.nodes[event.node or event_id]
    bits = [node.kind, node.location]
    if node.provider:
        bits.append(f"provider {node.provider}")
    return f"{node.label or node.id} ({', '.join(bits)})"


def _text(report: MapReport, observed: ObservedReport | None) -> str:
    out: list[str] = []
    st = report.statistics
    out.append(
        f"{report.system}: dependency map of {int(st['nodes'])} components, "
        f"{int(st['events'])} failure events, cut sets up to order {report.max_order}, "
        f"common-cause beta {report.beta:g}"
    )
    spofs = report.spofs
    out.append("")
    if spofs:
        out.append(f"SINGLE POINTS OF FAILURE ({len(spofs)})")
        for event_id, downed in spofs.items():
            out.append(f"  {event_id}: {_describe(report, event_id)}")
            out.append(f"    takes down: {', '.join(downed)}")
            out.append(f"    fix: {advice(report, event_id)}")
    else:
        out.append("no single point of failure")
    for f in report.findings:
        if f.severity == "breach":
            out.append(f"BREACH {f.message}")
            if f.fix:
                out.append(f"    fix: {f.fix}")
    out.append("")
    if not report.tops:
        out.append(
            "nothing to analyse: the manifest declares no services, jobs or components "
            "(declare what the system depends on under components:)"
        )
    for top in report.tops:
        target = ""
        if top.objective is not None:
            verdict = "met" if top.met else "BREACHED"
            target = f" (objective {top.objective}: {verdict})"
        avail = fmt_availability(top.availability)
        unknown = (
            f"; {len(top.unknown)} event(s) with no declared availability count as always up"
            if top.unknown
            else ""
        )
        out.append(f"{top.kind} {top.id}: availability {avail}{target}{unknown}")
        by_order: dict[int, list[str]] = {}
        for c in top.cut_sets:
            by_order.setdefault(c.order, []).append("{" + ", ".join(c.events) + "}")
        for order, sets in sorted(by_order.items()):
            shown = " ".join(sets[:12]) + (f" ... ({len(sets)} in all)" if len(sets) > 12 else "")
            out.append(f"  order {order} cut sets: {shown}")
        if not top.cut_sets:
            out.append(f"  no cut set up to order {report.max_order}")
        if top.importance:
            ranked = ", ".join(
                f"{i.event} (FV {i.fussell_vesely:.3f}, Birnbaum {i.birnbaum:.3g})"
                for i in top.importance[:5]
            )
            out.append(f"  fix first: {ranked}")
    out.extend(_vendor_lines(report))
    others = [f for f in report.findings if f.severity in ("warning", "info")]
    if others:
        out.append("")
        for f in others:
            out.append(f"{f.severity}: {f.message}")
            if f.fix:
                out.append(f"    fix: {f.fix}")
    if observed is not None:
        out.append("")
        out.append(f"observed: {observed.events} dep.used event(s)")
        out.extend(
            f"  UNDECLARED {d.subject} -> {d.target} (via {d.via}, seen {d.count}x): "
            f"declare it in {d.subject}'s depends_on, backends or inputs"
            for d in observed.undeclared
        )
        if not observed.undeclared:
            out.append("  every observed dependency is declared")
        for subject, target in observed.never_seen:
            out.append(f"  declared but not seen: {subject} -> {target}")
    out.append("")
    failing = [f for f in report.findings if f.failing]
    undeclared = len(observed.undeclared) if observed is not None else 0
    if failing or undeclared:
        out.append(
            f"verdict: FAIL ({len(spofs)} SPOF(s), "
            f"{sum(f.severity == 'breach' for f in failing)} target breach(es)"
            + (f", {undeclared} undeclared dependency(ies)" if observed is not None else "")
            + ")"
        )
    else:
        out.append("verdict: ok")
    return "\n".join(out) + "\n"


def _vendor_lines(report: MapReport) -> list[str]:
    """Spend concentration per vendor beside availability concentration."""
    if not report.vendors:
        return []
    out = ["", "VENDORS (share of spend | share of unavailability)"]
    for v in report.vendors:
        money = ", ".join(f"{100 * s:.1f}% {c}" for c, s in v.spend_share.items()) or "no spend"
        fails = (
            ", ".join(f"{100 * s:.1f}% of {t}" for t, s in v.unavailability_share.items())
            or "in no cut set"
        )
        mark = "  CONCENTRATED" if v.concentrated else ""
        spof = " (SPOF)" if v.spof else ""
        out.append(f"  {v.vendor}: {money} | {fails}{spof}{mark}")
    return out


def _mid(node_id: str) -> str:
    return "n_" + re.sub(r"[^A-Za-z0-9_]", "_", node_id)


def _spof_nodes(report: MapReport) -> set[str]:
    out = set()
    for event_id in report.spofs:
        event = report.event(event_id)
        if event.node:
            out.add(event.node)
        else:
            out.update(event.members)
    return out


def _mermaid(report: MapReport) -> str:
    graph = report.graph
    spof = _spof_nodes(report)
    lines = ["flowchart BT"]
    by_location: dict[str, list[str]] = {}
    for node_id in graph.order:
        by_location.setdefault(graph.nodes[node_id].location, []).append(node_id)
    for location, ids in by_location.items():
        lines.append(f'  subgraph {_mid("loc_" + location)}["{location}"]')
        for node_id in ids:
            label = node_id.replace('"', "'")
            lines.append(f'    {_mid(node_id)}["{label}"]')
        lines.append("  end")
    for node in graph.nodes.values():
        me = _mid(node.id)
        n = len(node.members)
        lines.extend(f"  {_mid(dep)} --> {me}" for dep in node.hard)
        lines.extend(f"  {_mid(dep)} -.-> {me}" for dep in node.soft)
        lines.extend(f'  {_mid(m)} ==>|"{node.k} of {n}"| {me}' for m in node.members)
    lines.append("  classDef spof fill:#fdd,stroke:#c00,stroke-width:3px")
    lines.append("  classDef top fill:#def,stroke:#036")
    if spof:
        lines.append("  class " + ",".join(_mid(n) for n in sorted(spof)) + " spof")
    tops = [n for n in graph.tops() if n not in spof]
    if tops:
        lines.append("  class " + ",".join(_mid(n) for n in tops) + " top")
    return "\n".join(lines) + "\n"


def _dot(report: MapReport) -> str:
    graph = report.graph
    spof = _spof_nodes(report)

    def q(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"digraph {q(report.system)} {{", "  rankdir=BT;", "  node [shape=box];"]
    by_location: dict[str, list[str]] = {}
    for node_id in graph.order:
        by_location.setdefault(graph.nodes[node_id].location, []).append(node_id)
    for location, ids in by_location.items():
        lines.append(f"  subgraph {q('cluster_' + location)} {{")
        lines.append(f"    label={q(location)};")
        for node_id in ids:
            node = graph.nodes[node_id]
            attrs = [f"label={q(node_id)}"]
            if node_id in spof:
                attrs += ["style=filled", 'fillcolor="#ffdddd"', 'color="#cc0000"', "penwidth=3"]
            elif node.top:
                attrs += ["style=filled", 'fillcolor="#ddeeff"']
            lines.append(f"    {q(node_id)} [{', '.join(attrs)}];")
        lines.append("  }")
    for node in graph.nodes.values():
        me = q(node.id)
        label = q(f"{node.k} of {len(node.members)}")
        lines.extend(f"  {q(dep)} -> {me};" for dep in node.hard)
        lines.extend(f"  {q(dep)} -> {me} [style=dashed];" for dep in node.soft)
        lines.extend(f"  {q(m)} -> {me} [style=bold, label={label}];" for m in node.members)
    lines.append("}")
    return "\n".join(lines) + "\n"
