"""The admin key's pin: what makes deleting need a key that writers do not hold.

Owns: pinning the admin public key in every replica (``config/admin.pub``, written once,
at the first commit and on any replica found without it), and checking an admin key
against the pins before anything is deleted.

Must never: replace a pin that is there (a writer with access to the vault could then
swap in a key of their own), or let a delete go ahead when any reachable replica pins
another key.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from bastion.errors import BastionError, NotFoundError, ScopeError, UsageError
from bastion.store import Store
from bastion.vault._keys import Signer, Verifier
from bastion.vault._layout import ADMIN_PIN

__all__ = ["admin_public", "pin_admin", "require_admin"]


def admin_public(admin_key_path: Path | None) -> bytes | None:
    """The admin public key (from the key or its ``.pub``), or None if this host has
    neither (a writer-only host: another host pins it)."""
    if admin_key_path is None:
        return None
    try:
        return Verifier.for_key_file(admin_key_path, "admin").raw
    except UsageError:
        return None


def pin_admin(stores: Sequence[Store], admin_key_path: Path | None) -> list[Store]:
    """Pin the admin key on each of ``stores`` that lacks a pin; the stores pinned now."""
    raw = admin_public(admin_key_path)
    if raw is None:
        return []
    pinned = []
    for store in stores:
        with contextlib.suppress(OSError, BastionError):
            if store.put(ADMIN_PIN, [raw], durable=True):
                pinned.append(store)
    return pinned


def require_admin(stores: Sequence[Store], admin_key_path: Path | None) -> Signer:
    """The admin key, checked against the pin of every reachable replica (``ScopeError``
    if there is none, or a replica pins another key: then nothing may be deleted)."""
    if admin_key_path is None:
        raise ScopeError(
            "deleting needs the vault's admin key (vault.admin_key in bastion.yaml); "
            "a writer key can add but not destroy"
        )
    admin = Signer(admin_key_path, role="admin")
    for store in stores:
        with contextlib.suppress(NotFoundError):
            if store.get(ADMIN_PIN) != admin.public_bytes():
                raise ScopeError(
                    f"{admin_key_path} is not this vault's admin key (pinned in "
                    f"{store.url}/{ADMIN_PIN}); nothing was deleted"
                )
    return admin
