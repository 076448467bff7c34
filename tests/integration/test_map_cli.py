"""``bastion map`` end to end: the example's manifest, every format, exit codes,
``--observed`` over real events, and the HTML page opened in real headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bastion.events import EventLog
from bastion.manifest import load
from bastion.map import graph_from_manifest, map_manifest
from tests.helpers import run_bastion

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


REDUNDANT = """\
version: 1
system: shop
components:
  - {id: db-a, kind: storage, location: cloud, provider: aws, availability: 0.999}
  - {id: db-b, kind: storage, location: cloud, provider: gcp, availability: 0.999}
  - id: db
    kind: storage
    location: cloud
    redundancy: {mode: active-active, members: [db-a, db-b]}
services:
  api:
    listen: 127.0.0.1:8711
    backends:
      - {name: one, url: "http://127.0.0.1:9001", provider: vendor-x}
      - {name: two, url: "http://127.0.0.1:9002", provider: vendor-y, tier: fallback}
    depends_on: [db]
slos:
  - {id: api-availability, service: api, objective: 0.99}
"""


def test_example_map_text_lists_spofs_first_and_exits_1(example_copy: Path) -> None:
    proc = run_bastion("map", "-f", str(example_copy / "bastion.yaml"))
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    assert out.index("SINGLE POINTS OF FAILURE") < out.index("service digits: availability")
    assert "cpu-pool: cpu-pool (compute, on-prem, provider in-house)" in out
    assert "takes down: train-digits, digits" in out
    assert "service digits: availability 0.999500 (objective 0.999: met)" in out
    assert "{ccf:host=localhost, vendor-b}" in out
    assert "verdict: FAIL" in out


def test_no_spof_and_met_objective_exits_0(tmp_path: Path) -> None:
    manifest = write(tmp_path / "bastion.yaml", REDUNDANT)
    proc = run_bastion("map", "-f", str(manifest), "--format", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "bastion.map/1"
    assert doc["ok"] is True
    (api,) = doc["tops"]
    assert api["spofs"] == []
    assert api["met"] is True
    assert {tuple(c["events"]) for c in api["cut_sets"]} == {
        ("db-a", "db-b"),
        ("api:one", "api:two"),
    }
    assert api["availability"] == pytest.approx(1 - 0.001 * 0.001)


def test_redundant_backends_on_one_vendor_make_a_spof(tmp_path: Path) -> None:
    text = REDUNDANT.replace("provider: vendor-y", "provider: vendor-x")
    manifest = write(tmp_path / "bastion.yaml", text)
    proc = run_bastion("map", "-f", str(manifest), "--max-order", "1")
    assert proc.returncode == 1
    assert "ccf:provider=vendor-x: everything on provider vendor-x (api:one, api:two)" in (
        proc.stdout
    )


def test_objective_breach_is_reported(tmp_path: Path) -> None:
    text = REDUNDANT.replace("objective: 0.99}", "objective: 0.9999999}")
    manifest = write(tmp_path / "bastion.yaml", text)
    proc = run_bastion("map", "-f", str(manifest))
    assert proc.returncode == 1
    assert "BREACH api: availability 0.9999990 < objective 0.9999999" in proc.stdout


def test_mermaid_dot_and_output_file(tmp_path: Path, example_copy: Path) -> None:
    manifest = str(example_copy / "bastion.yaml")
    mermaid = run_bastion("map", "-f", manifest, "--format", "mermaid")
    assert mermaid.stdout.startswith("flowchart BT")
    assert 'subgraph n_loc_third_party["third-party"]' in mermaid.stdout
    assert "n_cpu_pool --> n_digits" in mermaid.stdout
    dot_file = tmp_path / "map.dot"
    proc = run_bastion("map", "-f", manifest, "--format", "dot", "-o", str(dot_file))
    assert proc.returncode == 1
    dot = dot_file.read_text()
    assert dot.startswith('digraph "digits" {')
    assert '"cpu-pool" [label="cpu-pool", style=filled, fillcolor="#ffdddd"' in dot
    assert '"vendor-b" -> "digits" [style=dashed];' in dot


def test_bad_input_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    broken = REDUNDANT.replace("depends_on: [db]", "depends_on: [dbb]")
    proc = run_bastion("map", "-f", str(write(tmp_path / "bastion.yaml", broken)))
    assert proc.returncode == 2
    assert "unknown component 'dbb'" in proc.stderr
    assert "bastion.yaml:" in proc.stderr
    proc = run_bastion("map", "-f", str(tmp_path / "bastion.yaml"), "--format", "png")
    assert proc.returncode == 2
    assert "--format 'png': use one of text, json, mermaid, dot, html" in proc.stderr


def test_services_and_jobs_become_components(example_copy: Path) -> None:
    graph = graph_from_manifest(load(example_copy / "bastion.yaml"))
    nodes = graph.nodes
    assert nodes["digits"].top
    assert nodes["digits"].hard == ("cpu-pool", "digits:backends")
    assert nodes["digits"].soft == ("vendor-b",)
    assert nodes["digits:backends"].members == ("digits:local", "digits:vendor-b")
    assert nodes["digits:local"].members == ("digits:local#0", "digits:local#1")
    assert nodes["digits:local"].hard == ("vault:replicas",)
    assert nodes["digits:vendor-b"].hard == ("vendor-b",)
    assert nodes["vault:replicas"].members == ("vault:0", "vault:1")
    assert nodes["train-digits"].hard == ("digits-data", "cpu-pool", "train-digits:input=data")
    report = map_manifest(load(example_copy / "bastion.yaml"))
    assert report.top("train-digits").spofs[:3] == ["digits-data", "cpu-pool", "nas"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_observed_lists_undeclared_dependencies(
    example_copy: Path,
    backend: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same on a PostgreSQL log (``events:`` in the manifest): ``--observed`` reads
    the server's ``dep.used``, and makes no ``events.db`` to do it."""
    manifest = example_copy / "bastion.yaml"
    if backend == "postgresql":
        monkeypatch.setenv("BASTION_EVENTS_URLS", "{}")  # restored after the test
        url = request.getfixturevalue("pg_server").create_database()
        text = manifest.read_text()
        manifest.write_text(text.replace("version: 1\n", f"version: 1\nevents: {url}\n", 1))
    state = load(manifest).state_dir
    with EventLog.in_state_dir(state) as log:
        log.emit("dep.used", subject="digits", target="local", via="backend")
        log.emit("dep.used", subject="digits", target="http://127.0.0.1:8801", via="backend")
        log.emit("dep.used", subject="digits", target="http://10.9.9.9:443", via="backend")
        log.emit("dep.used", subject="digits", target="http://10.9.9.9:443", via="backend")
        log.emit("dep.used", subject="train-digits", target="dataset/digits@3", via="input")
        log.emit("dep.used", subject="train-digits", target="dataset/labels@1", via="input")
        log.emit("dep.used", subject="ghost-job", target="dataset/digits@3", via="input")
    proc = run_bastion("map", "-f", str(manifest), "--observed", "--format", "json")
    assert proc.returncode == 1
    observed = json.loads(proc.stdout)["observed"]
    assert observed["events"] == 7
    undeclared = {(d["subject"], d["target"], d["count"]) for d in observed["undeclared"]}
    assert undeclared == {
        ("digits", "http://10.9.9.9:443", 2),
        ("train-digits", "dataset/labels@1", 1),
        ("ghost-job", "dataset/digits@3", 1),
    }
    text = run_bastion("map", "-f", str(manifest), "--observed").stdout
    assert "UNDECLARED digits -> http://10.9.9.9:443 (via backend, seen 2x)" in text
    assert (state / "events.db").exists() == (backend == "sqlite")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_html_is_self_contained_and_draws_the_graph(tmp_path: Path, example_copy: Path) -> None:
    page = tmp_path / "map.html"
    proc = run_bastion(
        "map", "-f", str(example_copy / "bastion.yaml"), "--format", "html", "-o", str(page)
    )
    assert proc.returncode == 1, proc.stderr
    source = page.read_text()
    for forbidden in ("http://", "https://", "src=", "@import", "<link"):
        assert forbidden not in source.replace("http://www.w3.org/2000/svg", "").replace(
            "http://127.0.0.1:8801", ""
        ), forbidden
    assert CHROMIUM is not None
    dom = subprocess.run(
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
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    ).stdout
    # What the script drew (not what the file holds): every component, SPOFs in red.
    assert 'data-drawn-nodes="15"' in dom
    assert 'class="node spof" data-id="cpu-pool" data-location="on-prem"' in dom
    assert 'class="node top" data-id="digits" data-location="on-prem"' in dom
    assert 'class="node" data-id="vendor-b" data-location="third-party"' in dom
    assert 'class="location" data-location="third-party"' in dom
    assert dom.count('class="edge ') == 16


def test_observed_without_an_event_log_creates_nothing(example_copy: Path) -> None:
    proc = run_bastion("map", "-f", str(example_copy / "bastion.yaml"), "--observed")
    assert proc.returncode == 1  # the example's SPOFs, not the (empty) observation
    assert "observed: 0 dep.used event(s)" in proc.stdout
    assert not (example_copy / ".bastion").exists()
