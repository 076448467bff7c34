"""Every structural problem the map would trip over is a located manifest error in `check`
(issue 19, item 5): a manifest that loads always makes a map.

The property test builds random systems (components with depends_on and redundancy, jobs
with slots, services with backends whose provider may name a component) with a fixed
seed, and checks that the loader either names a problem with file:line:column or the map
builds and analyses without error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from bastion.errors import ManifestError
from bastion.manifest import loads
from bastion.map import map_manifest
from tests.helpers import run_bastion

DUPLICATE_MEMBER = """\
version: 1
system: shop
components:
  - {id: db-a, kind: storage, availability: 0.999}
  - {id: db-b, kind: storage, availability: 0.999}
  - id: db
    kind: storage
    redundancy: {mode: active-active, members: [db-a, db-b, db-a]}
jobs:
  etl: {command: ["true"], depends_on: [db]}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ManifestError) as info:
        loads(text, filename="bastion.yaml")
    return [str(p) for p in info.value.problems]


def test_duplicate_redundancy_member_is_located_in_check_and_map(tmp_path: Path) -> None:
    assert problems(DUPLICATE_MEMBER) == [
        "bastion.yaml:8:61: components[2].redundancy.members[2]: 'db-a' is listed twice "
        "(also members[0]); members must be distinct"
    ]
    path = tmp_path / "bastion.yaml"
    path.write_text(DUPLICATE_MEMBER, encoding="utf-8")
    for command in ("check", "map"):
        proc = run_bastion(command, "-f", str(path))
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        assert f"{path}:8:61: components[2].redundancy.members[2]: 'db-a' is listed twice" in (
            proc.stderr
        ), (command, proc.stderr)


BASE = """\
version: 1
system: shop
components:
  - {id: vendor, kind: vendor-api, provider: vendor}
jobs:
  train:
    command: ["true"]
    slots: [{name: w1}, {name: w2}]
services:
  api:
    backends:
      - {name: one, url: "http://10.0.0.1:1", provider: vendor}
"""

CASES = [
    (
        "a job and a service with one name",
        ("services:\n  api:", "services:\n  train:"),
        "bastion.yaml:10:3: services.train: 'train' is both a job and a service; "
        "give them different names",
    ),
    (
        "duplicate slot name",
        ("{name: w2}", "{name: w1}"),
        "bastion.yaml:8:32: jobs.train.slots[1].name: duplicate slot name 'w1' (also slots[0])",
    ),
    (
        "redundancy on a component that is a job",
        (
            "  - {id: vendor, kind: vendor-api, provider: vendor}",
            "  - {id: vendor, kind: vendor-api, provider: vendor}\n"
            "  - {id: train, kind: job, redundancy: {members: [vendor]}}",
        ),
        "bastion.yaml:5:28: components[1].redundancy: component 'train' describes the job "
        "'train', which cannot declare redundancy here",
    ),
    (
        "a backend's provider that depends on the service",
        (
            "  - {id: vendor, kind: vendor-api, provider: vendor}",
            "  - {id: vendor, kind: vendor-api, provider: vendor, depends_on: [api]}",
        ),
        "dependency cycle: api -> vendor -> api",
    ),
]


@pytest.mark.parametrize(("what", "edit", "expected"), CASES, ids=[c[0] for c in CASES])
def test_structural_problem_is_located(what: str, edit: tuple[str, str], expected: str) -> None:
    old, new = edit
    assert old in BASE, what
    found = problems(BASE.replace(old, new, 1))
    assert any(expected in p for p in found), found
    assert all(p.startswith("bastion.yaml:") for p in found)


IDS = ["a", "b", "c", "d", "api", "train"]


@st.composite
def systems(draw: st.DrawFn) -> dict[str, Any]:
    ids = st.sampled_from(IDS)
    components = []
    for cid in draw(st.lists(ids, max_size=6)):
        comp: dict[str, Any] = {"id": cid, "kind": draw(st.sampled_from(["compute", "job"]))}
        if draw(st.booleans()):
            comp["availability"] = draw(st.sampled_from([0.9, 0.99, 1.0]))
        if draw(st.booleans()):
            comp["depends_on"] = draw(st.lists(ids, max_size=3))
        if draw(st.integers(0, 3)) == 0:
            members = draw(st.lists(ids, min_size=1, max_size=4))
            comp["redundancy"] = {"members": members}
            if draw(st.booleans()):
                comp["redundancy"] |= {"mode": "k-of-n", "k": draw(st.integers(1, 4))}
        if draw(st.booleans()):
            comp["provider"] = draw(st.sampled_from(["x", "X ", "a"]))
        components.append(comp)
    doc: dict[str, Any] = {"version": 1, "system": "s", "components": components}
    if draw(st.booleans()):
        doc["vault"] = {"replicas": ["/tmp/v1", "file:///tmp/v2"][: draw(st.integers(1, 2))]}
    if draw(st.booleans()):
        slots = [{"name": n} for n in draw(st.lists(st.sampled_from(["w1", "w2"]), max_size=3))]
        doc["jobs"] = {
            draw(ids): {
                "command": ["true"],
                "depends_on": draw(st.lists(ids, max_size=2)),
                "slots": slots,
                "inputs": {"d": "dataset/d@1"} if draw(st.booleans()) else {},
            }
        }
    if draw(st.booleans()):
        backends = []
        for i in range(draw(st.integers(1, 3))):
            backend: dict[str, Any] = {"name": f"b{i}"}
            if draw(st.booleans()):
                backend["model"] = "model/m@1"
            else:
                backend["url"] = draw(st.sampled_from(["http://h1:1", "http://127.0.0.1:2"]))
                if draw(st.booleans()):
                    backend["provider"] = draw(ids)
            if draw(st.integers(0, 3)) == 0:
                backend["component"] = draw(ids)
            backends.append(backend)
        doc["services"] = {
            draw(ids): {"backends": backends, "depends_on": draw(st.lists(ids, max_size=2))}
        }
    return doc


@seed(19053)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=systems())
def test_a_manifest_that_loads_always_makes_a_map(doc: dict[str, Any]) -> None:
    text = json.dumps(doc)
    try:
        manifest = loads(text, filename="bastion.yaml")
    except ManifestError as exc:
        for problem in exc.problems:
            assert problem.file == "bastion.yaml"
            assert problem.line >= 1
            assert problem.column >= 1
        return
    map_manifest(manifest, max_order=2)  # raises UsageError (no location) if check missed one
