"""Broken manifests: every problem reported at once, with file:line:column and field path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bastion.errors import ManifestError
from bastion.manifest import load, loads
from tests.helpers import run_bastion

GOOD = """\
version: 1
system: digits
segments: [prod, staging]
vault:
  replicas: [v/a, v/b]
components:
  - id: data
    kind: dataset
    availability: 0.999
  - id: vendor-b
    kind: vendor-api
    location: third-party
    provider: vendor-b
jobs:
  train:
    segment: staging
    command: [python, train.py]
    inputs: {data: dataset/digits@latest}
services:
  digits:
    segment: prod
    listen: 127.0.0.1:8700
    backends:
      - name: local
        model: model/digits@prod
      - name: vendor-b
        url: http://127.0.0.1:8801
        tier: fallback
slos:
  - {id: avail, service: digits, objective: 0.999}
recovery:
  software: {rto_s: 30, rpo_s: 60}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ManifestError) as info:
        loads(textwrap.dedent(text), filename="bastion.yaml")
    return [str(p) for p in info.value.problems]


def test_good_manifest_loads() -> None:
    manifest = loads(GOOD)
    assert manifest.system == "digits"
    assert manifest.services["digits"].backends[1].tier_index == 1


# Each case: (description, the edit to GOOD as (old, new), the exact expected message).
CASES = [
    (
        "typo in a top-level key",
        ("slos:", "sloz:"),
        "bastion.yaml:29:1: sloz: unknown key 'sloz' (did you mean 'slos'?)",
    ),
    (
        "typo in a nested key",
        ("    availability: 0.999", "    availabilty: 0.999"),
        "bastion.yaml:9:5: components[0].availabilty: unknown key 'availabilty' "
        "(did you mean 'availability'?)",
    ),
    (
        "wrong type",
        ("  software: {rto_s: 30, rpo_s: 60}", "  software: {rto_s: soon, rpo_s: 60}"),
        "bastion.yaml:32:21: recovery.software.rto_s: 'soon': input should be a valid number, "
        "unable to parse string as a number",
    ),
    (
        "unknown slo reference",
        ("service: digits, objective", "service: digitz, objective"),
        "bastion.yaml:30:26: slos[0].service: unknown service 'digitz' (services: digits)",
    ),
    (
        "bad url",
        ("url: http://127.0.0.1:8801", "url: htp://x"),
        "bastion.yaml:27:14: services.digits.backends[1].url: 'htp://x' is not a URL "
        "(did you mean http://?)",
    ),
    (
        "duplicate component id",
        ("  - id: vendor-b", "  - id: data"),
        "bastion.yaml:10:9: components[1].id: duplicate id 'data' (first declared on line 7)",
    ),
    (
        "missing required section",
        ("system: digits\n", ""),
        "bastion.yaml:1:1: system: missing required key 'system'",
    ),
    (
        "unknown dependency",
        ("    availability: 0.999", "    availability: 0.999\n    depends_on: [nas]"),
        "bastion.yaml:10:18: components[0].depends_on[0]: unknown component 'nas'",
    ),
    (
        "bad vault reference",
        ("inputs: {data: dataset/digits@latest}", "inputs: {data: data/digits}"),
        "bastion.yaml:18:20: jobs.train.inputs.data: artifact name 'data/digits' must start with "
        "one of dataset, model, ckpt, code, config, run, dir, schema, verdict "
        "(e.g. dataset/data)",
    ),
    (
        "path escape in a vault reference",
        ("model: model/digits@prod", "model: model/../../etc@prod"),
        "bastion.yaml:25:16: services.digits.backends[0].model: artifact name 'model/../../etc' "
        "contains '..' or '.'; it would escape its root",
    ),
    (
        "unknown enum value with suggestion",
        ("    kind: dataset", "    kind: datset"),
        "bastion.yaml:8:11: components[0].kind: 'datset' is not one of: dataset, data-source, "
        "feature-store, model, job, service, vendor-api, compute, storage, network "
        "(did you mean 'dataset'?)",
    ),
    (
        "unknown segment",
        ("    segment: staging", "    segment: stagin"),
        "bastion.yaml:16:14: jobs.train.segment: unknown segment 'stagin' "
        "(declared segments: prod, staging)",
    ),
    (
        "availability outside [0, 1]",
        ("availability: 0.999", "availability: 1.5"),
        "bastion.yaml:9:19: components[0].availability: 1.5: input should be less than or "
        "equal to 1",
    ),
    (
        "backend with both model and url",
        (
            "        model: model/digits@prod",
            "        model: model/digits@prod\n        url: http://x:1",
        ),
        "bastion.yaml:24:9: services.digits.backends[0]: a backend needs exactly one of model "
        "(a vault ref) or url",
    ),
    (
        "bad listen address",
        ("listen: 127.0.0.1:8700", "listen: 127.0.0.1:99999"),
        "bastion.yaml:22:13: services.digits.listen: '127.0.0.1:99999' is not host:port "
        "(e.g. 127.0.0.1:8700)",
    ),
    (
        "wrong version",
        ("version: 1", "version: 2"),
        "bastion.yaml:1:10: version: 2 is not one of: 1",
    ),
]


@pytest.mark.parametrize(("what", "edit", "expected"), CASES, ids=[c[0] for c in CASES])
def test_broken_manifest_reports_location(what: str, edit: tuple[str, str], expected: str) -> None:
    old, new = edit
    assert old in GOOD, what
    assert expected in problems(GOOD.replace(old, new, 1))


def test_cycle_is_named() -> None:
    text = GOOD.replace(
        "    availability: 0.999",
        "    availability: 0.999\n    depends_on: [vendor-b]",
    ).replace("    provider: vendor-b\n", "    provider: vendor-b\n    depends_on: [data]\n", 1)
    found = problems(text)
    assert any("dependency cycle: data -> vendor-b -> data" in p for p in found), found
    assert any(p.startswith("bastion.yaml:10:") for p in found if "cycle" in p), found


def test_every_problem_reported_at_once() -> None:
    text = (
        GOOD.replace("sloz", "slos")
        .replace("kind: dataset", "kind: datset")
        .replace("htp", "http")
        .replace("url: http://127.0.0.1:8801", "url: ftp://x")
        .replace("segment: staging", "segment: x")
    )
    found = problems(text)
    assert len(found) == 3, found
    assert [p.split(":")[1] for p in found] == ["8", "16", "27"]


def test_duplicate_yaml_key_is_located() -> None:
    found = problems("version: 1\nsystem: a\nsystem: b\n")
    assert len(found) == 1
    assert found[0].startswith("bastion.yaml:3:1:")
    assert "duplicate key" in found[0]


def test_yaml_syntax_error_is_located() -> None:
    found = problems("version: 1\nsystem: [unclosed\n")
    assert found[0].startswith("bastion.yaml:3:1:") or found[0].startswith("bastion.yaml:2:")


def test_not_a_mapping() -> None:
    assert "must be a mapping" in problems("- 1\n- 2\n")[0]


def test_empty_file() -> None:
    assert "empty" in problems("")[0]


def test_relative_paths_resolve_against_manifest_dir(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "bastion.yaml"
    path.write_text(GOOD)
    manifest = load(path)
    assert manifest.state_dir == (tmp_path / "sub" / ".bastion").resolve()
    assert manifest.vault is not None
    assert manifest.vault.replicas == [str((tmp_path / "sub" / "v" / d).resolve()) for d in "ab"]
    assert manifest.jobs["train"].workdir == (tmp_path / "sub").resolve()
    assert manifest.path == path.resolve()


def test_cli_check_exits_2_with_located_messages(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text(GOOD.replace("url: http://127.0.0.1:8801", "url: htp://x"))
    proc = run_bastion("check", "-f", str(path))
    assert proc.returncode == 2
    assert f"{path}:27:14: services.digits.backends[1].url: 'htp://x' is not a URL" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_check_defaults_to_cwd_manifest(tmp_path: Path) -> None:
    (tmp_path / "bastion.yaml").write_text(GOOD)
    proc = run_bastion("check", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    missing = run_bastion(
        "check", cwd=tmp_path / "v" if (tmp_path / "v").exists() else tmp_path.parent
    )
    assert missing.returncode == 2
    assert "no such manifest" in missing.stderr
    assert "bastion init" in missing.stderr
