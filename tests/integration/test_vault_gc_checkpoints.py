"""``checkpoint.keep`` holds in the vault: ``bastion vault gc`` counts each job's
``ckpt/<job>/step-*`` as one series (issue 12 item 5).

Real replicas on disk, checkpoints committed through training's own ``VaultStore``, gc
run through the real CLI. gc keeps exactly: the newest ``keep`` steps of each declared
job, the newest one that reads back whole when those do not, any step another label
points at, and any step a kept model names in its lineage; every other step goes whole
(its versions, its label records, its objects).
"""

from __future__ import annotations

import random
from pathlib import Path

from bastion.drill.faults import FlipBytes, Scope
from bastion.manifest import load
from bastion.train import VaultStore, checkpoint_name
from bastion.vault import Vault
from bastion.vault._objects import object_key
from tests.helpers import run_bastion

MANIFEST = """\
version: 1
system: ckpt-gc
vault:
  replicas: [.bastion/vault/a, .bastion/vault/b]
jobs:
  train-mlp:
    command: [python, train.py]
    checkpoint: {every_steps: 25, keep: 3}
  other:
    command: [python, other.py]
"""


def _steps(vault: Vault, job: str) -> set[int]:
    prefix = f"ckpt/{job}/step-"
    return {int(n.removeprefix(prefix)) for n in vault.names(prefix)}


def test_gc_keeps_each_jobs_newest_checkpoints_the_newest_good_one_and_lineage(
    tmp_path: Path, rng: random.Random
) -> None:
    (tmp_path / "bastion.yaml").write_text(MANIFEST)
    init = run_bastion("init", cwd=tmp_path)
    assert init.returncode == 0, init.stdout + init.stderr
    vault = Vault.from_manifest(load(tmp_path / "bastion.yaml"))
    store = VaultStore(vault)
    for i in range(3):
        vault.commit("dataset/d", {"x.csv": f"rows {i}\n".encode()})
    states: dict[tuple[str, int], bytes] = {}

    def checkpoint(job: str, step: int) -> None:
        state = rng.randbytes(rng.randint(50_000, 200_000))
        states[job, step] = state
        store.commit(
            checkpoint_name(job, step),
            {"state.safetensors": state, "skeleton.json": b'{"format": 1}'},
            meta={"job": job, "step": step},
            lineage=["dataset/d@1"],
        )

    for step in range(25, 301, 25):  # 12 checkpoints, as in the issue
        checkpoint("train-mlp", step)
    for step in range(1, 6):  # keep defaults to 3
        checkpoint("other", step)
    for step in range(1, 5):  # `bastion train run --name adhoc`: not in the manifest
        checkpoint("adhoc", step)
    vault.commit("model/mlp", {"w.bin": b"weights"}, lineage=["ckpt/train-mlp/step-000100"])
    vault.label(checkpoint_name("train-mlp", 50), 1, "best")

    # the three newest train-mlp checkpoints are damaged on every replica: the newest
    # that still reads back whole (step 225) must stay as well
    replicas = [tmp_path / ".bastion" / "vault" / r for r in ("a", "b")]
    for step in (300, 275, 250):
        snap = vault.snapshot(checkpoint_name("train-mlp", step))
        digest = snap.files["state.safetensors"].chunks[0].id
        for replica in replicas:
            path = replica / object_key(digest)
            path.chmod(0o600)
            FlipBytes(
                [path], scope=Scope.of(paths=[replica]), count=4, seed=rng.randrange(2**31)
            ).inject()

    dropped_states = {
        vault.snapshot(checkpoint_name("train-mlp", s)).files["state.safetensors"].chunks[0].id
        for s in (25, 75, 125, 150, 175, 200)
    }

    # a training host holds no admin key: gc refuses and nothing goes
    admin = tmp_path / ".bastion" / "keys" / "admin.key"
    admin.rename(tmp_path / "offline-admin.key")
    denied = run_bastion("vault", "gc", "--grace-s", "0", cwd=tmp_path)
    assert denied.returncode == 2, denied.stdout + denied.stderr
    assert len(_steps(vault, "train-mlp")) == 12
    (tmp_path / "offline-admin.key").rename(admin)

    done = run_bastion("vault", "gc", "--grace-s", "0", cwd=tmp_path)
    out = done.stdout + done.stderr
    # the damaged checkpoints are named, and the exit says something is wrong
    assert done.returncode == 1, out
    assert "checkpoints deleted 8" in done.stdout, out
    for step in (300, 275, 250):
        assert checkpoint_name("train-mlp", step) in out

    after = Vault.from_manifest(load(tmp_path / "bastion.yaml"))
    # newest 3 (keep), newest good (225), a model's lineage (100), another label (50)
    assert _steps(after, "train-mlp") == {300, 275, 250, 225, 100, 50}
    assert _steps(after, "other") == {3, 4, 5}
    assert _steps(after, "adhoc") == {1, 2, 3, 4}  # no keep declared: left alone
    assert [s.version for s in after.versions("dataset/d")] == [1, 2, 3]
    for job, step in [("train-mlp", 225), ("train-mlp", 100), ("train-mlp", 50), ("other", 3)]:
        assert (
            after.read(f"{checkpoint_name(job, step)}@latest", "state.safetensors")
            == (states[job, step])
        )
    # a dropped step is forgotten whole: no label left, its objects gone from disk
    assert not after.replicas.keys(f"snapshots/{checkpoint_name('train-mlp', 200)}/")
    for digest in dropped_states:
        for replica in replicas:
            assert not (replica / object_key(digest)).exists()
    assert store.checkpoints("train-mlp")[:4] == [
        checkpoint_name("train-mlp", s) for s in (300, 275, 250, 225)
    ]

    # gc again: nothing more to drop
    again = run_bastion("vault", "gc", "--grace-s", "0", cwd=tmp_path)
    assert "snapshots deleted 0" in again.stdout, again.stdout + again.stderr
    assert _steps(after, "train-mlp") == {300, 275, 250, 225, 100, 50}
