"""The map's picture (issue 12, item 16): laid out by Graphviz, with readable text,
arrowheads, a legend, and no edge through a box. Checked on the layout itself and, as a
person sees it, in headless Chromium (which also leaves a screenshot in the test's tmp
directory to look at)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bastion.manifest import load, loads
from bastion.map import map_manifest, render
from bastion.map._html import _Edge, _layout
from tests.integration.test_map_cli import CHROMIUM

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None, reason="Graphviz is not installed (apt-get install graphviz)"
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)

BIGGER = """\
version: 1
system: shop
vault: {replicas: [v/a, v/b, "file:///tmp/bastion-picture/vault"]}
components:
  - {id: db-a, kind: storage, location: cloud, provider: aws, availability: 0.999}
  - {id: db-b, kind: storage, location: cloud, provider: gcp, availability: 0.999}
  - {id: db, kind: storage, location: cloud, redundancy: {members: [db-a, db-b]}}
  - {id: cache, kind: storage, availability: 0.99, depends_on: [db]}
  - {id: vendor-x, kind: vendor-api, location: third-party, provider: vendor-x, availability: 0.99}
  - {id: gpu, kind: compute, domains: {site: dc1}, availability: 0.995}
  - {id: features, kind: feature-store, domains: {site: dc1}, depends_on: [db, cache]}
jobs:
  train: {command: [python, t.py], inputs: {d: dataset/d@1}, depends_on: [gpu, features],
          slots: [{name: w1}, {name: w2, backend: ray, address: '10.0.0.5:6379'}]}
  nightly: {command: [python, n.py], depends_on: [db]}
services:
  api:
    backends:
      - {name: local, model: model/m@1, replicas: {min: 3, max: 4}}
      - {name: vx, url: "https://x.example/v1", provider: vendor-x, tier: fallback}
    depends_on: [cache, {id: features, type: soft}]
  search:
    listen: 127.0.0.1:8711
    backends:
      - {name: one, url: "http://10.0.0.5:9001"}
      - {name: two, url: "http://10.0.0.5:9002"}
    depends_on: [db]
"""


def _bezier(edge: _Edge, steps: int = 24) -> list[tuple[float, float]]:
    pts = edge.points
    out = []
    for i in range(0, len(pts) - 3, 3):
        (x0, y0), (x1, y1), (x2, y2), (x3, y3) = pts[i : i + 4]
        for k in range(steps + 1):
            t = k / steps
            a, b, c, d = (1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t * t * (1 - t), t**3
            out.append((a * x0 + b * x1 + c * x2 + d * x3, a * y0 + b * y1 + c * y2 + d * y3))
    return out


@needs_dot
@pytest.mark.parametrize("which", ["example", "bigger"])
def test_graphviz_routes_every_edge_around_the_boxes(which: str, example_copy: Path) -> None:
    manifest = load(example_copy / "bastion.yaml") if which == "example" else loads(BIGGER)
    report = map_manifest(manifest)
    layout = _layout(report)
    assert layout.engine == "graphviz"
    assert set(layout.nodes) == set(report.graph.nodes)
    crossings = []
    for edge in layout.edges:
        for node_id, box in layout.nodes.items():
            if node_id in (edge.tail, edge.head):
                continue
            inside = [
                (x, y)
                for x, y in _bezier(edge)
                if box.x + 2 < x < box.x + box.w - 2 and box.y + 2 < y < box.y + box.h - 2
            ]
            if inside:
                crossings.append((edge.tail, edge.head, node_id))
    assert crossings == []
    # Every edge ends in an arrowhead at its dependent, just outside the dependent's box.
    for edge in layout.edges:
        assert edge.tip is not None
        head = layout.nodes[edge.head]
        x, y = edge.tip
        assert head.x - 3 <= x <= head.x + head.w + 3
        assert head.y - 3 <= y <= head.y + head.h + 3


# Appended to a copy of the page: what Chromium laid out, as numbers in the DOM.
MEASURE = r"""
<script>
(function () {
  var svg = document.getElementById('map');
  var sizes = [];
  svg.querySelectorAll('text').forEach(function (t) {
    sizes.push(parseFloat(getComputedStyle(t).fontSize));
  });
  var overflow = [];
  svg.querySelectorAll('g.node').forEach(function (g) {
    var r = g.querySelector('rect').getBBox();
    g.querySelectorAll('text').forEach(function (t) {
      var b = t.getBBox();
      if (b.x < r.x - 1 || b.x + b.width > r.x + r.width + 1) {
        overflow.push(g.getAttribute('data-id'));
      }
    });
  });
  var boxes = [];
  svg.querySelectorAll('g.node').forEach(function (g) {
    boxes.push([g.getAttribute('data-id'), g.querySelector('rect').getBBox()]);
  });
  var through = [];
  svg.querySelectorAll('path.edge').forEach(function (p) {
    var from = p.getAttribute('data-from'), to = p.getAttribute('data-to');
    var n = p.getTotalLength();
    for (var i = 0; i <= 60; i++) {
      var pt = p.getPointAtLength(n * i / 60);
      boxes.forEach(function (b) {
        var r = b[1];
        if (b[0] !== from && b[0] !== to && pt.x > r.x + 2 && pt.x < r.x + r.width - 2 &&
            pt.y > r.y + 2 && pt.y < r.y + r.height - 2) {
          through.push(from + '>' + to + '@' + b[0]);
        }
      });
    }
  });
  var arrows = 0;
  svg.querySelectorAll('path.edge').forEach(function (p) {
    var ref = (p.getAttribute('marker-end') || '').replace(/^url\(#|\)$/g, '');
    if (ref && document.getElementById(ref)) { arrows += 1; }
  });
  document.body.setAttribute('data-measured', JSON.stringify({
    min_font_px: Math.min.apply(null, sizes),
    overflow: overflow,
    through: Array.from(new Set(through)),
    edges: svg.querySelectorAll('path.edge').length,
    arrows: arrows,
    legend_texts: svg.querySelectorAll('.legend text').length,
    layout: svg.getAttribute('data-layout')
  }));
})();
</script>
"""


def _chromium(page: Path, profile: Path, *extra: str) -> str:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *extra,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    ).stdout


@needs_dot
@needs_chromium
@pytest.mark.parametrize("which", ["example", "bigger"])
def test_the_page_reads_well_in_chromium(which: str, tmp_path: Path, example_copy: Path) -> None:
    manifest = load(example_copy / "bastion.yaml") if which == "example" else loads(BIGGER)
    report = map_manifest(manifest)
    page = render(report, "html")
    measured_page = tmp_path / "measured.html"
    measured_page.write_text(page.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    dom = _chromium(measured_page, tmp_path / "profile", "--dump-dom")
    found = re.search(r"data-measured=\"([^\"]*)\"", dom)
    assert found is not None, dom[-2000:]
    measured = json.loads(found.group(1).replace("&quot;", '"'))
    print(measured)
    assert measured["layout"] == "graphviz"
    assert measured["min_font_px"] >= 12
    assert measured["overflow"] == []
    assert measured["through"] == []
    edges = sum(len(n.hard) + len(n.soft) + len(n.members) for n in report.graph.nodes.values())
    assert measured["edges"] == measured["arrows"] == edges
    assert measured["legend_texts"] >= 7
    # A picture for a person to look at (the test's tmp directory keeps it).
    shot = tmp_path / f"map-{which}.png"
    (tmp_path / "page.html").write_text(page, encoding="utf-8")
    _chromium(
        tmp_path / "page.html",
        tmp_path / "profile2",
        "--window-size=1400,1200",
        f"--screenshot={shot}",
    )
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 20_000
