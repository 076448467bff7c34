"""The keys of a replica: where objects, snapshot documents, labels and the admin pin live.

Owns: the key layout every replica holds (documented in full in ``docs/vault.md``)::

    objects/<2 hex>/<64 hex>                  one chunk, named by BLAKE3 of its plaintext
    snapshots/<name>/_v/<version:010d>        signed snapshot document (write once)
    snapshots/<name>/_l/<label>/<seq:010d>    signed label record; highest seq wins
    config/admin.pub                          the admin public key, pinned at first commit

Must never: decide anything about the values under these keys (that is ``_snapshot``,
``_objects`` and the vault's).
"""

from __future__ import annotations

__all__ = [
    "ADMIN_PIN",
    "OBJECTS",
    "SNAPSHOTS",
    "label_key",
    "labels_prefix",
    "name_of_version_key",
    "seq_of",
    "version_key",
    "versions_prefix",
]

OBJECTS = "objects/"
SNAPSHOTS = "snapshots/"
ADMIN_PIN = "config/admin.pub"
_WIDTH = 10


def versions_prefix(name: str) -> str:
    return f"{SNAPSHOTS}{name}/_v/"


def version_key(name: str, version: int) -> str:
    return f"{versions_prefix(name)}{version:0{_WIDTH}d}"


def labels_prefix(name: str, label: str) -> str:
    return f"{SNAPSHOTS}{name}/_l/{label}/"


def label_key(name: str, label: str, seq: int) -> str:
    return f"{labels_prefix(name, label)}{seq:0{_WIDTH}d}"


def seq_of(key: str) -> int | None:
    """The version or sequence number a document key ends in (None if it does not)."""
    tail = key.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else None


def name_of_version_key(key: str) -> tuple[str, int] | None:
    """``(name, version)`` of a ``snapshots/<name>/_v/<version>`` key, else None."""
    head, sep, tail = key.removeprefix(SNAPSHOTS).partition("/_v/")
    if not sep or not tail.isdigit() or not key.startswith(SNAPSHOTS):
        return None
    return head, int(tail)
