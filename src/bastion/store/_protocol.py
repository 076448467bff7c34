"""The replica seam: one small Protocol over one replica, so S3 is one more file later.

Owns: the contract every replica backend keeps. Keys are ``/``-separated relative paths
such as ``objects/ab/ab12...`` or ``snapshots/model/digits/0000000007``; the vault makes
them and a backend only stores them.

Must never: interpret what it stores (hashing, signing, replication are the vault's), or
let a key escape the replica's root.

Contract:
- ``put`` writes a whole value or nothing (a reader never sees a partial value). It never
  replaces an existing value unless ``replace=True`` (the vault's repair path). With
  ``durable=False`` the value may still be in a cache until ``sync()``; the vault uses
  that to batch many small objects into one flush before it makes a snapshot visible.
- ``get`` raises ``NotFoundError`` for a missing key, ``UnavailableError`` if the replica
  cannot be reached.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

__all__ = ["Buffer", "Store"]

# What ``put`` accepts: anything with the buffer protocol (bytes, memoryview of an mmap).
Buffer = bytes | bytearray | memoryview


@runtime_checkable
class Store(Protocol):
    """One replica: ``put / get / has / list / delete`` (plus ``sync`` and ``statistics``)."""

    @property
    def url(self) -> str:
        """Where the replica lives, for messages and events (never a credential)."""
        ...

    def available(self) -> bool:
        """True when the replica can be read and written now."""
        ...

    def put(
        self, key: str, parts: Sequence[Buffer], *, replace: bool = False, durable: bool = True
    ) -> bool:
        """Store the concatenation of ``parts`` under ``key``; False if it existed already."""
        ...

    def get(self, key: str) -> bytes: ...

    def has(self, key: str) -> bool: ...

    def size(self, key: str) -> int:
        """Stored size in bytes (``NotFoundError`` if missing)."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key under ``prefix`` (a directory-like prefix ending in ``/`` or empty), sorted."""
        ...

    def delete(self, key: str) -> bool:
        """Remove ``key``; False if it was not there."""
        ...

    def sync(self) -> None:
        """Make every earlier ``durable=False`` put durable."""
        ...

    def statistics(self) -> dict[str, int | float | str]: ...
