"""Pipelines run for real: stage processes under the supervisor, a real vault, events.

A failing stage stops its dependants and nothing else; retries go through the
supervisor's backoff; a re-run with nothing changed runs nothing; a change to any part
of a stage's key re-runs that stage and those after it; a stage with an unhashable part
runs uncached and says so.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bastion import event_kinds as ek
from bastion.manifest import load
from bastion.pipeline import read_run
from tests.helpers import run_bastion
from tests.pipelines import make_world, manifest_text, open_vault, outputs, stage_events


def _run(root: Path) -> tuple[int, str]:
    done = run_bastion("pipeline", "run", "p", "-f", str(root / "bastion.yaml"), timeout=120)
    record = read_run(load(root / "bastion.yaml").state_dir, "p")
    assert record is not None, done.stdout + done.stderr
    return done.returncode, record.run_id


def test_a_failing_stage_blocks_its_dependants_and_nothing_else(tmp_path: Path) -> None:
    root = make_world(tmp_path / "w", manifest_text(config={"b": {"fail": 1}}))
    pipeline = root / "state" / "pipelines" / "p"
    left = pipeline / "trash" / "0123abcd"  # what a runner killed mid-clean-up leaves
    left.mkdir(parents=True)
    (left / "out.txt").write_text("old")
    code, run_id = _run(root)
    assert code == 1
    # work directories are removed off the critical path, but all before the run ends:
    # only the failed stage's is kept (to look at), and the trash is empty
    assert sorted(p.name for p in (pipeline / "work").iterdir()) == ["b"]
    assert list((pipeline / "trash").iterdir()) == []
    record = read_run(root / "state", "p")
    assert record is not None
    states = {n: r.state for n, r in record.stages.items()}
    # c does not read b: it runs; d reads b, e reads d: both blocked, never started
    assert states == {
        "a": "succeeded",
        "b": "failed",
        "c": "succeeded",
        "d": "blocked",
        "e": "blocked",
    }
    assert sorted(stage_events(root, ek.PIPELINE_STAGE_RUNNING, run_id)) == ["a", "b", "c"]
    assert sorted(stage_events(root, ek.PIPELINE_STAGE_BLOCKED, run_id)) == ["d", "e"]
    # b failed after its retry (retries: 1): two processes, through the supervisor
    assert record.stages["b"].attempts == 2
    assert stage_events(root, "pipeline.stage.process.restarting", run_id) == ["b"]
    vault, log = open_vault(root)
    try:
        assert vault.names("dataset/") == ["dataset/a", "dataset/c", "dataset/raw"]
    finally:
        log.close()


def test_a_retried_stage_succeeds_on_its_second_attempt(tmp_path: Path) -> None:
    root = make_world(tmp_path / "w", manifest_text(config={"c": {"flaky": 1}}))
    code, _ = _run(root)
    assert code == 0
    record = read_run(root / "state", "p")
    assert record is not None
    assert record.stages["c"].attempts == 2


def test_nothing_changed_runs_nothing_and_ends_with_the_same_outputs(tmp_path: Path) -> None:
    root = make_world(tmp_path / "w")
    assert _run(root)[0] == 0
    first = outputs(root)
    code, run_id = _run(root)
    assert code == 0
    assert stage_events(root, ek.PIPELINE_STAGE_RUNNING, run_id) == []
    assert sorted(stage_events(root, ek.PIPELINE_STAGE_CACHED, run_id)) == list("abcde")
    assert outputs(root) == first
    record = read_run(root / "state", "p")
    assert record is not None
    assert list(record.stages) == list("abcde")  # the journal keeps the run's order
    status = run_bastion("pipeline", "status", "p", "--json", "-f", str(root / "bastion.yaml"))
    assert status.returncode == 0
    assert '"state": "cached"' in status.stdout


@pytest.mark.parametrize("part", ["input", "code", "command", "config", "env", "environment"])
def test_changing_any_part_of_the_key_reruns_that_stage_and_what_reads_it(
    tmp_path: Path, part: str
) -> None:
    """No false cache hit: the changed stage runs again, and so does every stage after
    it (their keys name the new snapshot's id); the others stay cached."""
    root = make_world(tmp_path / "w")
    assert _run(root)[0] == 0
    first = outputs(root)
    text = (root / "bastion.yaml").read_text()
    after_b = {"b", "d", "e"}  # b and what reads it, directly or not; not a, not c
    expected = after_b
    b_stage = "[python, stage.py, b]"
    if part == "input":
        vault, log = open_vault(root)
        vault.commit("dataset/raw", {"raw.txt": b"raw data, changed\n"})
        log.close()
        expected = set("abcde")
    elif part == "code":
        # every stage runs stage.py: one byte more changes every key
        (root / "stage.py").write_text((root / "stage.py").read_text() + "\n# changed\n")
        expected = set("abcde")
    elif part == "command":
        text = text.replace(b_stage, "[python, stage.py, b, extra]")
    elif part == "config":
        text = text.replace(
            "output: dataset/b\n        config: {}", "output: dataset/b\n        config: {k: 1}"
        )
    elif part == "env":
        text = text.replace(b_stage, b_stage + "\n        env: {X: '1'}")
    elif part == "environment":
        lock = root / "requirements.lock"
        lock.write_text("numpy==1\n")
        text = text.replace(b_stage, b_stage + f"\n        lock: {lock}")
    (root / "bastion.yaml").write_text(text)
    _, run_id = _run(root)
    ran = set(stage_events(root, ek.PIPELINE_STAGE_RUNNING, run_id))
    assert ran == expected, (part, ran)
    if part == "environment":
        lock.write_text("numpy==2\n")  # the lock's bytes: another environment
        _, run_id = _run(root)
        assert set(stage_events(root, ek.PIPELINE_STAGE_RUNNING, run_id)) == after_b
    if part in ("input", "config"):  # these change the stages' output bytes too
        assert outputs(root) != first
    # and nothing changed since: everything is a hit
    _, run_id = _run(root)
    assert stage_events(root, ek.PIPELINE_STAGE_RUNNING, run_id) == []


def test_an_unhashable_code_path_runs_the_stage_uncached_and_says_so(tmp_path: Path) -> None:
    fifo = tmp_path / "w" / "pipe"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    root = make_world(tmp_path / "w", manifest_text(extra={"b": f"code: [stage.py, {fifo}]"}))
    for _ in range(2):
        code, run_id = _run(root)
        assert code == 0
        assert "b" in stage_events(root, ek.PIPELINE_STAGE_RUNNING, run_id)
        assert stage_events(root, ek.PIPELINE_STAGE_UNCACHEABLE, run_id) == ["b"]
    record = read_run(root / "state", "p")
    assert record is not None
    assert record.stages["b"].key is None
    assert "not a regular file" in (record.stages["b"].uncached or "")
    out = run_bastion("pipeline", "status", "p", "-f", str(root / "bastion.yaml"))
    assert "uncached: code" in out.stdout, out.stdout
