"""Pins the public API of bastion.vault and bastion.store: changing it must be deliberate."""

from __future__ import annotations

import bastion.store
import bastion.vault


def test_vault_public_names() -> None:
    assert sorted(bastion.vault.__all__) == sorted(
        [
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
    )
    for name in bastion.vault.__all__:
        assert hasattr(bastion.vault, name)


def test_store_public_names() -> None:
    assert sorted(bastion.store.__all__) == [
        "ACCESS_MODES",
        "AccessMode",
        "Buffer",
        "LocalStore",
        "MemoryStore",
        "Permissions",
        "ReplicaUrl",
        "S3Store",
        "S3_OPTIONS",
        "SCHEMES",
        "Store",
        "StoreStatistics",
        "buffer_address",
        "make_dirs",
        "open_file",
        "open_store",
        "parse_replica_url",
        "permissions",
        "umask",
        "write_direct",
        "write_file",
    ]
    for name in bastion.store.__all__:
        assert hasattr(bastion.store, name)
