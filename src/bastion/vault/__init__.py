"""The artifact vault: content-addressed, replicated, signed snapshots.

``Vault`` commits trees of files as signed, versioned snapshots on every replica, reads
them back verified (repairing a bad replica from a good one), restores them, moves
labels, scrubs, and guards working directories against tampering and ransomware. Its
``ReplicaSet`` holds the replicas' stores and owns every loop over them: read order,
verified reads with repair, put-to-all with a quorum.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion._lazy import lazy
from bastion.vault._gc import GcReport
from bastion.vault._guard import (
    CANARY,
    Guard,
    GuardStatistics,
    Protected,
    load_protected,
    protect,
    snapshot_dir,
)
from bastion.vault._heal import HealReport
from bastion.vault._keys import make_key
from bastion.vault._manifest import (
    checkpoint_prefix,
    checkpoint_series,
    vault_keys,
    vault_replicas,
)
from bastion.vault._replicas import ReplicaSet, ReplicaSetStatistics, ReplicaStatistics
from bastion.vault._scrub import ScrubReport
from bastion.vault._snapshot import ChunkRef, FileEntry, Snapshot
from bastion.vault._vault import FileSource, PutResult, Vault, VaultStatistics

if TYPE_CHECKING:
    from bastion.vault._client import VaultClient
    from bastion.vault._server import DEFAULT_MAX_UPLOAD, VaultServer

# The vault server and its client bring aiohttp and the segment tokens (over a second of
# imports on a loaded machine); every command that only opens the vault (twin up, put,
# restore) would pay for them, so they are imported when first named.
_LAZY = {
    "VaultClient": "bastion.vault._client",
    "VaultServer": "bastion.vault._server",
    "DEFAULT_MAX_UPLOAD": "bastion.vault._server",
}


__getattr__, __dir__ = lazy(__name__, _LAZY)


__all__ = [
    "CANARY",
    "DEFAULT_MAX_UPLOAD",
    "ChunkRef",
    "FileEntry",
    "FileSource",
    "GcReport",
    "Guard",
    "GuardStatistics",
    "HealReport",
    "Protected",
    "PutResult",
    "ReplicaSet",
    "ReplicaSetStatistics",
    "ReplicaStatistics",
    "ScrubReport",
    "Snapshot",
    "Vault",
    "VaultClient",
    "VaultServer",
    "VaultStatistics",
    "checkpoint_prefix",
    "checkpoint_series",
    "load_protected",
    "make_key",
    "protect",
    "snapshot_dir",
    "vault_keys",
    "vault_replicas",
]
