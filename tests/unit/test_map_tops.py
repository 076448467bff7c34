"""What the map analyses, and how it exits (issue 12, item 16): a manifest of components
alone is analysed from what nothing depends on; a job needs the vault; a backend can
name the component it is; a drawing piped to stdout never fails the pipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.errors import ManifestError
from bastion.events import EventLog
from bastion.manifest import loads
from bastion.map import map_manifest, observed_dependencies, render
from tests.helpers import run_bastion

CHAIN = """\
version: 1
system: shop
components:
  - {id: app, kind: compute, availability: 0.999, depends_on: [db]}
  - {id: db, kind: storage, availability: 0.99}
"""


def test_components_only_chain_flags_its_database_as_a_spof() -> None:
    report = map_manifest(loads(CHAIN))
    assert [t.id for t in report.tops] == ["app"]
    assert report.spofs == {"app": ["app"], "db": ["app"]}
    assert report.top("app").availability == pytest.approx(0.999 * 0.99)
    assert not report.ok
    text = render(report, "text")
    assert "SPOF" in text or "SINGLE POINTS OF FAILURE" in text
    assert "db: db (storage, on-prem)" in text
    assert "verdict: FAIL" in text


def test_components_only_redundant_pair_is_analysed_from_its_group() -> None:
    text = """\
version: 1
system: shop
components:
  - {id: db-a, kind: storage, availability: 0.99, domains: {zone: a}}
  - {id: db-b, kind: storage, availability: 0.99, domains: {zone: b}}
  - {id: db, kind: storage, redundancy: {members: [db-a, db-b]}}
"""
    report = map_manifest(loads(text))
    assert [t.id for t in report.tops] == ["db"]
    assert report.ok
    assert report.top("db").availability == pytest.approx(1 - 0.01 * 0.01)


def test_an_empty_system_says_there_is_nothing_to_analyse(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text("version: 1\nsystem: empty\n")
    proc = run_bastion("map", "-f", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "nothing to analyse: the manifest declares no services, jobs or components" in (
        proc.stdout
    )


def test_a_job_with_no_dependencies_still_needs_the_vault() -> None:
    text = """\
version: 1
system: s
vault: {replicas: [/tmp/v/a, /tmp/v/b]}
jobs:
  train: {command: [python, train.py]}
"""
    report = map_manifest(loads(text))
    train = report.top("train")
    assert report.graph.nodes["train"].hard == ("vault:replicas",)
    assert {c.events for c in train.cut_sets} == {("ccf:host=localhost",), ("vault:0", "vault:1")}
    assert train.spofs == ["ccf:host=localhost"]  # both replicas on this machine
    assert train.unknown == ["ccf:host=localhost", "vault:0", "vault:1"]
    line = next(x for x in render(report, "text").splitlines() if x.startswith("job train:"))
    assert line == (
        "job train: availability 1.000000; 3 event(s) with no declared availability count "
        "as always up"
    )


BACKEND_COMPONENT = """\
version: 1
system: s
components:
  - {id: openai, kind: vendor-api, location: third-party, provider: openai, availability: 0.99}
services:
  api:
    backends:
      - {name: gpt, url: "https://api.example.com/v1", component: openai}
      - {name: local, model: model/m@1, tier: fallback}
    depends_on: [{id: openai, type: soft}]
"""


def test_a_backend_that_names_its_component_is_that_component(tmp_path: Path) -> None:
    manifest = loads(BACKEND_COMPONENT)
    report = map_manifest(manifest)
    node = report.graph.nodes["api:gpt"]
    assert node.hard == ("openai",)
    assert node.kind == "vendor-api"
    assert node.location == "third-party"
    assert not node.basic
    assert ("api:local#0", "openai") in {c.events for c in report.top("api").cut_sets}
    with EventLog.in_state_dir(tmp_path) as log:
        log.emit("dep.used", "api", target="gpt", via="backend")
        seen = observed_dependencies(manifest, log)
    # The use of the backend is the use of the component the service depends on.
    assert [(d.subject, d.target) for d in seen.confirmed] == [("api", "gpt")]
    assert ("api", "openai") not in seen.never_seen
    assert seen.undeclared == []


def test_a_backends_unknown_component_is_a_located_error() -> None:
    with pytest.raises(ManifestError) as info:
        loads(BACKEND_COMPONENT.replace("component: openai}", "component: opena}"))
    (problem,) = info.value.problems
    assert str(problem) == (
        "bastion.yaml:8:67: services.api.backends[0].component: unknown component 'opena' "
        "(did you mean 'openai'?); a backend's component is one declared under components"
    )


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--format", "text"], 1),
        (["--format", "json"], 1),
        (["--format", "dot"], 0),
        (["--format", "mermaid"], 0),
        (["--format", "text", "--exit-zero"], 0),
        (["--format", "json", "--exit-zero"], 0),
    ],
)
def test_exit_codes_by_format(tmp_path: Path, args: list[str], code: int) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text(CHAIN)
    proc = run_bastion("map", "-f", str(path), *args)
    assert proc.returncode == code, proc.stdout + proc.stderr
    if "json" in args:
        assert json.loads(proc.stdout)["ok"] is False  # the verdict is still the verdict
    if "dot" in args:
        assert proc.stdout.startswith('digraph "shop" {')


def test_drawings_piped_to_stdout_exit_0_on_the_examples_spofs(example_copy: Path) -> None:
    manifest = str(example_copy / "bastion.yaml")
    assert run_bastion("map", "-f", manifest).returncode == 1  # the example has SPOFs
    for fmt in ("dot", "mermaid"):
        proc = run_bastion("map", "-f", manifest, "--format", fmt)
        assert proc.returncode == 0, (fmt, proc.stderr)
        assert proc.stdout.strip()
