"""The example's pipeline (examples/digits: ingest -> validate-data -> train -> evaluate
-> gate -> promote) for real: a clean dataset ends promoted to @prod, a re-run with
nothing changed runs nothing, and a shifted dataset is stopped at the data gate with
@prod where it was while the stages that do not read it still run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bastion import event_kinds as ek
from bastion.pipeline import read_run
from tests.helpers import run_bastion
from tests.pipelines import open_vault, stage_events

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits"


def _run(root: Path) -> tuple[int, str]:
    done = run_bastion("pipeline", "run", "digits", "-f", str(root / "bastion.yaml"), timeout=600)
    record = read_run(root / ".bastion", "digits")
    assert record is not None, done.stdout + done.stderr
    return done.returncode, record.run_id


@pytest.mark.slow
def test_the_example_pipeline_promotes_a_clean_model_and_stops_a_shifted_dataset(
    tmp_path: Path,
) -> None:
    root = tmp_path / "digits"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".bastion"))
    assert run_bastion("init", str(root)).returncode == 0
    put = run_bastion(
        "vault", "put", "dataset/digits", str(root / "dataset"), "-f", str(root / "bastion.yaml")
    )
    assert put.returncode == 0, put.stderr
    code, _ = _run(root)
    record = read_run(root / ".bastion", "digits")
    assert record is not None
    assert code == 0, {n: (r.state, r.reason) for n, r in record.stages.items()}
    vault, log = open_vault(root)
    try:
        prod = vault.snapshot("model/digits@prod")
        assert prod.id == record.stages["train"].output["id"]  # type: ignore[index]
    finally:
        log.close()
    # the promotion moved the gate's baseline: the gate runs again, against @prod; then
    # nothing changes and nothing runs
    _run(root)
    code, run_id = _run(root)
    assert code == 0
    assert stage_events(root, ek.PIPELINE_STAGE_RUNNING, run_id) == []

    # a new version of the raw data, every pixel shifted: the data gate stops it
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    for shard in sorted((root / "dataset").glob("*.csv")):
        header, *rows = shard.read_text().splitlines()
        out = [header]
        for row in rows:
            *pixels, label = row.split(",")
            out.append(",".join([*(str(min(16, int(p) + 6)) for p in pixels), label]))
        (shifted / shard.name).write_text("\n".join(out) + "\n")
    put = run_bastion(
        "vault", "put", "dataset/digits", str(shifted), "-f", str(root / "bastion.yaml")
    )
    assert put.returncode == 0, put.stderr
    code, run_id = _run(root)
    assert code == 1
    record = read_run(root / ".bastion", "digits")
    assert record is not None
    states = {n: r.state for n, r in record.stages.items()}
    assert states["validate-data"] == "failed"
    for after in ("train", "evaluate", "gate", "promote"):
        assert states[after] == "blocked", states
    assert states["holdout"] == states["golden"] == states["ingest"] == "succeeded", states
    assert set(stage_events(root, ek.PIPELINE_STAGE_RUNNING, run_id)) == {
        "ingest",
        "holdout",
        "golden",
        "validate-data",
    }
    vault, log = open_vault(root)
    try:
        assert vault.snapshot("model/digits@prod").id == prod.id
        assert [s.version for s in vault.versions("model/digits")] == [prod.version]
    finally:
        log.close()
