"""Garbage collection: retention rules over versions, then every object no kept snapshot needs.

Owns: which versions retention keeps (``keep``: a pure function of the snapshots, their
labels, the rules and the time now), deleting the others on every reachable replica, the
sweep of unneeded objects (never one younger than the grace period), and the
``vault.deleted`` / ``vault.gc`` events.

Must never: delete anything without the admin key checked against every replica's pin,
drop a labelled version or a snapshot a kept one names in its lineage, or delete an
object a commit in flight may still publish (objects are written before their snapshot,
so young unreferenced objects are spared for ``grace_s``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bastion import event_kinds as ek
from bastion.errors import BastionError, UsageError
from bastion.vault._admin import require_admin
from bastion.vault._layout import OBJECTS, version_key
from bastion.vault._snapshot import Snapshot

if TYPE_CHECKING:
    from bastion.vault._vault import Vault

__all__ = ["gc", "keep"]

Version = tuple[str, int]


def keep(
    snapshots: Mapping[str, Sequence[Snapshot]],
    labelled: Mapping[str, set[int]],
    *,
    keep_last: int | None,
    keep_within_days: float | None,
    now: datetime,
    resolve: Callable[[str], Snapshot],
) -> set[Version]:
    """The versions retention keeps. A version goes only when every rule given lets it go
    (beyond the newest ``keep_last`` of its name, older than ``keep_within_days``); no
    rule keeps everything. Labelled versions stay whatever the rules, and so does every
    snapshot a kept one names in its lineage, transitively (``resolve`` finds a lineage
    ref; one it cannot find is skipped)."""
    rules = [r for r in (keep_last, keep_within_days) if r is not None]
    kept: set[Version] = set()
    for name, snaps in snapshots.items():
        cut = len(snaps) - keep_last if keep_last else None
        for index, snap in enumerate(snaps):
            old_by_count = cut is not None and index < cut
            age_days = (now - snap.created).total_seconds() / 86400
            old_by_age = keep_within_days is not None and age_days > keep_within_days
            goes = (
                bool(rules)
                and (old_by_count or keep_last is None)
                and (old_by_age or keep_within_days is None)
            )
            if not goes or snap.version in labelled.get(name, set()):
                kept.add((name, snap.version))
    # lineage of what stays stays too (to a fixpoint: lineage of lineage)
    by_version = {(n, s.version): s for n, snaps in snapshots.items() for s in snaps}
    todo = list(kept)
    while todo:
        source = by_version.get(todo.pop())
        if source is None:
            continue
        for ref in source.lineage:
            with contextlib.suppress(BastionError):
                target = resolve(ref)
                named = (target.name, target.version)
                if named not in kept:
                    kept.add(named)
                    todo.append(named)
    return kept


def gc(
    vault: Vault,
    *,
    keep_last: int | None,
    keep_within_days: float | None,
    grace_s: float,
) -> dict[str, int]:
    """Drop old versions and unneeded objects (see ``Vault.gc``)."""
    replicas = vault.replicas
    require_admin(replicas, vault.admin_key_path)
    for value, flag in ((keep_last, "keep_last"), (keep_within_days, "keep_within_days")):
        if value is not None and value <= 0:
            raise UsageError(f"vault gc: {flag} must be positive, got {value}")
    dropped = 0
    unreached: set[str] = set()
    with vault.publish_lock():
        everything = {name: vault.versions(name) for name in vault.names()}
        kept = keep(
            everything,
            {name: set(vault.labels(name).values()) for name in everything},
            keep_last=keep_last,
            keep_within_days=keep_within_days,
            now=datetime.fromtimestamp(vault.clock(), UTC),
            resolve=vault.snapshot,
        )
        needed: set[str] = set()
        for name, snaps in sorted(everything.items()):
            for snap in snaps:
                if (name, snap.version) in kept:
                    needed.update(snap.chunk_ids())
                    continue
                unreached.update(replicas.delete(version_key(name, snap.version)))
                dropped += 1
                vault.events.emit(ek.VAULT_DELETED, name, ref=snap.ref, snapshot=snap.id)
        kept_objects = 0

        def needs(key: str) -> bool:
            nonlocal kept_objects
            if key.rsplit("/", 1)[-1] in needed:
                kept_objects += 1
                return True
            return False

        removed, failed = replicas.sweep(OBJECTS, needs, min_age_s=grace_s)
        unreached.update(failed)
    vault.events.emit(
        ek.VAULT_GC,
        vault.subject,
        snapshots_deleted=dropped,
        objects_deleted=removed,
        objects_kept=kept_objects,
        unreached=sorted(unreached),
    )
    return {
        "snapshots_deleted": dropped,
        "objects_deleted": removed,
        "objects_kept": kept_objects,
    }
