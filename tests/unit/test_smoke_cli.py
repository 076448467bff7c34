from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import EXAMPLE
from tests.helpers import run_bastion


def test_check_example_manifest_exits_zero() -> None:
    proc = run_bastion("check", "-f", str(EXAMPLE / "bastion.yaml"))
    assert proc.returncode == 0, proc.stderr
    assert "system 'digits'" in proc.stdout


def test_version() -> None:
    from bastion import __version__

    proc = run_bastion("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"bastion {__version__}"


def test_piped_tables_keep_identifiers_whole(tmp_path: Path) -> None:
    from bastion.events import EventLog

    subject = "ckpt/train-a-rather-long-job-name/step-000400/" + "x" * 80
    with EventLog.in_state_dir(tmp_path / "state") as log:
        log.emit("vault.put", subject, files=3, note="n" * 120)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    proc = run_bastion("events", "--state-dir", str(tmp_path / "state"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert subject in proc.stdout
    assert "n" * 120 in proc.stdout
