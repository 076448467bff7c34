"""Replica backends behind one small Protocol: ``put / get / has / list / delete``.

``LocalStore`` keeps a replica in a local directory; ``S3Store`` keeps one in an S3 bucket
(boto3; AWS or any S3 server); ``MemoryStore`` keeps one in memory, with failures on
demand, for tests. ``open_store(url)`` is the one place a replica URL becomes a backend
(``parse_replica_url`` reads one without opening it). Another backend is one more module
implementing ``Store`` and one more entry in ``SCHEMES``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion._lazy import lazy
from bastion.errors import UsageError
from bastion.store._access import (
    ACCESS_MODES,
    AccessMode,
    Permissions,
    make_dirs,
    open_file,
    permissions,
    umask,
    write_file,
)
from bastion.store._protocol import Buffer, Store, StoreStatistics
from bastion.store._url import S3_OPTIONS, SCHEMES, ReplicaUrl, parse_replica_url

if TYPE_CHECKING:
    from bastion.store._local import LocalStore, buffer_address, write_direct
    from bastion.store._memory import MemoryStore
    from bastion.store._s3 import S3Store

# The backends are imported when first named: the manifest imports this package (for
# parse_replica_url), so every command, `bastion up`'s children and each model replica
# among them, paid for the S3 and local stores (and the supervisor the local one asks
# about lock holders) before it knew whether its vault is on S3, on disk, or absent.
__getattr__, __dir__ = lazy(
    __name__,
    {
        "LocalStore": "bastion.store._local",
        "buffer_address": "bastion.store._local",
        "write_direct": "bastion.store._local",
        "MemoryStore": "bastion.store._memory",
        "S3Store": "bastion.store._s3",
    },
)

__all__ = [
    "ACCESS_MODES",
    "S3_OPTIONS",
    "SCHEMES",
    "AccessMode",
    "Buffer",
    "LocalStore",
    "MemoryStore",
    "Permissions",
    "ReplicaUrl",
    "S3Store",
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


def open_store(url: str, *, create: bool = True, mode: AccessMode = "private") -> Store:
    """The backend for a replica URL from the manifest: a path, ``file://`` or ``s3://``.

    ``create``: make a local replica's directory (an S3 replica's bucket, at its first
    request) if it is missing (``False`` for a process that only joins an open vault,
    such as an ingest worker). ``mode``: who may reach a local replica's files
    (``vault.mode``; a ``file://...?mode=`` URL says for itself).
    """
    parsed = parse_replica_url(url)
    problem = parsed.problem
    if problem is not None:
        raise UsageError(f"vault replica {url!r}: {problem}")
    if parsed.scheme == "s3":
        from bastion.store._s3 import S3Store

        return S3Store(parsed, create=create)
    from bastion.store._local import LocalStore

    chosen = mode if parsed.mode is None else permissions(parsed.mode).mode
    return LocalStore(parsed.location, create=create, mode=chosen)
