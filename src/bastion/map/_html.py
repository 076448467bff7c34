"""The map as one self-contained HTML page: an inline SVG laid out by Graphviz.

Owns: the page. Components are grouped in boxes by location (cloud, on-prem, edge,
third-party); arrows point from what is depended on to what depends on it (so services and
jobs are on top); SPOFs are red; a legend says what each mark means; hovering a component
lights up what fails with it. The layout comes from Graphviz's ``dot`` (``dot -Tjson``: node
boxes sized to their labels, edges routed as splines around the boxes, clusters for the
locations), and the SVG is written here, so the page is the same in every browser and
needs no script to show the graph. Without ``dot`` on the PATH (``apt-get install
graphviz``), or for a graph too big for it to lay out quickly, a simple layered layout is
used instead, and the page says so.

Must never: load anything from the network (no CDN, no fonts, no images): the page is
opened on air-gapped machines and attached to incident reports.
"""

from __future__ import annotations

import html as html_lib
import json
import shutil
import subprocess
from dataclasses import dataclass, field

from bastion.map._analysis import MapReport, advice, fmt_availability
from bastion.map._observed import ObservedReport

__all__ = ["html"]

FONT_PX = 14  # node ids; Graphviz sizes boxes for this (1 point of its layout = 1 px here)
SMALL_PX = 12  # the second line of a node, cluster and edge labels
DOT_LIMIT = 600  # nodes; past this, dot's layout takes too long for an interactive command
PAD = 16
LEGEND_H = 96


@dataclass
class _Box:
    id: str
    x: float
    y: float
    w: float
    h: float
    label_x: float = 0.0
    label_y: float = 0.0


@dataclass
class _Edge:
    tail: str
    head: str
    kind: str  # hard | soft | member
    points: list[tuple[float, float]]  # a cubic Bezier path: P0, then 3 points per piece
    tip: tuple[float, float] | None = None  # where the arrowhead points
    label: str = ""
    label_at: tuple[float, float] | None = None


@dataclass
class _Layout:
    width: float
    height: float
    engine: str  # "graphviz" or "layered"
    note: str = ""
    boxes: list[_Box] = field(default_factory=list)
    nodes: dict[str, _Box] = field(default_factory=dict)
    edges: list[_Edge] = field(default_factory=list)


def _edges(report: MapReport) -> list[tuple[str, str, str, str]]:
    out: list[tuple[str, str, str, str]] = []
    for node in report.graph.nodes.values():
        n = len(node.members)
        out.extend((d, node.id, "hard", "") for d in node.hard)
        out.extend((d, node.id, "soft", "") for d in node.soft)
        out.extend((m, node.id, "member", f"{node.k} of {n}") for m in node.members)
    return out


def _second_line(report: MapReport, node_id: str) -> str:
    node = report.graph.nodes[node_id]
    bits = [node.kind]
    if node.availability is not None:
        bits.append(fmt_availability(node.availability))
    return " · ".join(bits)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot_source(report: MapReport) -> str:
    graph = report.graph
    lines = [
        "digraph map {",
        "  rankdir=BT; splines=true; nodesep=0.35; ranksep=0.55; compound=true;",
        f'  node [shape=box, fontname="Helvetica", fontsize={FONT_PX}, margin="0.18,0.08"];',
        f'  edge [fontname="Helvetica", fontsize={SMALL_PX}, arrowsize=0.8];',
    ]
    by_location: dict[str, list[str]] = {}
    for node_id in graph.order:
        by_location.setdefault(graph.nodes[node_id].location, []).append(node_id)
    for location, ids in by_location.items():
        lines.append(f"  subgraph {_quote('cluster_' + location)} {{")
        lines.append(f"    label={_quote(location)}; fontsize={SMALL_PX}; margin=14;")
        # Two lines (id, then kind and availability) so the box fits both.
        lines.extend(
            f"    {_quote(n)} [label={_quote(n + chr(10) + _second_line(report, n))}];" for n in ids
        )
        lines.append("  }")
    for tail, head, kind, label in _edges(report):
        attrs = {"soft": " [style=dashed]", "member": f" [label={_quote(label)}]"}.get(kind, "")
        lines.append(f"  {_quote(tail)} -> {_quote(head)}{attrs};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _points(text: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in (p.split(",")[:2] for p in text.split())]


def _graphviz(report: MapReport) -> _Layout | None:
    """The layout ``dot`` computes, in SVG coordinates; None when dot is not available."""
    dot = shutil.which("dot")
    if dot is None or len(report.graph.nodes) > DOT_LIMIT:
        return None
    try:
        done = subprocess.run(
            [dot, "-Tjson"],
            input=_dot_source(report),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        doc = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    _, _, gw, gh = (float(v) for v in doc["bb"].split(","))

    def at(x: float, y: float) -> tuple[float, float]:
        return x + PAD, gh - y + PAD  # Graphviz's y grows upwards, SVG's downwards

    layout = _Layout(width=gw + 2 * PAD, height=gh + 2 * PAD, engine="graphviz")
    names: dict[int, str] = {}
    for obj in doc.get("objects", []):
        if "bb" in obj:  # a cluster: a location
            x0, y0, x1, y1 = (float(v) for v in obj["bb"].split(","))
            left, top = at(x0, y1)
            lx, ly = at(*_points(obj.get("lp", f"{x0},{y1}"))[0])
            layout.boxes.append(
                _Box(str(obj.get("label", "")), left, top, x1 - x0, y1 - y0, lx, ly)
            )
            continue
        names[int(obj["_gvid"])] = str(obj["name"])
        cx, cy = at(*_points(obj["pos"])[0])
        w, h = float(obj["width"]) * 72, float(obj["height"]) * 72
        layout.nodes[str(obj["name"])] = _Box(str(obj["name"]), cx - w / 2, cy - h / 2, w, h)
    kinds = {(t, h): (k, lab) for t, h, k, lab in _edges(report)}
    for edge in doc.get("edges", []):
        tail, head = names[int(edge["tail"])], names[int(edge["head"])]
        kind, label = kinds.get((tail, head), ("hard", ""))
        tip = None
        spline = []
        for token in str(edge["pos"]).split():
            if token.startswith("e,"):
                tip = at(*_points(token[2:])[0])
            elif not token.startswith("s,"):
                spline.append(at(*_points(token)[0]))
        label_at = at(*_points(edge["lp"])[0]) if "lp" in edge else None
        layout.edges.append(_Edge(tail, head, kind, spline, tip, label, label_at))
    return layout


def _layered(report: MapReport, note: str) -> _Layout:
    """Levels by dependency depth, one column block per location, straight edges."""
    graph = report.graph
    node_w, node_h, gap_x, gap_y = 190.0, 44.0, 24.0, 56.0
    level: dict[str, int] = {}
    for node_id in graph.order:  # dependencies first
        node = graph.nodes[node_id]
        deps = (*node.hard, *node.soft, *node.members)
        level[node_id] = 1 + max((level[d] for d in deps), default=-1)
    top_level = max(level.values(), default=0)
    groups: dict[str, dict[int, list[str]]] = {}
    for node_id in graph.order:
        groups.setdefault(graph.nodes[node_id].location, {}).setdefault(level[node_id], []).append(
            node_id
        )
    height = (top_level + 1) * (node_h + gap_y) + 2 * PAD + 30
    layout = _Layout(width=0, height=height, engine="layered", note=note)
    x0 = float(PAD)
    for loc, rows in groups.items():
        width = max(len(r) for r in rows.values()) * (node_w + gap_x) + gap_x
        layout.boxes.append(_Box(loc, x0, PAD, width, height - 2 * PAD, x0 + 40, PAD + 16))
        for lvl, ids in rows.items():
            for i, node_id in enumerate(ids):
                x = x0 + gap_x + i * (node_w + gap_x)
                y = PAD + 30 + (top_level - lvl) * (node_h + gap_y)
                layout.nodes[node_id] = _Box(node_id, x, y, node_w, node_h)
        x0 += width + PAD
    layout.width = x0
    for tail, head, kind, label in _edges(report):
        a, b = layout.nodes[tail], layout.nodes[head]
        start = (a.x + a.w / 2, a.y)
        end = (b.x + b.w / 2, b.y + b.h)
        layout.edges.append(_Edge(tail, head, kind, [start, start, end, end], end, label))
    return layout


def _layout(report: MapReport) -> _Layout:
    found = _graphviz(report)
    if found is not None:
        return found
    why = (
        "Graphviz's dot is not installed (apt-get install graphviz)"
        if shutil.which("dot") is None
        else "the graph is too big for Graphviz to lay out quickly, or dot failed"
    )
    return _layered(report, f"Laid out without Graphviz: {why}; edges may cross boxes.")


def _path(edge: _Edge) -> str:
    pts = edge.points
    parts = [f"M{pts[0][0]:.1f},{pts[0][1]:.1f}"]
    for i in range(1, len(pts) - 2, 3):
        (x1, y1), (x2, y2), (x3, y3) = pts[i], pts[i + 1], pts[i + 2]
        parts.append(f"C{x1:.1f},{y1:.1f} {x2:.1f},{y2:.1f} {x3:.1f},{y3:.1f}")
    if edge.tip is not None and edge.tip != pts[-1]:
        parts.append(f"L{edge.tip[0]:.1f},{edge.tip[1]:.1f}")
    return " ".join(parts)


def _spof_nodes(report: MapReport) -> dict[str, str]:
    out: dict[str, str] = {}
    for event_id in report.spofs:
        event = report.event(event_id)
        for n in [event.node] if event.node else list(event.members):
            if n:
                out.setdefault(n, event_id)
    return out


def _legend(y: float) -> str:
    esc = html_lib.escape
    items = []
    x = PAD
    for cls, text in (
        ("top", "service or job"),
        ("spof", "single point of failure"),
        ("", "component"),
    ):
        items.append(
            f'<rect class="legend-node {cls}" x="{x}" y="{y}" width="26" height="16" rx="3"/>'
            f'<text class="legend-text" x="{x + 34}" y="{y + 13}">{esc(text)}</text>'
        )
        x += 34 + 9 * len(text) + 28
    x = PAD
    y2 = y + 32
    for cls, text in (
        ("hard", "A \u2192 B: B fails when A fails"),
        ("soft", "A \u21e2 B: B only degrades"),
        ("member", "redundancy member (k of n must be up)"),
    ):
        items.append(
            f'<path class="legend-edge {cls}" d="M{x},{y2 + 8} L{x + 40},{y2 + 8}" '
            'marker-end="url(#arrow)"/>'
            f'<text class="legend-text" x="{x + 50}" y="{y2 + 13}">{esc(text)}</text>'
        )
        x += 50 + 8 * len(text) + 28
    items.append(
        f'<rect class="legend-location" x="{PAD}" y="{y + 62}" width="26" height="16" rx="3"/>'
        f'<text class="legend-text" x="{PAD + 34}" y="{y + 75}">a location (cloud, on-prem, '
        "edge, third-party): hover a component to see what fails with it</text>"
    )
    return f'<g class="legend" aria-label="legend">{"".join(items)}</g>'


def _svg(report: MapReport, layout: _Layout) -> str:
    esc = html_lib.escape
    graph = report.graph
    spof = _spof_nodes(report)
    width = max(layout.width, 900)
    height = layout.height + LEGEND_H
    out = [
        f'<svg id="map" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'data-layout="{layout.engine}" aria-label="dependency graph grouped by location">',
        "<defs>"
        '<marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto-start-reverse" markerUnits="userSpaceOnUse">'
        '<path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker>'
        "</defs>",
    ]
    out.extend(
        f'<rect class="location" data-location="{esc(box.id)}" x="{box.x:.1f}" '
        f'y="{box.y:.1f}" width="{box.w:.1f}" height="{box.h:.1f}" rx="8"/>'
        f'<text class="location-label" x="{box.label_x:.1f}" y="{box.label_y + 4:.1f}" '
        f'text-anchor="middle">{esc(box.id)}</text>'
        for box in layout.boxes
    )
    for edge in layout.edges:
        out.append(
            f'<path class="edge {edge.kind}" data-from="{esc(edge.tail)}" '
            f'data-to="{esc(edge.head)}" d="{_path(edge)}" marker-end="url(#arrow)"/>'
        )
        if edge.label and edge.label_at is not None:
            lx, ly = edge.label_at
            out.append(
                f'<text class="edge-label" x="{lx:.1f}" y="{ly + 4:.1f}" '
                f'text-anchor="middle">{esc(edge.label)}</text>'
            )
    for node_id in graph.order:
        node = graph.nodes[node_id]
        box = layout.nodes[node_id]
        cls = "node" + (" spof" if node_id in spof else "") + (" top" if node.top else "")
        own = report.blast_radius.get(node_id)
        blast = own.fails if own else []
        tip = f"{node_id} ({node.kind}, {node.location})"
        if node.availability is not None:
            tip += f", availability {fmt_availability(node.availability)}"
        if node_id in spof:
            tip += f"\nSPOF: {advice(report, spof[node_id])}"
        if blast:
            tip += f"\nif it fails: {', '.join(blast)}"
        cx = box.x + box.w / 2
        out.append(
            f'<g class="{cls}" data-id="{esc(node_id)}" data-location="{esc(node.location)}" '
            f"data-blast='{esc(json.dumps(blast))}'>"
            f"<title>{esc(tip)}</title>"
            f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.w:.1f}" height="{box.h:.1f}" '
            'rx="5"/>'
            f'<text class="node-id" x="{cx:.1f}" y="{box.y + box.h / 2 - 2:.1f}" '
            f'text-anchor="middle">{esc(node_id)}</text>'
            f'<text class="node-kind" x="{cx:.1f}" y="{box.y + box.h / 2 + 13:.1f}" '
            f'text-anchor="middle">{esc(_second_line(report, node_id))}</text>'
            "</g>"
        )
    out.append(_legend(layout.height + 8))
    out.append("</svg>")
    return "".join(out)


_SCRIPT = r"""
(function () {
  var svg = document.getElementById('map');
  var nodes = svg.querySelectorAll('g.node');
  nodes.forEach(function (g) {
    var blast = JSON.parse(g.getAttribute('data-blast') || '[]');
    g.addEventListener('mouseenter', function () {
      blast.forEach(function (id) {
        var x = svg.querySelector('g.node[data-id="' + CSS.escape(id) + '"]');
        if (x) { x.classList.add('blast'); }
      });
    });
    g.addEventListener('mouseleave', function () {
      svg.querySelectorAll('g.blast').forEach(function (x) { x.classList.remove('blast'); });
    });
  });
  document.body.setAttribute('data-drawn-nodes', String(nodes.length));
  document.body.setAttribute('data-drawn-spofs', String(svg.querySelectorAll('g.spof').length));
})();
"""

# Nothing may load from anywhere: the browser itself enforces "self-contained".
_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

_STYLE = f"""
body {{ font: 15px Helvetica, Arial, "Liberation Sans", sans-serif; margin: 16px; color: #222; }}
#map {{ display: block; margin-top: 12px; }}
#map text {{ font-family: Helvetica, Arial, "Liberation Sans", sans-serif; }}
.location {{ fill: #f6f7f9; stroke: #8a8f98; stroke-dasharray: 5 4; }}
.location-label {{ font-size: {SMALL_PX + 1}px; font-weight: bold; fill: #4a4f57; }}
.node rect {{ fill: #fff; stroke: #555; stroke-width: 1.2; }}
.node.top rect {{ fill: #ddeeff; stroke: #036; stroke-width: 1.6; }}
.node.spof rect {{ fill: #ffdddd; stroke: #c00; stroke-width: 3; }}
.node.blast rect {{ fill: #ffe9a8; }}
.node-id {{ font-size: {FONT_PX}px; font-weight: 600; fill: #111; }}
.node-kind {{ font-size: {SMALL_PX}px; fill: #555; }}
.edge, .legend-edge {{ fill: none; stroke: #6b7280; stroke-width: 1.4; }}
.edge.soft, .legend-edge.soft {{ stroke-dasharray: 6 4; }}
.edge.member, .legend-edge.member {{ stroke: #036; stroke-width: 2.2; }}
.arrowhead {{ fill: #4b5563; }}
.edge-label {{ font-size: {SMALL_PX}px; fill: #036; }}
.legend-node {{ fill: #fff; stroke: #555; }}
.legend-node.top {{ fill: #ddeeff; stroke: #036; }}
.legend-node.spof {{ fill: #ffdddd; stroke: #c00; stroke-width: 3; }}
.legend-location {{ fill: #f6f7f9; stroke: #8a8f98; stroke-dasharray: 5 4; }}
.legend-text {{ font-size: {SMALL_PX + 1}px; fill: #333; }}
.note {{ color: #8a5a00; }}
table {{ border-collapse: collapse; margin: 8px 0 16px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; }}
.bad {{ color: #c00; font-weight: bold; }}
"""


def html(report: MapReport, observed: ObservedReport | None = None) -> str:
    esc = html_lib.escape
    layout = _layout(report)
    rows = []
    for top in report.tops:
        target = "" if top.objective is None else f"{top.objective}"
        verdict = "" if top.met is None else ("met" if top.met else "BREACHED")
        rows.append(
            f"<tr class='top-row' data-id='{esc(top.id)}'><td>{esc(top.id)}</td>"
            f"<td>{esc(top.kind)}</td><td>{fmt_availability(top.availability)}</td><td>{target}</td>"
            f"<td class='{'bad' if verdict == 'BREACHED' else ''}'>{verdict}</td>"
            f"<td>{esc(', '.join(top.spofs))}</td></tr>"
        )
    spofs = "".join(
        f"<li class='spof-item' data-event='{esc(e)}'><b>{esc(e)}</b>: takes down "
        f"{esc(', '.join(downed))}. Fix: {esc(advice(report, e))}</li>"
        for e, downed in report.spofs.items()
    )
    undeclared = ""
    if observed is not None:
        items = "".join(
            f"<li class='undeclared'>{esc(d.subject)} &rarr; {esc(d.target)} "
            f"(via {esc(d.via)}, seen {d.count}&times;)</li>"
            for d in observed.undeclared
        )
        undeclared = f"<h2>Undeclared dependencies</h2><ul>{items or '<li>none</li>'}</ul>"

    def shares(values: dict[str, float], unit: str) -> str:
        return esc(", ".join(f"{100 * x:.1f}% {unit}{k}" for k, x in values.items()) or "-")

    vendor_rows = "".join(
        f"<tr class='vendor-row' data-vendor='{esc(v.vendor)}'><td>{esc(v.vendor)}</td>"
        f"<td>{shares(v.spend_share, '')}</td><td>{shares(v.unavailability_share, 'of ')}"
        f"</td><td>{'SPOF' if v.spof else ''}</td>"
        f"<td class='{'bad' if v.concentrated else ''}'>{'yes' if v.concentrated else ''}</td></tr>"
        for v in report.vendors
    )
    vendors = (
        "<h2>Concentration per vendor</h2><table><tr><th>vendor</th><th>share of spend</th>"
        f"<th>share of unavailability</th><th>SPOF</th><th>concentrated</th></tr>{vendor_rows}"
        "</table>"
        if report.vendors
        else ""
    )
    note = f"<p class='note'>{esc(layout.note)}</p>" if layout.note else ""
    verdict = "ok" if report.ok else "FAIL"
    svg = _svg(report, layout)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<title>{esc(report.system)}: dependency map</title>
<style>{_STYLE}</style></head>
<body data-verdict="{verdict}">
<h1>{esc(report.system)}: dependency map ({verdict})</h1>
<table><tr><th>service / job</th><th>kind</th><th>availability</th><th>objective</th>
<th>verdict</th><th>SPOFs</th></tr>{"".join(rows)}</table>
<h2>Single points of failure</h2><ul>{spofs or "<li>none</li>"}</ul>
{undeclared}
{vendors}
{note}
{svg}
<script>{_SCRIPT}</script>
</body></html>
"""
