"""The admin key's pin: what makes deleting need a key that writers do not hold.

Owns: pinning the admin public key in every replica (``config/admin.pub``, written once,
at the first commit and on any replica found without it: by a commit, or by scrub on a
rebuilt replica), checking the pins in scrub and verify (``check_pins``), and checking
an admin key against the pins before anything is deleted.

Which pin is right: this host's admin public key (``admin.key`` or ``admin.key.pub``)
when it has one; otherwise the pin every replica that has one agrees on. Replicas that
disagree are reported, never "repaired": only a person can tell which key is the
vault's.

Must never: replace a pin that is there (a writer with access to the vault could then
swap in a key of their own), or let a delete go ahead when any reachable replica pins
another key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bastion.errors import ScopeError, UsageError
from bastion.store import Store
from bastion.vault._keys import Signer, Verifier
from bastion.vault._layout import ADMIN_PIN
from bastion.vault._replicas import ReplicaSet

__all__ = ["PinCheck", "admin_public", "check_pins", "pin_admin", "require_admin"]


def admin_public(admin_key_path: Path | None) -> bytes | None:
    """The admin public key (from the key or its ``.pub``), or None if this host has
    neither (a writer-only host: another host pins it)."""
    if admin_key_path is None:
        return None
    try:
        return Verifier.for_key_file(admin_key_path, "admin").raw
    except UsageError:
        return None


def pin_admin(
    replicas: ReplicaSet, stores: Sequence[Store], admin_key_path: Path | None
) -> list[Store]:
    """Pin the admin key on each of ``stores`` that lacks a pin; the stores pinned now."""
    raw = admin_public(admin_key_path)
    if raw is None:
        return []
    return replicas.put_missing(ADMIN_PIN, raw, stores)


def require_admin(replicas: ReplicaSet, admin_key_path: Path | None) -> Signer:
    """The admin key, checked against the pin of every reachable replica (``ScopeError``
    if there is none, or a replica pins another key: then nothing may be deleted)."""
    if admin_key_path is None:
        raise ScopeError(
            "deleting needs the vault's admin key (vault.admin_key in bastion.yaml); "
            "a writer key can add but not destroy"
        )
    admin = Signer(admin_key_path, role="admin")
    stores = replicas.available()
    for store, pin in zip(stores, replicas.copies(ADMIN_PIN, stores), strict=True):
        if isinstance(pin, bytes) and pin != admin.public_bytes():
            raise ScopeError(
                f"{admin_key_path} is not this vault's admin key (pinned in "
                f"{store.url}/{ADMIN_PIN}); nothing was deleted"
            )
    return admin


@dataclass
class PinCheck:
    """The admin pins of the replicas checked (URLs in each list)."""

    missing: list[str] = field(default_factory=list)  # no pin, and none written
    pinned: list[str] = field(default_factory=list)  # had no pin; pinned now
    mismatched: list[str] = field(default_factory=list)  # pins another key
    unknown: bool = False  # no admin key here and no pin anywhere: nothing to check against

    @property
    def ok(self) -> bool:
        return not self.missing and not self.mismatched


def check_pins(
    replicas: ReplicaSet, stores: Sequence[Store], admin_key_path: Path | None, *, repair: bool
) -> PinCheck:
    """Every replica's pin against the right one (see the module); with ``repair`` a
    replica without a pin gets it."""
    result = PinCheck()
    # an unreadable pin (an error) is left out: scrub reports the replica itself
    pins = {
        store: pin
        for store, pin in zip(stores, replicas.copies(ADMIN_PIN, stores), strict=True)
        if not isinstance(pin, BaseException)
    }
    expected = admin_public(admin_key_path)
    if expected is None:
        found = {pin for pin in pins.values() if pin is not None}
        if len(found) > 1:
            result.mismatched = sorted(s.url for s, pin in pins.items() if pin is not None)
            return result
        if not found:
            result.unknown = True
            return result
        expected = found.pop()
    result.mismatched = [s.url for s, pin in pins.items() if pin is not None and pin != expected]
    lacking = [s for s, pin in pins.items() if pin is None]
    written = replicas.put_missing(ADMIN_PIN, expected, lacking) if repair else []
    result.pinned = [s.url for s in written]
    result.missing = [s.url for s in lacking if s not in written]
    return result
