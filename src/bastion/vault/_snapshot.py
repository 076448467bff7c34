"""Snapshots: named, versioned, signed trees, and the signed label records that move refs.

Owns: the snapshot document (canonical JSON body, signed with Ed25519; the snapshot's id
is the BLAKE3 of that body) and the label record (``prod`` -> version 7), their
encoding, signature checks and structural checks.

Must never: return a snapshot whose signature fails, or whose body names a different
artifact or version than the place it was stored under (that would let an old signed
snapshot be replayed as a newer one); accept a file path that could escape a restore
directory.

Stored form of both documents::

    BASTION-SNAPSHOT-1 <key id> <signature hex>\n<canonical JSON body>
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bastion.errors import IntegrityError, InvalidNameError
from bastion.names import parse_name, parse_ref
from bastion.vault._keys import Signer, Verifier
from bastion.vault._objects import hash_bytes

__all__ = [
    "ChunkRef",
    "FileEntry",
    "LabelRecord",
    "Snapshot",
    "check_path",
    "decode_document",
    "encode_document",
]

_MAGIC = b"BASTION-SNAPSHOT-1"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PATH_PART = re.compile(r"^[^/\x00\\]+$")


def check_path(path: str) -> str:
    """A file path inside a snapshot: relative, posix, no ``..``, no NUL, no backslash."""
    if not isinstance(path, str) or not path:
        raise InvalidNameError("file path is empty (expected e.g. model.safetensors)")
    if "\x00" in path:
        raise InvalidNameError(f"file path {path!r} contains a NUL byte")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise InvalidNameError(f"file path {path!r} is absolute; paths are relative")
    for part in path.split("/"):
        if part in ("", ".", "..") or not _PATH_PART.match(part):
            raise InvalidNameError(
                f"file path {path!r}: part {part!r} is empty, '.', '..' or has a backslash; "
                "it would escape its root"
            )
    return path


def _check_chunks(path: str, chunks: tuple[ChunkRef, ...], size: int) -> None:
    if any(not _HEX64.match(c.id) or c.size < 0 for c in chunks):
        raise ValueError(f"bad chunk in {path}")
    if sum(c.size for c in chunks) != size:
        raise ValueError(f"chunk sizes of {path} do not add up")


@dataclass(frozen=True, slots=True)
class ChunkRef:
    id: str
    size: int


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a snapshot: its size and the chunks that make it, in order."""

    size: int
    chunks: tuple[ChunkRef, ...]
    mode: int = 0o644


@dataclass(frozen=True)
class Snapshot:
    """An immutable, signed, versioned tree. ``id`` is the hash of its signed body."""

    name: str
    version: int
    id: str
    files: Mapping[str, FileEntry]
    meta: Mapping[str, Any] = field(default_factory=dict)
    lineage: tuple[str, ...] = ()
    parents: tuple[str, ...] = ()
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    labels: tuple[str, ...] = ()
    key_id: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files.values())

    def chunk_ids(self) -> set[str]:
        return {c.id for f in self.files.values() for c in f.chunks}

    def body(self) -> dict[str, Any]:
        return {
            "type": "snapshot",
            "format": 1,
            "name": self.name,
            "version": self.version,
            "created": self.created.isoformat(timespec="microseconds"),
            "meta": dict(self.meta),
            "lineage": list(self.lineage),
            "parents": list(self.parents),
            "labels": list(self.labels),
            "files": {
                path: {
                    "size": entry.size,
                    "mode": entry.mode,
                    "chunks": [[c.id, c.size] for c in entry.chunks],
                }
                for path, entry in sorted(self.files.items())
            },
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any], snapshot_id: str, key_id: str) -> Snapshot:
        try:
            files: dict[str, FileEntry] = {}
            for path, raw in body["files"].items():
                chunks = tuple(ChunkRef(str(c[0]), int(c[1])) for c in raw["chunks"])
                _check_chunks(path, chunks, int(raw["size"]))
                files[check_path(path)] = FileEntry(
                    int(raw["size"]), chunks, int(raw.get("mode", 0o644)) & 0o777
                )
            return cls(
                name=parse_name(body["name"]),
                version=int(body["version"]),
                id=snapshot_id,
                files=files,
                meta=dict(body.get("meta") or {}),
                lineage=tuple(str(x) for x in body.get("lineage") or ()),
                parents=tuple(str(x) for x in body.get("parents") or ()),
                created=datetime.fromisoformat(body["created"]),
                labels=tuple(str(x) for x in body.get("labels") or ()),
                key_id=key_id,
            )
        except (KeyError, TypeError, ValueError, AttributeError, InvalidNameError) as exc:
            raise IntegrityError(f"snapshot {snapshot_id[:16]}: malformed body ({exc})") from None


@dataclass(frozen=True, slots=True)
class LabelRecord:
    """``label`` of ``name`` points at ``version`` (snapshot ``snapshot_id``) from ``seq`` on."""

    name: str
    label: str
    version: int
    snapshot_id: str
    seq: int
    created: str

    def body(self) -> dict[str, Any]:
        return {
            "type": "label",
            "format": 1,
            "name": self.name,
            "label": self.label,
            "version": self.version,
            "snapshot": self.snapshot_id,
            "seq": self.seq,
            "created": self.created,
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> LabelRecord:
        try:
            ref = parse_ref(f"{body['name']}@{body['label']}")
            return cls(
                name=ref.name,
                label=str(body["label"]),
                version=int(body["version"]),
                snapshot_id=str(body["snapshot"]),
                seq=int(body["seq"]),
                created=str(body["created"]),
            )
        except (KeyError, TypeError, ValueError, InvalidNameError) as exc:
            raise IntegrityError(f"label record: malformed body ({exc})") from None


def _canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def encode_document(body: Mapping[str, Any], signer: Signer) -> tuple[bytes, str]:
    """The stored bytes of a signed document, and its id (BLAKE3 of the body)."""
    raw = _canonical(body)
    signature = signer.sign(raw)
    key_id = signer.public_bytes().hex()[:16]
    header = b" ".join((_MAGIC, key_id.encode(), signature.hex().encode()))
    return header + b"\n" + raw, hash_bytes(raw)


def decode_document(stored: bytes, verifier: Verifier, where: str) -> tuple[dict[str, Any], str]:
    """Body and id of a stored document; IntegrityError unless the trusted key signed it."""
    header, sep, raw = stored.partition(b"\n")
    parts = header.split(b" ")
    if not sep or len(parts) != 3 or parts[0] != _MAGIC:
        raise IntegrityError(f"{where}: not a Bastion snapshot document (header damaged)")
    if parts[1] != verifier.key_id.encode():
        raise IntegrityError(
            f"{where}: signed by key {parts[1][:16]!r}, not the vault's key {verifier.key_id}; "
            "it will not be served"
        )
    # Only the canonical spelling (128 lower-case hex digits): no two byte strings may
    # carry the same signature.
    if not re.fullmatch(rb"[0-9a-f]{128}", parts[2]):
        raise IntegrityError(f"{where}: signature is not 128 lower-case hex digits")
    signature = bytes.fromhex(parts[2].decode("ascii"))
    if not verifier.verify(signature, raw):
        raise IntegrityError(
            f"{where}: signature does not verify with the vault's key {verifier.key_id} "
            "(edited or forged); it will not be served"
        )
    try:
        body = json.loads(raw)
    except ValueError:
        raise IntegrityError(f"{where}: body is not JSON") from None
    if not isinstance(body, dict):
        raise IntegrityError(f"{where}: body is not an object")
    return body, hash_bytes(raw)
