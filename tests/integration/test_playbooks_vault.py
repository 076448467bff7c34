"""The playbook actions on the vault and the model registry, against a real vault made by
``bastion init``: restore puts an encrypted directory back exactly as its snapshot (the
ransom note gone), rollback moves ``@prod`` back through ``bastion.validate``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bastion import event_kinds as ek
from bastion.events import EventLog
from bastion.manifest import load
from bastion.playbooks import Runner
from bastion.validate import promote
from bastion.vault import Vault

BASTION = [sys.executable, "-m", "bastion"]


def _run(cwd: Path, *args: str) -> None:
    done = subprocess.run(
        [*BASTION, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_restore_and_rollback_actions_go_through_the_vault(tmp_path: Path) -> None:
    (tmp_path / "bastion.yaml").write_text(
        """version: 1
system: t
segments: [staging]
vault: {replicas: [.bastion/vault/a, .bastion/vault/b]}
playbooks:
  rules:
    ransomware:
      on: vault.guard.ransomware
      incident: "{data.name}/{day}"
      actions:
        - {do: restore, snapshot: "{data.name}", into: "{data.dir}"}
    page:
      on: slo.burn.page
      actions:
        - {do: rollback, model: model/m}
"""
    )
    _run(tmp_path, "init", ".")
    data = tmp_path / "data"
    data.mkdir()
    for i in range(5):
        (data / f"f{i}.csv").write_text(f"row,{i}\n" * 100)
    _run(tmp_path, "vault", "put", "dataset/raw", "data")
    model = tmp_path / "model"
    model.mkdir()
    for version in (1, 2):
        (model / "weights.bin").write_bytes(bytes([version]) * 1000)
        _run(tmp_path, "vault", "put", "model/m", "model")
    manifest = load(tmp_path / "bastion.yaml")
    vault = Vault.from_manifest(manifest)
    promote(vault, "model/m@1", force=True, reason="test: first")
    promote(vault, "model/m@2", force=True, reason="test: second")
    # the attack: every file replaced by noise, a ransom note beside them
    for path in data.iterdir():
        path.with_suffix(".locked").write_bytes(b"\x8f" * 300)
        path.unlink()
    (data / "README_PAY.txt").write_text("pay")
    runner = Runner(manifest)
    try:
        with EventLog.in_state_dir(manifest.state_dir) as log:
            (restored,) = runner.handle(
                log.emit(ek.VAULT_GUARD_RANSOMWARE, "dataset/raw", segment="staging",
                         name="dataset/raw", dir=str(data), frozen=False)
            )  # fmt: skip
            assert restored.result(timeout=120) == "resolved"
            (rolled,) = runner.handle(log.emit(ek.SLO_BURN_PAGE, "avail"))
            assert rolled.result(timeout=120) == "resolved"
    finally:
        runner.close()
    assert sorted(p.name for p in data.iterdir()) == [f"f{i}.csv" for i in range(5)]
    assert (data / "f3.csv").read_text() == "row,3\n" * 100
    assert Vault.from_manifest(manifest).snapshot("model/m@prod").version == 1
    with EventLog.in_state_dir(manifest.state_dir) as log:
        (back,) = log.query(kind=ek.MODEL_ROLLED_BACK)
        assert (back.data["version"], back.data["from_version"]) == (1, 2)
        assert len(log.query(kind=ek.PLAYBOOK_RESOLVED)) == 2
