"""The map as one self-contained HTML page: inline SVG drawn by a little inline script.

Owns: the page. Components are grouped in boxes by location (cloud, on-prem, edge,
third-party), dependencies point up towards the services and jobs, SPOFs are red, and
hovering a component lights up its blast radius. Layout (levels and columns) is computed
here in Python; the script only draws, so the page works offline from a file:// URL.

Must never: load anything from the network (no CDN, no fonts, no images): the page is
opened on air-gapped machines and attached to incident reports.
"""

from __future__ import annotations

import html as html_lib
import json
from typing import Any

from bastion.map._analysis import MapReport, advice, fmt_availability
from bastion.map._observed import ObservedReport

__all__ = ["html"]

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 170, 34, 20, 46, 24


def _layout(report: MapReport) -> dict[str, Any]:
    graph = report.graph
    level: dict[str, int] = {}
    for node_id in graph.order:  # dependencies first
        node = graph.nodes[node_id]
        deps = (*node.hard, *node.soft, *node.members)
        level[node_id] = 1 + max((level[d] for d in deps), default=-1)
    top_level = max(level.values(), default=0)
    groups: dict[str, dict[int, list[str]]] = {}
    for node_id in graph.order:
        loc = graph.nodes[node_id].location
        groups.setdefault(loc, {}).setdefault(level[node_id], []).append(node_id)
    spof_events = report.spofs
    spof_nodes: dict[str, str] = {}
    for event_id in spof_events:
        event = report.event(event_id)
        for n in [event.node] if event.node else list(event.members):
            if n:
                spof_nodes.setdefault(n, event_id)
    boxes = []
    nodes = []
    x0 = PAD
    height = (top_level + 1) * (NODE_H + GAP_Y) + 2 * PAD + 20
    for loc, rows in groups.items():
        width = max(len(r) for r in rows.values()) * (NODE_W + GAP_X) + GAP_X
        boxes.append({"id": loc, "x": x0, "y": PAD, "w": width, "h": height - 2 * PAD})
        for lvl, ids in rows.items():
            for i, node_id in enumerate(ids):
                node = graph.nodes[node_id]
                own = report.blast_radius.get(node_id)
                nodes.append(
                    {
                        "id": node_id,
                        "kind": node.kind,
                        "location": loc,
                        "x": x0 + GAP_X + i * (NODE_W + GAP_X),
                        "y": PAD + 30 + (top_level - lvl) * (NODE_H + GAP_Y),
                        "spof": node_id in spof_nodes,
                        "top": node.top,
                        "availability": node.availability,
                        "fix": advice(report, spof_nodes[node_id]) if node_id in spof_nodes else "",
                        "blast": own.fails if own else [],
                    }
                )
        x0 += width + PAD
    edges: list[dict[str, str]] = []
    for node in graph.nodes.values():
        edges.extend({"from": d, "to": node.id, "type": "hard"} for d in node.hard)
        edges.extend({"from": d, "to": node.id, "type": "soft"} for d in node.soft)
        edges.extend({"from": m, "to": node.id, "type": "member"} for m in node.members)
    return {"width": x0, "height": height, "boxes": boxes, "nodes": nodes, "edges": edges}


_SCRIPT = r"""
(function () {
  var data = JSON.parse(document.getElementById('map-data').textContent);
  var NS = 'http://www.w3.org/2000/svg';
  var svg = document.getElementById('map');
  svg.setAttribute('width', data.width);
  svg.setAttribute('height', data.height);
  svg.setAttribute('viewBox', '0 0 ' + data.width + ' ' + data.height);
  function el(name, attrs, text) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    if (text !== undefined) { e.textContent = text; }
    svg.appendChild(e);
    return e;
  }
  data.boxes.forEach(function (b) {
    el('rect', {x: b.x, y: b.y, width: b.w, height: b.h, 'class': 'location',
                'data-location': b.id, rx: 8});
    el('text', {x: b.x + 10, y: b.y + 18, 'class': 'location-label'}, b.id);
  });
  var at = {};
  data.nodes.forEach(function (n) { at[n.id] = n; });
  data.edges.forEach(function (e) {
    var a = at[e.from], b = at[e.to];
    el('line', {x1: a.x + 85, y1: a.y, x2: b.x + 85, y2: b.y + 34,
                'class': 'edge ' + e.type, 'data-from': e.from, 'data-to': e.to});
  });
  var drawn = 0;
  data.nodes.forEach(function (n) {
    var cls = 'node' + (n.spof ? ' spof' : '') + (n.top ? ' top' : '');
    var g = document.createElementNS(NS, 'g');
    g.setAttribute('class', cls);
    g.setAttribute('data-id', n.id);
    g.setAttribute('data-location', n.location);
    var r = document.createElementNS(NS, 'rect');
    r.setAttribute('x', n.x); r.setAttribute('y', n.y);
    r.setAttribute('width', 170); r.setAttribute('height', 34); r.setAttribute('rx', 5);
    var t = document.createElementNS(NS, 'text');
    t.setAttribute('x', n.x + 8); t.setAttribute('y', n.y + 21);
    t.textContent = n.id.length > 24 ? n.id.slice(0, 23) + '\u2026' : n.id;
    var title = document.createElementNS(NS, 'title');
    title.textContent = n.id + ' (' + n.kind + ')' +
      (n.availability !== null ? ' availability ' + n.availability : '') +
      (n.spof ? '\nSPOF: ' + n.fix : '') +
      (n.blast.length ? '\nif it fails: ' + n.blast.join(', ') : '');
    g.appendChild(title); g.appendChild(r); g.appendChild(t);
    g.addEventListener('mouseenter', function () {
      n.blast.forEach(function (id) {
        var x = svg.querySelector('g[data-id="' + CSS.escape(id) + '"]');
        if (x) { x.classList.add('blast'); }
      });
    });
    g.addEventListener('mouseleave', function () {
      svg.querySelectorAll('g.blast').forEach(function (x) { x.classList.remove('blast'); });
    });
    svg.appendChild(g);
    drawn += 1;
  });
  document.body.setAttribute('data-drawn-nodes', String(drawn));
  document.body.setAttribute('data-drawn-spofs', String(svg.querySelectorAll('g.spof').length));
})();
"""

# Nothing may load from anywhere: the browser itself enforces "self-contained".
_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 16px; color: #222; }
#map { max-width: 100%; height: auto; }
.location { fill: #f7f7f7; stroke: #999; stroke-dasharray: 4 3; }
.location-label { font-weight: bold; fill: #555; }
.node rect { fill: #fff; stroke: #555; }
.node.top rect { fill: #ddeeff; stroke: #036; }
.node.spof rect { fill: #ffdddd; stroke: #c00; stroke-width: 3; }
.node.blast rect { fill: #ffe9a8; }
.node text { font-size: 12px; }
.edge { stroke: #888; }
.edge.soft { stroke-dasharray: 5 4; }
.edge.member { stroke: #036; stroke-width: 2; }
table { border-collapse: collapse; margin: 8px 0 16px; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
.bad { color: #c00; font-weight: bold; }
"""


def html(report: MapReport, observed: ObservedReport | None = None) -> str:
    esc = html_lib.escape
    layout = _layout(report)
    payload = json.dumps(layout).replace("</", "<\\/")
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
    verdict = "ok" if report.ok else "FAIL"
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
<svg id="map" xmlns="http://www.w3.org/2000/svg" role="img"
 aria-label="dependency graph grouped by location"></svg>
<script type="application/json" id="map-data">{payload}</script>
<script>{_SCRIPT}</script>
</body></html>
"""
