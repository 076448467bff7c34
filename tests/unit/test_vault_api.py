"""Pins the public API of bastion.vault and bastion.store: changing it must be deliberate."""

from __future__ import annotations

import bastion.store
import bastion.vault


def test_vault_public_names() -> None:
    assert sorted(bastion.vault.__all__) == sorted(
        [
            "CANARY",
            "ChunkRef",
            "FileEntry",
            "FileSource",
            "Guard",
            "Protected",
            "ScrubReport",
            "Snapshot",
            "Vault",
            "load_protected",
            "make_key",
            "protect",
            "snapshot_dir",
        ]
    )
    for name in bastion.vault.__all__:
        assert hasattr(bastion.vault, name)


def test_store_public_names() -> None:
    assert sorted(bastion.store.__all__) == [
        "Buffer",
        "LocalStore",
        "Store",
        "buffer_address",
        "open_store",
        "write_direct",
    ]
    for name in bastion.store.__all__:
        assert hasattr(bastion.store, name)
