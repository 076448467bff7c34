"""The readiness report end to end (issue 15 item 6, issue 20 item 5): real drills run
through Chaos Toolkit against a real HTTP server, SLI rows and spend rows in the state
directory's real SQLite files, then `bastion report` as a process. The page is opened in
real headless Chromium (every chart has data), the JSON is validated against the shipped
schema, the signature is checked, an edited report fails `bastion report verify`, and bad
input exits 2."""

from __future__ import annotations

import json
import random
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bastion.drill.runner import run_experiment
from bastion.manifest import load
from bastion.report import schema_path
from bastion.serve._cost import PICO, Charge
from bastion.serve._spend import SpendWriter, spend_path
from bastion.slo import BOUNDS_MS, SliRow, SqliteSli
from bastion.starter import init
from tests.helpers import run_bastion
from tests.integration.test_drill_runner import _action, _experiment, server  # noqa: F401
from tests.integration.test_map_cli import CHROMIUM

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (make browser)"
)


def _sli(state_dir: Path, now: int) -> None:
    """Ten minutes of the digits service: a 30-second outage in the middle."""
    rows = []
    for t in range(now - 600, now - 1):
        bad = 40 if now - 330 <= t < now - 300 else 0
        buckets = [0] * (len(BOUNDS_MS) + 1)
        buckets[2] = 50 - bad
        buckets[7] = bad
        rows.append(SliRow("digits", t, "local", 50 - bad, 50, tuple(buckets)))
    sli = SqliteSli.in_state_dir(state_dir)
    sli.write(rows)
    sli.close()


def _spend(state_dir: Path) -> None:
    writer = SpendWriter(spend_path(state_dir))
    for cause, backend, tier, n in (("first", "local", 0, 5), ("fallback", "vendor-b", 1, 40)):
        for _ in range(n):
            writer.put(
                Charge("digits", backend, tier, "", cause, "USD", 100, 20, False, PICO // 100)
            )  # type: ignore[arg-type]
    writer.close()


@pytest.fixture
def world(
    example_copy: Path,
    server: tuple[subprocess.Popen[bytes], str],  # noqa: F811 - the fixture imported above
    seed: int,
) -> Path:
    """The example with two drills in its log (one passed, one refused: an error), ten
    minutes of SLI rows and a month's spend."""
    init(example_copy)
    manifest = load(example_copy / "bastion.yaml")
    state = manifest.state_dir
    proc, url = server
    hang = _action(
        "hang-the-server", "bastion.drill.actions", "inject", fault="process.hang",
        pid=proc.pid, name="hang",
    )  # fmt: skip
    hang["pauses"] = {"after": 0.6}
    method = [
        hang,
        _action("wake-it", "bastion.drill.actions", "revert", name="hang"),
        _action("wait", "bastion.drill.actions", "wait_recovered", timeout_s=20),
    ]
    passed = run_experiment(
        _experiment(url, method, scope={"pids": [proc.pid]}, targets={"rto_s": 60},
                    subject="cpu-pool"),
        base=example_copy, state_dir=state, seed=seed,
        journal_path=state / "drills" / "hang.json",
    )  # fmt: skip
    assert passed.exit_code == 0, passed.problems
    victim = example_copy / "outside.bin"
    victim.write_bytes(b"precious")
    refused = run_experiment(
        {
            "title": "misaimed",
            "description": "points a fault outside its scope",
            "method": [
                _action("flip", "bastion.drill.actions", "inject", fault="storage.flip_bytes",
                        targets=str(victim))
            ],
            "extensions": [{"name": "bastion", "scope": {"paths": ["inside"]}}],
        },
        base=example_copy, state_dir=state, seed=seed,
    )  # fmt: skip
    assert refused.exit_code == 2
    _sli(state, int(time.time()))
    _spend(state)
    return example_copy


MEASURE = r"""
<script>
(function () {
  var charts = [];
  document.querySelectorAll('svg.chart').forEach(function (svg) {
    var marks = 0, visible = 0;
    svg.querySelectorAll('.mark').forEach(function (m) {
      marks += 1;
      var b = m.getBBox();
      if (b.width > 0 && b.height > 0) { visible += 1; }
    });
    var box = svg.getBoundingClientRect();
    charts.push({chart: svg.getAttribute('data-chart'), marks: marks, visible: visible,
                 points: parseInt(svg.getAttribute('data-points'), 10),
                 width: box.width, height: box.height});
  });
  document.body.setAttribute('data-measured', JSON.stringify({
    charts: charts,
    score: document.body.getAttribute('data-score'),
    tables: document.querySelectorAll('table').length
  }));
})();
</script>
"""


def _chromium_dom(page: Path, profile: Path) -> str:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}", "--dump-dom", page.as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    ).stdout  # fmt: skip


def _report(
    world: Path, out: Path, *extra: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = run_bastion(
        "report", "-f", str(world / "bastion.yaml"), "-o", str(out), "--json", *extra
    )
    summary = json.loads(proc.stdout) if proc.returncode in (0, 1) and proc.stdout else {}
    return proc, summary


@needs_chromium
def test_the_report_renders_validates_and_verifies(world: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc, summary = _report(world, out)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "report.json").read_text())
    # the JSON is what its schema says
    jsonschema.validate(doc, json.loads(schema_path().read_text()))
    assert 0 <= doc["score"]["value"] <= 100
    assert summary["score"] == doc["score"]["value"]
    verdicts = {d["title"]: d["verdict"] for d in doc["drills"]}
    assert verdicts == {"the service survives": "pass", "misaimed": "error"}
    drills = {p["id"]: p for p in doc["score"]["parts"]}["drills"]
    assert (drills["passed"], drills["total"]) == (1, 2)  # the errored one is no pass
    # every figure names its events, and those events are in the log
    good = next(d for d in doc["drills"] if d["verdict"] == "pass")
    kinds = {p["kind"] for p in good["timeline"]}
    assert {
        "drill.fault.injected",
        "drill.steady_state.broken",
        "drill.steady_state.restored",
    } <= kinds
    assert good["broken"]
    assert good["samples"], "the journal's samples are read too"
    assert set(drills["event_ids"]) <= set(range(1, doc["evidence"]["last_event_id"] + 1))
    # spend concentration per vendor beside availability concentration
    vendors = {v["vendor"]: v for v in doc["map"]["vendors"]}
    assert vendors["vendor-b"]["spend_share"]["USD"] == pytest.approx(40 / 45)
    # its one cut set pairs it with the local host, whose availability is not declared
    assert vendors["vendor-b"]["unavailability_share"] == {"digits": 0.0}
    assert vendors["in-house"]["spend_share"] == {}
    assert vendors["in-house"]["spof"]
    assert vendors["in-house"]["unavailability_share"]["digits"] > 0.9
    # a finding links to its remediation and to the drill that retests it
    spof = next(f for f in doc["findings"] if f["subject"] == "cpu-pool")
    assert spof["remediation"]
    assert spof["retest"] == {
        "drill": good["id"],
        "verdict": "pass",
        "advice": None,
    }
    assert {r["part"] for r in doc["frameworks"]} >= {"drills", "slos", "map", "changes"}
    # JUnit for CI: the errored drill is an error, never a pass
    junit = (out / "junit.xml").read_text()
    assert re.search(r'name="misaimed"><error', junit)
    # real Chromium: the page renders and every chart has data
    page = (out / "report.html").read_text()
    for forbidden in ("<script", "src=", "@import", "<link", "https://"):
        assert forbidden not in page, forbidden
    measured_page = tmp_path / "measured.html"
    measured_page.write_text(
        page.replace(
            "default-src 'none';", "default-src 'none'; script-src 'unsafe-inline';"
        ).replace("</body>", MEASURE + "</body>"),
        encoding="utf-8",
    )
    dom = _chromium_dom(measured_page, tmp_path / "profile")
    found = re.search(r"data-measured=\"([^\"]*)\"", dom)
    assert found is not None, dom[-2000:]
    measured = json.loads(found.group(1).replace("&quot;", '"'))
    print(measured)
    charts = measured["charts"]
    assert sorted({c["chart"] for c in charts}) == ["burn", "drill", "score", "vendors"]
    assert sum(c["chart"] == "drill" for c in charts) == 2
    assert sum(c["chart"] == "burn" for c in charts) == 2
    for c in charts:
        assert c["width"] > 100, c
        assert c["height"] > 40, c
        assert c["marks"] == c["points"] > 0, c
        assert c["visible"] == c["marks"], c
    # the dependency map shows the same concentration, from the same spend log
    mapped = run_bastion("map", "-f", str(world / "bastion.yaml"), "--format", "json")
    assert mapped.returncode == 1, mapped.stderr  # the example has SPOFs
    in_map = {v["vendor"]: v for v in json.loads(mapped.stdout)["vendors"]}
    assert in_map["vendor-b"]["spend_share"] == vendors["vendor-b"]["spend_share"]
    assert in_map["in-house"]["unavailability_share"] == vendors["in-house"]["unavailability_share"]
    text = run_bastion("map", "-f", str(world / "bastion.yaml")).stdout
    assert "vendor-b: 88.9% USD | 0.0% of digits" in text
    # the signature holds, and one edited byte breaks it (exit 1, naming the file)
    ok = run_bastion("report", "verify", str(out), "-f", str(world / "bastion.yaml"))
    assert ok.returncode == 0, ok.stderr
    assert "verified" in ok.stdout
    # a reader with only the public key checks it the same way
    pub = tmp_path / "auditor" / "signing.key.pub"
    pub.parent.mkdir()
    pub.write_bytes((world / ".bastion" / "keys" / "signing.key.pub").read_bytes())
    assert run_bastion("report", "verify", str(out), "--key", str(pub)).returncode == 0
    edited = (out / "report.json").read_text().replace('"value": ', '"value": 1', 1)
    (out / "report.json").write_text(edited)
    bad = run_bastion("report", "verify", str(out), "-f", str(world / "bastion.yaml"))
    assert bad.returncode == 1
    assert "report.json: changed after it was signed" in bad.stderr


def test_bad_input_exits_2(example_copy: Path, tmp_path: Path) -> None:
    manifest = str(example_copy / "bastion.yaml")
    # no signing key yet: say how to make one
    proc = run_bastion("report", "-f", manifest, "-o", str(tmp_path / "r"))
    assert proc.returncode == 2, proc.stderr
    assert "bastion init" in proc.stderr
    init(example_copy)
    for args, words in (
        (("--max-age", "soon"), "--max-age"),
        (("--min-score", "120"), "--min-score"),
        (("--journal", str(tmp_path / "missing.json")), "--journal"),
    ):
        proc = run_bastion("report", "-f", manifest, "-o", str(tmp_path / "r"), *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert words in proc.stderr
    for target in (tmp_path / "nowhere", tmp_path):
        proc = run_bastion("report", "verify", str(target), "-f", manifest)
        assert proc.returncode == 2, proc.stderr
    # a score under --min-score is exit 1, with the JUnit case failing
    proc = run_bastion("report", "-f", manifest, "-o", str(tmp_path / "r"), "--min-score", "90")
    assert proc.returncode == 1, proc.stderr
    assert "below the minimum 90" in (tmp_path / "r" / "junit.xml").read_text()


def test_the_reference_suite_s_scenarios_are_in_the_report(
    example_copy: Path, tmp_path: Path, seed: int
) -> None:
    """The real `bastion drill suite` (two of its fast scenarios, in a sandbox twin whose
    log goes with it): the report reads each from its `drill.suite.scenario` event and its
    journal."""
    from bastion.drill.suite import run_suite
    from tests.integration.test_drill_suite import _production

    init(example_copy)
    path = _production(example_copy, random.Random(seed))
    result = run_suite(path, short=True, only=["poisoned-data", "vault-replica-lost"], seed=seed)
    out = tmp_path / "report"
    proc, _summary = _report(example_copy, out)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "report.json").read_text())
    jsonschema.validate(doc, json.loads(schema_path().read_text()))
    suite = {d["scenario"]: d for d in doc["drills"] if d["suite"] == result.suite}
    assert set(suite) == {"poisoned-data", "vault-replica-lost"}
    for s in result.scenarios:
        d = suite[s.name]
        assert d["log"] == "journal"
        assert d["passed"] == (s.verdict == "passed")
        assert d["measurements"]["rto_s"] == s.rto_s
        assert d["timeline"]
        assert d["samples"]
        assert len(d["event_ids"]) == 1  # its drill.suite.scenario, in production's log
    page = (out / "report.html").read_text()
    assert page.count('data-chart="drill"') == 2
