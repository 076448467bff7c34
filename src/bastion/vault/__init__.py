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

if TYPE_CHECKING:
    from bastion.vault._client import VaultClient
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
    from bastion.vault._server import DEFAULT_MAX_UPLOAD, VaultServer
    from bastion.vault._snapshot import ChunkRef, FileEntry, Snapshot
    from bastion.vault._vault import FileSource, PutResult, Vault, VaultStatistics

# Every name is imported when first used (PEP 562). A submodule import (``from
# bastion.vault._keys import Signer``) runs this package first, and eager exports made it
# pay for the whole vault: the guard, gc, scrub, the replica set and the ingest workers
# (~0.25 s of a ``bastion twin up`` whose own work is ~0.1 s). The server and its client
# bring aiohttp and the segment tokens on top.
_LAZY = {
    "GcReport": "bastion.vault._gc",
    "CANARY": "bastion.vault._guard",
    "Guard": "bastion.vault._guard",
    "GuardStatistics": "bastion.vault._guard",
    "Protected": "bastion.vault._guard",
    "load_protected": "bastion.vault._guard",
    "protect": "bastion.vault._guard",
    "snapshot_dir": "bastion.vault._guard",
    "HealReport": "bastion.vault._heal",
    "make_key": "bastion.vault._keys",
    "checkpoint_prefix": "bastion.vault._manifest",
    "checkpoint_series": "bastion.vault._manifest",
    "vault_keys": "bastion.vault._manifest",
    "vault_replicas": "bastion.vault._manifest",
    "ReplicaSet": "bastion.vault._replicas",
    "ReplicaSetStatistics": "bastion.vault._replicas",
    "ReplicaStatistics": "bastion.vault._replicas",
    "ScrubReport": "bastion.vault._scrub",
    "ChunkRef": "bastion.vault._snapshot",
    "FileEntry": "bastion.vault._snapshot",
    "Snapshot": "bastion.vault._snapshot",
    "FileSource": "bastion.vault._vault",
    "PutResult": "bastion.vault._vault",
    "Vault": "bastion.vault._vault",
    "VaultStatistics": "bastion.vault._vault",
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
