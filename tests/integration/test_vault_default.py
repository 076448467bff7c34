"""A manifest without ``vault:`` still has a vault: the default one under its state
directory, where its jobs checkpoint. ``Vault.from_manifest`` opens the same one
training does, so ``bastion vault`` sees (and gc prunes) a job's checkpoints there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bastion.manifest import load
from bastion.train import checkpoint_keys, checkpoint_name, checkpoint_replicas, open_store
from bastion.vault import Vault, vault_keys, vault_replicas
from tests.helpers import run_bastion

NO_VAULT = """\
version: 1
system: novault
jobs:
  train-mlp:
    command: [python, train.py]
    checkpoint: {every_steps: 10, keep: 2}
"""

WITH_VAULT = """\
version: 1
system: withvault
state_dir: state
vault:
  replicas: [r/one, r/two, r/three]
  key: k/sign.key
  admin_key: k/admin.key
jobs:
  j:
    command: [python, train.py]
"""


@pytest.mark.parametrize("text", [NO_VAULT, WITH_VAULT], ids=["default-vault", "declared"])
def test_the_vault_and_training_agree_on_which_vault(tmp_path: Path, text: str) -> None:
    (tmp_path / "bastion.yaml").write_text(text)
    manifest = load(tmp_path / "bastion.yaml")
    assert vault_replicas(manifest) == checkpoint_replicas(manifest)
    assert vault_keys(manifest) == checkpoint_keys(manifest)
    vault = Vault.from_manifest(manifest, create=False)
    assert [s.url for s in vault.stores] == vault_replicas(manifest)
    assert vault.key_path == vault_keys(manifest)[0]
    assert vault.admin_key_path == vault_keys(manifest)[1]


def test_vault_commands_see_a_jobs_checkpoints_in_the_default_vault(tmp_path: Path) -> None:
    (tmp_path / "bastion.yaml").write_text(NO_VAULT)
    init = run_bastion("init", cwd=tmp_path)
    assert init.returncode == 0, init.stdout + init.stderr
    manifest = load(tmp_path / "bastion.yaml")
    store = open_store(manifest, job="train-mlp")  # where training puts them
    for step in range(10, 60, 10):
        store.commit(
            checkpoint_name("train-mlp", step),
            {"state.safetensors": bytes([step]) * 5000},
            meta={"step": step},
            lineage=[],
        )

    # wide enough that the table shows whole names (piped tables are another item's)
    ls = run_bastion("vault", "ls", cwd=tmp_path, env={**os.environ, "COLUMNS": "200"})
    assert ls.returncode == 0, ls.stdout + ls.stderr
    for step in range(10, 60, 10):
        assert checkpoint_name("train-mlp", step) in ls.stdout
    verify = run_bastion("vault", "verify", cwd=tmp_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # the job's checkpoint.keep holds there too
    gc = run_bastion("vault", "gc", "--grace-s", "0", cwd=tmp_path)
    assert gc.returncode == 0, gc.stdout + gc.stderr
    assert "checkpoints deleted 3" in gc.stdout
    assert store.checkpoints("train-mlp") == [
        checkpoint_name("train-mlp", 50),
        checkpoint_name("train-mlp", 40),
    ]
