"""What the vault takes from a manifest: which vault, its keys, and each job's checkpoint
series.

Owns: the *default vault*: a manifest without ``vault:`` still has one, with replicas
``<state_dir>/vault/a`` and ``<state_dir>/vault/b`` and keys in ``<state_dir>/keys/``
(the vault ``bastion init`` writes into a starter manifest, and the one training
checkpoints into, so ``bastion vault ls`` shows a job's checkpoints with no ``vault:``
section); the key paths (``vault.key`` and ``vault.admin_key``, by default
``<state_dir>/keys/signing.key`` and ``admin.key``); and the checkpoint series gc counts
per job (``ckpt/<job>/step-`` -> the job's ``checkpoint.keep``).

Must never: open a replica or read a key (it only says where they are), or guess a
job's ``keep`` for a series the manifest does not declare (``bastion train run --name``
checkpoints are left to gc's per-name rules, which keep them).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bastion.names import parse_name

if TYPE_CHECKING:
    from bastion.manifest import Manifest

__all__ = ["checkpoint_prefix", "checkpoint_series", "vault_keys", "vault_replicas"]


def checkpoint_prefix(job: str) -> str:
    """The name prefix of ``job``'s checkpoints: ``ckpt/<job>/step-`` and a step number
    (``bastion.train`` names them ``ckpt/<job>/step-000400``)."""
    parse_name(f"ckpt/{job}/step-0")
    return f"ckpt/{job}/step-"


def checkpoint_series(manifest: Manifest) -> dict[str, int]:
    """Each declared job's checkpoint series and how many of it to keep
    (``checkpoint.keep``, 3 unless the job says otherwise)."""
    return {checkpoint_prefix(job): spec.checkpoint.keep for job, spec in manifest.jobs.items()}


def vault_replicas(manifest: Manifest) -> list[str]:
    """The manifest's replicas as it names them, or the default vault's."""
    if manifest.vault is not None:
        return list(manifest.vault.replicas)
    state = Path(manifest.state_dir)
    return [str(state / "vault" / "a"), str(state / "vault" / "b")]


def vault_keys(manifest: Manifest) -> tuple[Path, Path]:
    """The signing and admin key files of the manifest's vault (or the default vault's)."""
    state = Path(manifest.state_dir)
    config = manifest.vault
    signing = config.key if config is not None else None
    admin = config.admin_key if config is not None else None
    return (
        signing or state / "keys" / "signing.key",
        admin or state / "keys" / "admin.key",
    )
