"""A user's own training job under ``bastion train run``, as the README tells them to write
it: the job's manifest settings and event log reach the script's checkpointer without
being wired by hand, a finished job is not silently run again (``--fresh`` trains it
anew), Ctrl-C ends with exit 130 after the emergency checkpoint, and a bad ``--name`` is
refused like a bad manifest id."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bastion.events import EventLog
from bastion.manifest import load
from bastion.train import checkpoint_vault
from bastion.vault import Vault, make_key
from tests.helpers import BASTION, run_bastion

MANIFEST = """\
version: 1
system: mine
segments: [staging]
jobs:
  tiny:
    segment: staging
    command: [python, job.py, "{steps}", "{step_ms}"]
    checkpoint: {{every_steps: 7, keep: 2, on_busy: wait}}
    restart: {{max: 2, backoff_s: 0.05}}
    warm_standby: false
"""

# The README's snippet as it was: the checkpointer built by hand with only the job's name
# and store (no events=, no cadence): the manifest's settings must reach it all the same.
BY_HAND = """\
from bastion.manifest import load
from bastion.train import Checkpointer, open_store

ckpt = Checkpointer("tiny", open_store(load("bastion.yaml"), job="tiny"))
"""

# The README's snippet now: everything from the environment `bastion train run` sets.
FROM_ENV = """\
from bastion.train import Checkpointer

ckpt = Checkpointer.from_env()
"""

LOOP = """\
import json, sys, time
import torch
from torch import nn

torch.manual_seed(0)
torch.set_num_threads(1)
steps, step_ms = int(sys.argv[1]), float(sys.argv[2])
model = nn.Linear(4, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
{make}
ckpt.track(model=model, optimizer=opt)
start = ckpt.restore()
print(json.dumps({{"start": start, "keep": ckpt.keep, "on_busy": ckpt.on_busy,
                  "every_steps": ckpt.cadence.every_steps, "segment": ckpt.segment}}),
      flush=True)
for step in range(start, steps):
    began = time.monotonic()
    loss = model(torch.randn(8, 4)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    time.sleep(max(0.0, step_ms / 1000 - (time.monotonic() - began)))
    ckpt.step(step + 1)
ckpt.close()
"""


def _project(root: Path, make: str, *, steps: int = 30, step_ms: float = 0.0) -> Path:
    root.mkdir(parents=True)
    (root / "bastion.yaml").write_text(MANIFEST.format(steps=steps, step_ms=step_ms))
    (root / "job.py").write_text(LOOP.format(make=make))
    make_key(root / ".bastion/keys/signing.key")
    make_key(root / ".bastion/keys/admin.key")
    return root


def _status(root: Path) -> dict[str, Any]:
    done = run_bastion("train", "status", "tiny", "--json", cwd=root)
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows[0]


def _words(text: str) -> str:
    """CLI output with its line wrapping undone (rich wraps at $COLUMNS)."""
    return " ".join(text.split())


def _vault(root: Path) -> Vault:
    return checkpoint_vault(load(root / "bastion.yaml"))


def _steps_in_vault(root: Path) -> list[int]:
    names = _vault(root).names(prefix="ckpt/tiny/")
    return sorted(int(n.rsplit("step-", 1)[1]) for n in names)


def _run_id(root: Path) -> str:
    state = json.loads((root / ".bastion/train/tiny/supervisor.json").read_text())
    return str(state["run_id"])


def _settings_printed(root: Path) -> list[dict[str, Any]]:
    log = (root / ".bastion/train/tiny/job.log").read_text()
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("make", [BY_HAND, FROM_ENV], ids=["by-hand", "from-env"])
def test_the_jobs_manifest_settings_and_event_log_reach_the_checkpointer(
    tmp_path: Path, make: str
) -> None:
    root = _project(tmp_path / "mine", make)
    done = run_bastion("train", "run", "tiny", cwd=root, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _settings_printed(root) == [
        {"start": 0, "keep": 2, "on_busy": "wait", "every_steps": 7, "segment": "staging"}
    ]
    # every 7 steps, none skipped (on_busy: wait), and status counts them all
    assert _steps_in_vault(root) == [7, 14, 21, 28]
    status = _status(root)
    assert (status["status"], status["checkpoints"]) == ("succeeded", 4)
    assert status["last_checkpoint"]["step"] == 28
    saved = EventLog.in_state_dir(root / ".bastion").query(kind="train.checkpoint.saved")
    assert {e.segment for e in saved} == {"staging"}
    assert {e.data["run_id"] for e in saved} == {status["run_id"]}


def test_a_finished_job_is_not_run_again_unless_fresh(tmp_path: Path) -> None:
    root = _project(tmp_path / "mine", BY_HAND)
    first = run_bastion("train", "run", "tiny", cwd=root, timeout=180)
    assert first.returncode == 0, first.stderr
    log = EventLog.in_state_dir(root / ".bastion")
    started = log.count("train.started")
    first_run = _run_id(root)

    again = run_bastion("train", "run", "tiny", cwd=root, timeout=180)
    assert again.returncode == 0, again.stderr
    said = _words(again.stdout)
    assert "tiny: already finished" in said
    assert "nothing to do" in said
    assert "`bastion train run --fresh tiny`" in said
    assert log.count("train.started") == started, "nothing ran"

    fresh = run_bastion("train", "run", "--fresh", "tiny", cwd=root, timeout=180)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert log.count("train.started") == started + 1
    # the new run trained from step 0, passing over the first run's checkpoints
    assert [s["start"] for s in _settings_printed(root)] == [0, 0]
    restored = log.query(kind="train.restored")[-1]
    assert (restored.data["step"], restored.data["older_runs"]) == (0, 4)
    status = _status(root)
    assert status["run_id"] != first_run
    assert (status["status"], status["checkpoints"]) == ("succeeded", 4)
    assert _vault(root).snapshot("ckpt/tiny/step-000028").version == 2


def _wait_for(cond: Callable[[], Any], timeout: float = 120.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout} s")


def test_ctrl_c_exits_130_after_the_emergency_checkpoint(tmp_path: Path) -> None:
    root = _project(tmp_path / "mine", BY_HAND, steps=100000, step_ms=2)
    log = EventLog.in_state_dir(root / ".bastion")
    proc = subprocess.Popen(
        [*BASTION, "train", "run", "tiny"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: proc.poll() is None and len(_steps_in_vault(root)) >= 2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out + err
    preempted = log.query(kind="train.preempted", subject="tiny")
    assert len(preempted) == 1
    assert preempted[0].data["signal"] == "SIGTERM"  # what the supervisor sends its worker
    assert preempted[0].data["emergency_checkpoint"] is True
    step = preempted[0].data["step"]
    assert _steps_in_vault(root)[-1] == step
    assert f"stopped by SIGINT; last checkpoint: step {step}" in _words(out)
    assert "`bastion train run tiny` resumes from it" in _words(out)
    assert _status(root)["status"] == "stopped"


@pytest.mark.parametrize("bad", ["Bad_Name", "-x", "a/b", "x" * 65])
def test_a_bad_name_is_refused_like_a_manifest_id(tmp_path: Path, bad: str) -> None:
    done = run_bastion(
        "train", "run", f"--name={bad}", "--", sys.executable, "-c", "pass", cwd=tmp_path
    )
    assert done.returncode == 2, done.stdout + done.stderr
    said = _words(done.stderr)
    assert f"--name {bad!r} is not a valid job id" in said
    assert "use lower-case letters, digits, '.', '_' or '-'" in said
    assert "(e.g. '" in said
    assert not (tmp_path / ".bastion").exists(), "a refused job makes nothing"
