"""Heal one snapshot: every key it needs put back on every reachable replica.

Owns: bringing a single snapshot back to full redundancy (its signed document, the label
records of its name, every chunk it names, and the admin pin), each copy taken from the
first replica copy that verifies, or (for chunks no replica still holds) from bytes the
caller rebuilt, accepted only when each slice hashes to the chunk id the signed document
names; and the ``HealReport`` of what it did. ``bastion model reconstitute`` uses it
for both of its paths (restore from an intact replica; rebuild from lineage).

Must never: write a byte that did not verify against the signed snapshot document (a
rebuilt file whose size or any chunk's BLAKE3 differs is refused whole: nothing of it
is written), replace a copy that verifies, or touch keys of other snapshots' objects.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bastion.errors import IntegrityError
from bastion.vault._admin import pin_admin
from bastion.vault._layout import SNAPSHOTS, version_key
from bastion.vault._objects import decode, encode, hash_bytes, object_key
from bastion.vault._snapshot import FileEntry, Snapshot, decode_document

if TYPE_CHECKING:
    from bastion.vault._vault import Vault

__all__ = ["HealReport", "heal", "mismatches"]


@dataclass(frozen=True, slots=True)
class HealReport:
    """What ``heal`` did to one snapshot.

    Attributes:
        ref: the snapshot (``name@version``).
        documents: document keys checked (the snapshot's, its name's label records).
        documents_repaired: document copies rewritten on a replica that lacked them or
            held a bad one.
        chunks: chunks the snapshot names.
        chunks_repaired: chunk copies rewritten from a replica's good copy.
        chunks_rebuilt: chunks no replica held, written from the caller's rebuilt bytes.
        lost: ``path`` of each file with a chunk no replica holds and nothing rebuilt
            (empty when the snapshot is whole again).
    """

    ref: str
    documents: int
    documents_repaired: int
    chunks: int
    chunks_repaired: int
    chunks_rebuilt: int
    lost: tuple[str, ...] = field(default=())

    @property
    def whole(self) -> bool:
        return not self.lost

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "documents": self.documents,
            "documents_repaired": self.documents_repaired,
            "chunks": self.chunks,
            "chunks_repaired": self.chunks_repaired,
            "chunks_rebuilt": self.chunks_rebuilt,
            "lost": list(self.lost),
            "whole": self.whole,
        }


def mismatches(snap: Snapshot, files: Mapping[str, bytes]) -> list[str]:
    """How ``files`` differ from the snapshot's signed file list ([] when hash-identical):
    a path missing or extra, a size, or a chunk whose BLAKE3 is not the one recorded
    (each file sliced at the recorded chunk sizes, so the comparison does not depend on
    how the vault cut it)."""
    out = [f"{p}: missing from the rebuild" for p in sorted(set(snap.files) - set(files))]
    out += [f"{p}: not in {snap.ref}" for p in sorted(set(files) - set(snap.files))]
    for path in sorted(set(snap.files) & set(files)):
        entry, data = snap.files[path], files[path]
        if len(data) != entry.size:
            out.append(f"{path}: {len(data)} bytes, {snap.ref} has {entry.size}")
            continue
        for index, (chunk, piece) in enumerate(_slices(entry, data)):
            if hash_bytes(piece) != chunk:
                out.append(
                    f"{path}: chunk {index} hashes to {hash_bytes(piece)[:16]}, "
                    f"{snap.ref} records {chunk[:16]}"
                )
                break
    return out


def _decode(stored: bytes, *, digest: str) -> bytes | memoryview:
    return decode(stored, digest)


def _slices(entry: FileEntry, data: bytes) -> list[tuple[str, memoryview]]:
    view = memoryview(data)
    out, offset = [], 0
    for chunk in entry.chunks:
        out.append((chunk.id, view[offset : offset + chunk.size]))
        offset += chunk.size
    return out


def heal(vault: Vault, snap: Snapshot, *, rebuilt: Mapping[str, bytes] | None = None) -> HealReport:
    """Put ``snap`` back whole on every reachable replica (see the module). ``rebuilt``:
    files made again (path -> bytes), for chunks no replica holds; ``IntegrityError``
    (nothing written) unless they are hash-identical to the snapshot."""
    if rebuilt is not None:
        wrong = mismatches(snap, rebuilt)
        if wrong:
            raise IntegrityError(
                f"the rebuild of {snap.ref} is not hash-identical: " + "; ".join(wrong[:5])
            )
    replicas = vault.replicas
    verifier = vault.verifier

    def document(key: str) -> Any:
        def verify(stored: bytes) -> str:
            return decode_document(stored, verifier, key)[1]

        return verify

    keys = [version_key(snap.name, snap.version)]
    keys += replicas.keys(f"{SNAPSHOTS}{snap.name}/_l/")
    docs_repaired = 0
    for key in keys:
        checked = replicas.check(key, document(key), repair=True, context="heal")
        docs_repaired += checked.repaired
        if key == keys[0] and checked.good is None:
            raise IntegrityError(f"vault: {snap.ref}'s signed document is on no replica")
    pin_admin(replicas, replicas.available(), vault.admin_key_path)

    seal_key = vault.signer.seal_key() if rebuilt is not None else None
    repaired = rebuilt_count = total = 0
    lost: list[str] = []
    for path, entry in sorted(snap.files.items()):
        pieces = dict(_slices(entry, rebuilt[path])) if rebuilt is not None else {}
        for chunk in entry.chunks:
            total += 1
            key = object_key(chunk.id)
            checked = replicas.check(
                key,
                functools.partial(_decode, digest=chunk.id),
                repair=True,
                context=f"heal {snap.ref}:{path}",
            )
            repaired += checked.repaired
            if checked.good is not None:
                continue
            piece = pieces.get(chunk.id)
            if piece is None or seal_key is None:
                lost.append(path)
                continue
            stored = b"".join(
                bytes(p) for p in encode(piece, digest=chunk.id, seal_key=seal_key).parts()
            )
            written = [
                store
                for store, why in checked.bad
                if replicas.repair(store, key, stored, why, context=f"rebuilt {snap.ref}")
            ]
            if written:
                rebuilt_count += 1
            else:
                lost.append(path)
    return HealReport(
        snap.ref,
        len(keys),
        docs_repaired,
        total,
        repaired,
        rebuilt_count,
        tuple(sorted(set(lost))),
    )
