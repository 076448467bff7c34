"""``bastion schema`` accepts what ``bastion check`` accepts (issue 12, item 15), and helps
an editor: every property has a description.

- every manifest in the repository (examples, the manifests the tests write, the README's
  and docs' YAML blocks, and the ``bastion init`` starter) that check accepts validates
  against the schema with ``jsonschema``;
- generated manifests (hypothesis, fixed seed) with wrong and right values in every field
  the schema can judge are accepted by both or refused by both.

What a schema cannot say (references between sections, cycles, k <= n, min <= max, a
backend's model-or-url, an SLO's objective-or-latency, the hedge grammar) is checked by
``check`` alone; the generator keeps those right so the comparison is fair.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from bastion.errors import ManifestError
from bastion.manifest import loads, schema
from bastion.manifest._load import _parse, _plain
from tests.conftest import REPO
from tests.helpers import run_bastion

VALIDATOR = jsonschema.Draft202012Validator(schema())


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(schema())


def test_every_property_has_a_description() -> None:
    missing: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for name, prop in node.get("properties", {}).items():
                if not prop.get("description"):
                    missing.append(f"{where}.{name}")
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    doc = schema()
    walk(doc, "")
    assert missing == []
    assert len(json.dumps(doc)) > 1000
    # Objects say what they are, too.
    assert all(d.get("description") for d in doc["$defs"].values())  # type: ignore[union-attr]


def _looks_like_manifest(text: str) -> bool:
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return bool(re.search(r"^version: 1\s*$", body, re.M)) and "system:" in body


def _python_manifests(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _looks_like_manifest(node.value):
                out.append(node.value)
        elif isinstance(node, ast.Dict):
            try:
                value = ast.literal_eval(node)
            except ValueError:
                continue  # built from names, not a literal
            if value.get("version") == 1 and "system" in value:
                out.append(json.dumps(value))  # JSON is YAML
    return out


def _markdown_manifests(path: Path) -> list[str]:
    blocks = re.findall(r"```ya?ml\n(.*?)```", path.read_text(encoding="utf-8"), re.S)
    return [b for b in blocks if _looks_like_manifest(b)]


def repository_manifests(tmp_path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    skip = {".venv", ".git", ".bastion", "node_modules"}
    for path in sorted(REPO.rglob("*")):
        if skip & set(path.relative_to(REPO).parts) or not path.is_file():
            continue
        name = str(path.relative_to(REPO))
        if path.suffix in (".yaml", ".yml"):
            text = path.read_text(encoding="utf-8")
            if _looks_like_manifest(text):
                found[name] = text
        elif path.suffix == ".py" and path.parts[len(REPO.parts)] in ("src", "tests", "examples"):
            for i, text in enumerate(_python_manifests(path)):
                found[f"{name}#{i}"] = text
        elif path.suffix == ".md":
            for i, text in enumerate(_markdown_manifests(path)):
                found[f"{name}#{i}"] = text
    proc = run_bastion("init", str(tmp_path / "starter"))
    assert proc.returncode == 0, proc.stderr
    found["bastion init"] = (tmp_path / "starter" / "bastion.yaml").read_text(encoding="utf-8")
    return found


def as_data(text: str) -> Any:
    return _plain(_parse(text, "bastion.yaml"))


def test_every_manifest_in_the_repository_that_check_accepts_validates(tmp_path: Path) -> None:
    manifests = repository_manifests(tmp_path)
    accepted = []
    wrong: list[str] = []
    for name, text in manifests.items():
        try:
            loads(text.replace("{system}", "s"), base_dir=tmp_path)
        except ManifestError:
            continue  # a broken manifest on purpose (the error tests)
        accepted.append(name)
        errors = sorted(VALIDATOR.iter_errors(as_data(text)), key=str)
        wrong.extend(f"{name}: {e.json_path}: {e.message}" for e in errors)
    print(f"{len(accepted)} of {len(manifests)} manifests accepted by check: {accepted}")
    assert "examples/digits/bastion.yaml" in accepted
    assert "bastion init" in accepted
    assert len(accepted) >= 9
    assert wrong == []


# ------------------------------------------------------------------ differential


MISSING = object()

# Each field's options; the first is right, the others right or wrong in ways a schema can
# judge. A document varies one field and keeps the others right, so that field decides.
FIELDS: dict[str, tuple[Any, ...]] = {
    "availability": (MISSING, 0.99, 1, 0, 1.5, -0.1, "0.9", "high", True, None),
    "kind": ("compute", "storage", "vendor-api", "computer", 3),
    "location": (MISSING, "cloud", "on-prem", "moon"),
    "provider": (MISSING, "aws", 5, None),
    "domains": (MISSING, {"site": "dc1"}, {"planet": "mars"}, {"zone": 3}, "dc1"),
    "description": (MISSING, "a pool", 7),
    "depends_on": (
        ["a0"],
        [{"id": "a0"}],
        [{"id": "a0", "type": "soft"}],
        [{"id": "a0", "type": 1}],
        [{"name": "a0"}],
        "a0",
        [5],
    ),
    "id_key": ("train", "Bad_Name", "t" * 65, "ok.name-1", "-x"),
    "command": (["python", "t.py"], [], "python t.py", ["a", 1]),
    "heartbeat_timeout_s": (MISSING, 30, 0.5, 0, -1, "30", "soon", True),
    "warm_standby": (MISSING, True, False, "yes", 1, "true"),
    "env": (MISSING, {"A": "b"}, {"A": 1}, ["A=b"]),
    "inputs": (
        MISSING,
        {"d": "dataset/d@1"},
        {"d": "dataset/a.b/c@latest"},
        {"d": "data/x"},
        {"d": "dataset/../x"},
        {"d": "dataset/a..b"},
        {"d": "dataset/d@1.5"},
        {"d": "dataset/d@"},
        {"d": "model/m"},
        {"d": "dataset/" + "x" * 129},
    ),
    "checkpoint": (MISSING, {"every_steps": 50}, {"every_steps": 0}, {"keep": "3"}, {"x": 1}),
    "restart": (MISSING, {"max": 3, "backoff_s": 0.2}, {"max": -1}, {"max": 2.0}),
    "listen": (
        MISSING,
        "127.0.0.1:8700",
        "127.0.0.1:0",
        "h:99999",
        "h:65535",
        "h:65536",
        "h:08700",
        ":80",
        "localhost",
        "[::1]:8701",
        "h:\u0668\u0667",
    ),
    "url": ("http://h:1", "https://h", "HTTP://h:2/v1", "htp://x", "http://", "ftp://h", "h:1"),
    "tier": (MISSING, "primary", "fallback", 2, "third", 1.5),
    "replicas": (MISSING, {"min": 1, "max": 2}, {"min": -1}, {"max": 0}, {"min": "1"}),
    "policy": (MISSING, {"timeout_ms": 500}, {"timeout_ms": 0}, {"retry_budget": 2}),
    "rto_s": (30, 0, "30", None, 1e-9),
}


def put(target: dict[str, Any], key: str, value: Any) -> None:
    if value is not MISSING:
        target[key] = value


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    varied = draw(st.sampled_from(sorted(FIELDS)))

    def value(name: str) -> Any:
        return draw(st.sampled_from(FIELDS[name])) if name == varied else FIELDS[name][0]

    comp: dict[str, Any] = {"id": "a0", "kind": value("kind")}
    for name in ("availability", "location", "provider", "domains", "description"):
        put(comp, name, value(name))
    second = {"id": "a1", "kind": "compute", "depends_on": value("depends_on")}
    job: dict[str, Any] = {"command": value("command")}
    for name in ("heartbeat_timeout_s", "warm_standby", "env", "inputs", "checkpoint", "restart"):
        put(job, name, value(name))
    backend: dict[str, Any] = {"name": "b", "url": value("url")}
    put(backend, "tier", value("tier"))
    local: dict[str, Any] = {"name": "local", "model": "model/m@1"}
    put(local, "replicas", value("replicas"))
    service: dict[str, Any] = {"backends": [local, backend]}
    put(service, "listen", value("listen"))
    put(service, "policy", value("policy"))
    doc = {
        "version": 1,
        "system": "s",
        "components": [comp, second],
        "jobs": {value("id_key"): job},
        "services": {"api": service},
        "recovery": {"site": {"rto_s": value("rto_s"), "rpo_s": 0}},
    }
    return varied, doc


@seed(12015)
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=documents())
def test_schema_and_check_agree(case: tuple[str, dict[str, Any]]) -> None:
    varied, doc = case
    text = json.dumps(doc, ensure_ascii=False)
    try:
        loads(text)
        check_ok, why = True, ""
    except ManifestError as exc:
        check_ok, why = False, str(exc)
    errors = [f"{e.json_path}: {e.message}" for e in VALIDATOR.iter_errors(doc)]
    assert check_ok == (not errors), (varied, why, errors)


@pytest.mark.parametrize(
    "text",
    [
        "version: 1\nsystem: s\ncomponents:\n  - {id: db, kind: storage}\n"
        "  - {id: app, kind: compute, depends_on: [db]}\n",
        "version: 1\nsystem: s\ncomponents:\n  - {id: db, kind: storage}\n"
        "jobs:\n  t: {command: [a], depends_on: [db, {id: db, type: soft}]}\n",
    ],
)
def test_short_form_depends_on_is_valid_for_both(text: str) -> None:
    loads(text)
    assert list(VALIDATOR.iter_errors(as_data(text))) == []


def test_cli_schema_prints_the_schema() -> None:
    proc = run_bastion("schema")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == schema()
