"""What the vault takes from a manifest beyond its ``vault:`` section: each job's
checkpoint series.

Owns: the checkpoint series gc counts per job (``ckpt/<job>/step-`` -> the job's
``checkpoint.keep``).

Must never: open a replica or read a key, or guess a
job's ``keep`` for a series the manifest does not declare (``bastion train run --name``
checkpoints are left to gc's per-name rules, which keep them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.names import parse_name

if TYPE_CHECKING:
    from bastion.manifest import Manifest

__all__ = ["checkpoint_prefix", "checkpoint_series"]


def checkpoint_prefix(job: str) -> str:
    """The name prefix of ``job``'s checkpoints: ``ckpt/<job>/step-`` and a step number
    (``bastion.train`` names them ``ckpt/<job>/step-000400``)."""
    parse_name(f"ckpt/{job}/step-0")
    return f"ckpt/{job}/step-"


def checkpoint_series(manifest: Manifest) -> dict[str, int]:
    """Each declared job's checkpoint series and how many of it to keep
    (``checkpoint.keep``, 3 unless the job says otherwise)."""
    return {checkpoint_prefix(job): spec.checkpoint.keep for job, spec in manifest.jobs.items()}
