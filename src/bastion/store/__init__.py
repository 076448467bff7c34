"""Replica backends behind one small Protocol: ``put / get / has / list / delete``.

``LocalStore`` keeps a replica in a local directory. An S3 backend is one more module
implementing ``Store``.
"""

from __future__ import annotations

from bastion.store._local import LocalStore, buffer_address, write_direct
from bastion.store._protocol import Buffer, Store

__all__ = ["Buffer", "LocalStore", "Store", "buffer_address", "open_store", "write_direct"]


def open_store(url: str) -> Store:
    """The backend for a replica URL from the manifest (a local path for now)."""
    from bastion.errors import UsageError

    if "://" in url and not url.startswith("file://"):
        raise UsageError(
            f"vault replica {url!r}: only local directories are supported yet "
            "(use a path such as .bastion/vault/b)"
        )
    return LocalStore(url.removeprefix("file://"))
