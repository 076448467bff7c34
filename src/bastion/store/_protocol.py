"""The replica seam: one small Protocol over one replica, so S3 is one more file later.

Owns: the contract every replica backend keeps, and ``StoreStatistics``. Keys are
``/``-separated relative paths such as ``objects/ab/ab12...`` or
``snapshots/model/digits/_v/0000000007``; the vault makes them and a backend only stores
them.

Must never: interpret what it stores (hashing, signing, replication and repair are the
vault's), or let a key escape the replica's root.

Contract, method by method (``LocalStore`` and ``MemoryStore`` keep it; the vault relies
on nothing else, and never looks behind it):

- ``put`` writes a whole value or nothing (a reader never sees a partial value). It never
  replaces an existing value unless ``replace=True`` (the vault's repair path) and then
  returns False. With ``durable=False`` the value may still be in a cache until
  ``sync()``; the vault uses that to batch many small objects into one flush before it
  makes a snapshot visible. ``sync(keys)`` makes just those values durable (a commit of
  a few objects need not wait for everything else the backend has in flight).
- ``get`` / ``size`` / ``age`` raise ``NotFoundError`` for a missing key. Every method
  raises ``UnavailableError`` (or ``OSError``) when the replica cannot be reached;
  ``available()`` says so up front without raising.
- ``list(prefix)`` yields every key under a directory-like prefix, sorted.
- ``lock(name)`` is an exclusive lock shared by every process that reaches this replica
  the same way (for ``LocalStore``: every process on the machine); the vault holds it
  while it numbers and publishes a version, so versions stay dense.
- ``cleanup()`` removes what writers that died left behind (never a value, never the
  work of a writer still running) and says how many it removed.
- ``worker_url`` is a URL another process on this machine can pass to ``open_store`` to
  reach the very same replica (the vault's ingest worker processes write through it), or
  None when the replica lives only in this process, or when worker processes would not
  help it (``S3Store``: its puts wait on the network, which threads overlap better).
  What such workers did is added back with ``absorb_statistics``, so ``statistics()``
  counts every write to the replica.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from typing import Protocol, runtime_checkable

__all__ = ["Buffer", "Store", "StoreStatistics"]

# What ``put`` accepts: anything with the buffer protocol (bytes, memoryview of an mmap).
Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    """What one replica did since it was opened in this process (and its ingest workers).

    Attributes:
        url: the replica, as ``Store.url`` says it.
        puts: values written (a value that existed already is not counted here).
        put_bytes: bytes written by those puts.
        put_existing: puts skipped because the key was there already (write once, dedup).
        gets: values read.
        get_bytes: bytes read by those gets.
        deletes: keys removed.
        errors: puts that failed midway (the value was not written).
    """

    url: str
    puts: int = 0
    put_bytes: int = 0
    put_existing: int = 0
    gets: int = 0
    get_bytes: int = 0
    deletes: int = 0
    errors: int = 0

    def since(self, earlier: StoreStatistics) -> StoreStatistics:
        """The counts made between ``earlier`` and this reading of the same replica."""
        counts = {f.name: getattr(self, f.name) - getattr(earlier, f.name) for f in _COUNTS}
        return StoreStatistics(self.url, **counts)


_COUNTS = tuple(f for f in fields(StoreStatistics) if f.name != "url")


@runtime_checkable
class Store(Protocol):
    """One replica: ``put / get / has / list / delete``, and what replicating needs."""

    @property
    def url(self) -> str:
        """Where the replica lives, for messages and events (never a credential)."""
        ...

    @property
    def worker_url(self) -> str | None:
        """A URL for ``open_store`` in another local process, or None (see the module)."""
        ...

    def available(self) -> bool:
        """True when the replica can be read and written now (never raises)."""
        ...

    def put(
        self, key: str, parts: Sequence[Buffer], *, replace: bool = False, durable: bool = True
    ) -> bool:
        """Store the concatenation of ``parts`` under ``key``; False if it existed already."""
        ...

    def get(self, key: str) -> bytes:
        """The whole value (``NotFoundError`` if missing)."""
        ...

    def has(self, key: str) -> bool:
        """Whether ``key`` holds a value."""
        ...

    def size(self, key: str) -> int:
        """Stored size in bytes (``NotFoundError`` if missing)."""
        ...

    def age(self, key: str) -> float:
        """Seconds since ``key`` was written (``NotFoundError`` if missing): gc spares
        young objects, which may belong to a commit still in flight."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key under ``prefix`` (a directory-like prefix ending in ``/`` or empty), sorted."""
        ...

    def delete(self, key: str) -> bool:
        """Remove ``key``; False if it was not there."""
        ...

    def sync(self, keys: Collection[str] | None = None) -> None:
        """Make earlier ``durable=False`` puts durable: every one, or (``keys``) just
        the values under those keys, each with its name (``NotFoundError`` if one is
        missing)."""
        ...

    def lock(self, name: str) -> AbstractContextManager[None]:
        """Hold the exclusive lock ``name`` for the ``with`` block (see the module)."""
        ...

    def cleanup(self) -> int:
        """Remove what dead writers left behind; return how many things were removed."""
        ...

    def statistics(self) -> StoreStatistics:
        """Counts of what this replica did (see ``StoreStatistics``)."""
        ...

    def absorb_statistics(self, delta: StoreStatistics) -> None:
        """Add counts another process made on this replica through ``worker_url``."""
        ...
