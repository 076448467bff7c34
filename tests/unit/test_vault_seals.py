"""Sealed objects: scrub checks a compressed object's seal instead of decompressing it,
and a seal never lets a bad object pass (damaged, forged, moved, or made with another key).

Seals are the vault's logic, not the disk's: the replicas are in memory (``MemoryStore``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import zstandard

from bastion.errors import IntegrityError
from bastion.events import EventLog
from bastion.store import MemoryStore
from bastion.vault import Vault, make_key
from bastion.vault._objects import SEALED, hash_bytes, object_key, seal

CSV = b"".join(b"%d,%d,%d\n" % (i, i * 7 % 13, i % 5) for i in range(20_000))


@pytest.fixture
def stores() -> tuple[MemoryStore, MemoryStore]:
    return MemoryStore("a"), MemoryStore("b")


@pytest.fixture
def vault(tmp_path: Path, stores: tuple[MemoryStore, MemoryStore]) -> Vault:
    key = tmp_path / "keys" / "signing.key"
    make_key(key)
    return Vault(
        stores,
        key_path=key,
        state_dir=tmp_path / "state",
        events=EventLog.in_state_dir(tmp_path / "state"),
    )


class Copy:
    """One replica's copy of an object, read and overwritten through the store."""

    def __init__(self, store: MemoryStore, key: str) -> None:
        self.store, self.key = store, key

    def read_bytes(self) -> bytes:
        return self.store.get(self.key)

    def overwrite(self, data: bytes) -> None:
        self.store.put(self.key, [data], replace=True)


def _commit(vault: Vault, stores: tuple[MemoryStore, MemoryStore]) -> tuple[str, Copy, Copy]:
    snap = vault.commit("dataset/s", {"t.csv": CSV})
    (chunk,) = snap.files["t.csv"].chunks
    key = object_key(chunk.id)
    return chunk.id, Copy(stores[0], key), Copy(stores[1], key)


def test_compressed_objects_are_sealed_and_scrubbed_without_decompressing(
    vault: Vault, stores: tuple[MemoryStore, MemoryStore]
) -> None:
    digest, a, _ = _commit(vault, stores)
    assert a.read_bytes()[:1] == SEALED
    fast = vault.scrub(repair=False)
    assert fast.ok
    assert (fast.copies_checked, fast.decompressed, fast.seals_failed) == (2, 0, 0)
    assert fast.bytes_read < fast.bytes_checked == 2 * len(CSV)
    deep = vault.scrub(repair=False, deep=True)
    assert deep.ok
    assert (deep.copies_checked, deep.decompressed) == (2, 2)
    assert deep.bytes_checked == fast.bytes_checked
    assert vault.read("dataset/s", "t.csv") == CSV
    assert digest == hash_bytes(CSV)


@pytest.mark.parametrize("offset", [3, 40, -7], ids=["in-seal", "frame-header", "payload"])
def test_a_damaged_copy_is_repaired_from_the_sealed_one(
    vault: Vault, stores: tuple[MemoryStore, MemoryStore], offset: int
) -> None:
    _, a, b = _commit(vault, stores)
    damaged = bytearray(a.read_bytes())
    damaged[offset] ^= 0x10
    a.overwrite(bytes(damaged))
    report = vault.scrub(repair=True)
    assert report.ok
    assert (report.bad_copies, report.repaired) == (1, 1)
    assert a.read_bytes() == b.read_bytes()
    assert vault.scrub(repair=False).decompressed == 0


def test_forged_or_moved_objects_fail_even_with_a_seal(
    vault: Vault, tmp_path: Path, stores: tuple[MemoryStore, MemoryStore]
) -> None:
    digest, a, b = _commit(vault, stores)
    frame = zstandard.ZstdCompressor(level=1).compress(CSV.replace(b"3", b"4"))
    other = tmp_path / "other.key"
    make_key(other)
    from bastion.vault._keys import Signer

    forgeries = {
        a: SEALED + seal(Signer(other).seal_key(), digest, frame) + frame,  # another key
        b: SEALED + bytes(32) + frame,  # no key at all
    }
    for copy, forged in forgeries.items():
        copy.overwrite(forged)
    report = vault.scrub(repair=False)
    assert report.unrecoverable == [digest]
    assert not report.ok
    with pytest.raises(IntegrityError):
        vault.read("dataset/s", "t.csv")
    # A genuine sealed object moved under another object's name fails too: the seal
    # covers the name.
    snap = vault.commit("dataset/t", {"u.csv": CSV + b"9,9,9\n"})
    moved = stores[0].get(object_key(snap.files["u.csv"].chunks[0].id))
    a.overwrite(moved)
    assert digest in vault.scrub(repair=False).unrecoverable


def test_seals_made_with_another_key_are_checked_in_full_not_failed(
    vault: Vault, tmp_path: Path, stores: tuple[MemoryStore, MemoryStore]
) -> None:
    _commit(vault, stores)
    rotated = tmp_path / "keys2" / "signing.key"
    make_key(rotated)
    # The same replicas under a new signing key: old seals no longer match, the content
    # is still right, so nothing is bad; it is checked by decompressing.
    later = Vault(
        stores,
        key_path=rotated,
        state_dir=tmp_path / "state2",
    )
    report = later.scrub(repair=True)
    assert report.unrecoverable == []
    assert (report.seals_failed, report.decompressed, report.bad_copies) == (2, 2, 0)


def test_a_verify_only_host_checks_every_copy_in_full(
    vault: Vault, tmp_path: Path, stores: tuple[MemoryStore, MemoryStore]
) -> None:
    _commit(vault, stores)
    key = tmp_path / "keys" / "signing.key"
    key.rename(tmp_path / "elsewhere.key")  # only signing.key.pub stays on this host
    reader = Vault(stores, key_path=key, state_dir=tmp_path / "st")
    report = reader.scrub(repair=False)
    assert report.ok
    assert (report.copies_checked, report.decompressed) == (2, 2)


def test_a_damaged_frame_header_is_a_bad_copy_not_a_crash() -> None:
    """A flipped bit in a sealed object's zstd frame header made scrub raise ZstdError
    (seed 2750580364 of the vault fault test); it is a bad copy like any other."""
    from bastion.vault._objects import verify_stored

    key = bytes(range(32))
    frame = bytearray(zstandard.ZstdCompressor(level=1).compress(CSV * 50))
    digest = hash_bytes(CSV * 50)
    assert verify_stored(SEALED + seal(key, digest, bytes(frame)) + frame, digest, seal_key=key)
    frame[0] ^= 0xFF  # the frame's magic number
    with pytest.raises(IntegrityError, match="frame header"):
        verify_stored(SEALED + seal(key, digest, bytes(frame)) + frame, digest, seal_key=key)
