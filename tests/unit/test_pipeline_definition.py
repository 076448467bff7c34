"""Bad pipeline definitions are manifest errors, located at file:line:column, exit 2;
a good one gives a DAG whose order follows from the refs alone."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bastion.errors import ManifestError
from bastion.manifest import loads
from bastion.pipeline import build
from tests.helpers import run_bastion

GOOD = """\
version: 1
system: pipes
pipelines:
  p:
    sources: [dataset/raw@latest, model/m@prod]
    stages:
      train:
        command: [python, train.py]
        inputs: {data: dataset/clean, verdict: verdict/dataset/clean}
        output: model/m
      ingest:
        command: [python, ingest.py]
        inputs: {raw: dataset/raw@latest}
        output: dataset/clean
      check:
        uses: validate-data
        inputs: {data: dataset/clean, against: dataset/raw@latest}
      gate:
        uses: gate
        inputs: {candidate: model/m, holdout: dataset/clean, golden: dataset/clean,
                 against: model/m@prod}
        optional: [against]
      promote:
        uses: promote
        inputs: {model: model/m, verdict: verdict/model/m}
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(ManifestError) as info:
        loads(text, filename="bastion.yaml")
    return [str(p) for p in info.value.problems]


def test_the_order_follows_from_outputs_and_inputs() -> None:
    manifest = loads(GOOD)
    dag = build(manifest.pipelines, "p")
    assert dag.order == ["ingest", "check", "train", "gate", "promote"]
    assert dag.nodes["check"].output == "verdict/dataset/clean"
    assert dag.nodes["promote"].output == "model/m@prod"
    # model/m@prod is the baseline from outside, not promote's output: no cycle
    assert dag.nodes["gate"].sources == {"against": "model/m@prod"}
    assert dag.descendants("check") == {"train", "gate", "promote"}


CASES = [
    (
        "a cycle",
        ("inputs: {raw: dataset/raw@latest}", "inputs: {raw: dataset/raw@latest, m: model/m}"),
        "bastion.yaml:13:46: pipelines.p.stages.ingest.inputs.m: stage cycle: "
        "ingest -> train -> ingest",
    ),
    (
        "an unknown ref",
        ("inputs: {raw: dataset/raw@latest}", "inputs: {raw: dataset/rwa@latest}"),
        "bastion.yaml:13:23: pipelines.p.stages.ingest.inputs.raw: unknown ref "
        "'dataset/rwa@latest': no stage outputs it and it is not one of the pipeline's "
        "sources (did you mean 'dataset/raw@latest'?); add it to sources if it comes from "
        "outside",
    ),
    (
        "an output written by two stages",
        ("output: model/m", "output: dataset/clean"),
        "bastion.yaml:14:17: pipelines.p.stages.ingest.output: dataset/clean is also the "
        "output of stage 'train'; each snapshot has exactly one stage that writes it",
    ),
    (
        "a stage reading its own output",
        ("inputs: {raw: dataset/raw@latest}", "inputs: {raw: dataset/clean}"),
        "bastion.yaml:13:23: pipelines.p.stages.ingest.inputs.raw: stage 'ingest' reads "
        "its own output dataset/clean",
    ),
    (
        "a built-in missing an input",
        ("inputs: {model: model/m, verdict: verdict/model/m}", "inputs: {model: model/m}"),
        "bastion.yaml:25:9: pipelines.p.stages.promote.inputs: a promote stage needs input "
        "'verdict' (it takes model, verdict)",
    ),
    (
        "a command stage with no output",
        ("        output: model/m\n", ""),
        "bastion.yaml:7:7: pipelines.p.stages.train: a command stage needs output (the one "
        "snapshot it publishes)",
    ),
    (
        "an unknown built-in",
        ("uses: validate-data", "uses: validate-dta"),
        "bastion.yaml:16:15: pipelines.p.stages.check.uses: 'validate-dta' is not one of: "
        "command, validate-data, evaluate, gate, promote (did you mean 'validate-data'?)",
    ),
]


@pytest.mark.parametrize(("what", "edit", "expected"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_definition_is_a_located_manifest_error(
    what: str, edit: tuple[str, str], expected: str
) -> None:
    old, new = edit
    assert old in GOOD, what
    found = _problems(GOOD.replace(old, new, 1))
    assert expected in found, "\n".join(found)


def test_the_cli_exits_2_naming_the_place(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text(
        GOOD.replace("inputs: {raw: dataset/raw@latest}", "inputs: {raw: dataset/clean}")
    )
    for args in (["check"], ["pipeline", "run", "p"], ["pipeline", "status"]):
        done = run_bastion(*args, "-f", str(path))
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "bastion.yaml:13:23" in done.stdout + done.stderr, args


def test_an_unknown_pipeline_is_exit_2_with_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text(textwrap.dedent(GOOD))
    done = run_bastion("pipeline", "status", "q", "-f", str(path))
    assert done.returncode == 2
    assert "no pipeline 'q'" in done.stdout + done.stderr
