"""A job's restart policy in the manifest reaches its supervisor, reset interval included."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.errors import ManifestError
from bastion.manifest import loads
from bastion.train import JobSupervisor

BASE = """
version: 1
system: t
jobs:
  j:
    command: [python, train.py]
    restart: {RESTART}
"""


def test_healthy_after_s_reaches_the_supervisor(tmp_path: Path) -> None:
    manifest = loads(BASE.replace("{RESTART}", "{max: 3, healthy_after_s: 42}"), base_dir=tmp_path)
    job = JobSupervisor.from_manifest(manifest, "j")
    assert (job.max_restarts, job.healthy_after_s) == (3, 42)
    default = loads(BASE.replace("{RESTART}", "{max: 3}"), base_dir=tmp_path)
    assert JobSupervisor.from_manifest(default, "j").healthy_after_s == 300


@pytest.mark.parametrize(
    "bad", ["{healthy_after_s: 0}", "{healthy_after_s: -1}", "{healty_after_s: 5}"]
)
def test_a_bad_reset_interval_is_a_located_manifest_error(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ManifestError) as info:
        loads(BASE.replace("{RESTART}", bad), base_dir=tmp_path)
    assert "jobs.j.restart" in str(info.value)
