"""Garbage collection: retention rules over versions, then every object no kept snapshot needs.

Owns: which versions retention keeps (``keep``: a pure function of the snapshots, their
labels, the rules, the checkpoint series and the time now), deleting the others on every
reachable replica (a name left with no version loses its label records too), the sweep
of unneeded objects (never one younger than the grace period), and the ``vault.deleted``
/ ``vault.gc`` events.

Checkpoint series: a job's checkpoints are one name per step (``ckpt/<job>/step-000400``,
each with one ``@latest``-labelled version), so per-name rules never drop one. A series
(a name prefix and how many to keep: each job's ``checkpoint.keep``, see
``bastion.vault.checkpoint_series``) is counted as one: its newest ``keep`` steps stay,
and so does its newest checkpoint that verifies in full (every chunk read and hashed)
when the newest ones do not; every other step is dropped whole, its ``@latest`` label
with it. A step another label points at (``@prod``), or that a kept snapshot names in its
lineage (a model trained from it), stays whatever the count.

Must never: delete anything without the admin key checked against every replica's pin,
drop a labelled version (other than a dropped checkpoint's own ``@latest``), a series'
newest verified checkpoint, or a snapshot a kept one names in its lineage, or delete an
object a commit in flight may still publish (objects are written before their snapshot,
so young unreferenced objects are spared for ``grace_s``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bastion import event_kinds as ek
from bastion.errors import BastionError, UsageError
from bastion.vault._admin import require_admin
from bastion.vault._layout import OBJECTS, SNAPSHOTS, version_key
from bastion.vault._snapshot import Snapshot

if TYPE_CHECKING:
    from bastion.vault._vault import Vault

__all__ = ["GcReport", "Version", "gc", "keep", "series_members"]

Version = tuple[str, int]

_COUNTS = ("snapshots_deleted", "objects_deleted", "objects_kept", "checkpoints_deleted")


@dataclass(frozen=True, eq=False)
class GcReport(Mapping[str, int]):
    """What one gc did. A mapping of its four counts (as ``Vault.gc`` returned before it
    said more), plus what it could not do.

    Attributes:
        snapshots_deleted: versions dropped (``vault.deleted`` each).
        objects_deleted: objects removed, summed over replicas.
        objects_kept: objects a kept snapshot needs, summed over replicas.
        checkpoints_deleted: checkpoint names dropped whole (every version and label).
        unreached: URLs of replicas a delete or the sweep could not reach (what they
            hold is still there).
        unverified: checkpoints that did not read back whole while gc looked for each
            series' newest good one (no good copy of some chunk: they cannot be
            restored; scrub reports every such loss).
    """

    snapshots_deleted: int
    objects_deleted: int
    objects_kept: int
    checkpoints_deleted: int
    unreached: tuple[str, ...] = ()
    unverified: tuple[str, ...] = ()

    def __getitem__(self, key: str) -> int:
        if key not in _COUNTS:
            raise KeyError(key)
        value: int = getattr(self, key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(_COUNTS)

    def __len__(self) -> int:
        return len(_COUNTS)


# The label every commit moves: a dropped checkpoint's own, not a reason to keep it.
_LATEST = "latest"


def series_members(names: Sequence[str], prefix: str) -> list[str]:
    """The names of one checkpoint series (``prefix`` then a step number), newest (highest
    step) first, as training's ``Checkpointer.restore`` orders them."""
    members = [n for n in names if n.startswith(prefix) and n[len(prefix) :].isdigit()]
    return sorted(members, key=lambda n: int(n[len(prefix) :]), reverse=True)


def _series_kept(
    names: Sequence[str],
    series: Mapping[str, int],
    verified: Callable[[str], bool],
) -> tuple[set[str], set[str]]:
    """The names of every series that stay, and those that go (whole)."""
    stay: set[str] = set()
    go: set[str] = set()
    for prefix, count in series.items():
        members = series_members(names, prefix)
        kept = set(members[:count])
        # the newest checkpoint that verifies stays, even when the newest ``count`` are
        # damaged beyond repair: a job must always have a checkpoint to resume from
        for name in members:
            if verified(name):
                kept.add(name)
                break
        stay |= kept
        go |= set(members) - kept
    return stay, go - stay


def keep(
    snapshots: Mapping[str, Sequence[Snapshot]],
    labelled: Mapping[str, Mapping[str, int]],
    *,
    keep_last: int | None,
    keep_within_days: float | None,
    now: datetime,
    resolve: Callable[[str], Snapshot],
    series: Mapping[str, int] | None = None,
    verified: Callable[[str], bool] = lambda _name: True,
) -> set[Version]:
    """The versions retention keeps. A version goes only when every rule given lets it go
    (beyond the newest ``keep_last`` of its name, older than ``keep_within_days``); no
    rule keeps everything. Labelled versions stay whatever the rules, and so does every
    snapshot a kept one names in its lineage, transitively (``resolve`` finds a lineage
    ref; one it cannot find is skipped).

    ``labelled``: each name's labels and the version each points at. ``series``: name
    prefix -> how many checkpoints to keep (see the module); ``verified(name)``: whether
    the checkpoint ``name`` reads back whole (asked newest first, until one does).
    """
    rules = [r for r in (keep_last, keep_within_days) if r is not None]
    _stay, dropped = _series_kept(sorted(snapshots), series or {}, verified)
    kept: set[Version] = set()
    for name, snaps in snapshots.items():
        labels = labelled.get(name, {})
        if name in dropped:
            # the whole step goes, bar a version another label (``@prod``) points at
            kept.update((name, v) for label, v in labels.items() if label != _LATEST)
            continue
        held = set(labels.values())
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
            if not goes or snap.version in held:
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
    series: Mapping[str, int],
) -> GcReport:
    """Drop old versions and unneeded objects (see ``Vault.gc``)."""
    replicas = vault.replicas
    require_admin(replicas, vault.admin_key_path)
    for value, flag in ((keep_last, "keep_last"), (keep_within_days, "keep_within_days")):
        if value is not None and value <= 0:
            raise UsageError(f"vault gc: {flag} must be positive, got {value}")
    for prefix, count in series.items():
        if count < 1:
            raise UsageError(f"vault gc: checkpoints {prefix}*: keep must be at least 1")
    dropped = 0
    forgotten = 0
    unreached: set[str] = set()
    unverified: list[str] = []

    def verified(name: str) -> bool:
        # read back whole, as a restore would: every chunk fetched and hashed (a bad
        # copy is repaired on the way); no good copy of one chunk is not verified
        try:
            snap = vault.snapshot(name)
            for digest in sorted(snap.chunk_ids()):
                vault.fetch(digest, context=f"gc: {snap.ref}")
        except BastionError:
            unverified.append(name)
            return False
        return True

    with vault.publish_lock():
        everything = {name: vault.versions(name) for name in vault.names()}
        kept = keep(
            everything,
            {name: vault.labels(name) for name in everything},
            keep_last=keep_last,
            keep_within_days=keep_within_days,
            now=datetime.fromtimestamp(vault.clock(), UTC),
            resolve=vault.snapshot,
            series=series,
            verified=verified,
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
            if snaps and not any((name, s.version) in kept for s in snaps):
                # no version left: the name's label records go too, so it is forgotten
                # (``@latest`` would otherwise point at a version that is gone)
                for key in replicas.keys(f"{SNAPSHOTS}{name}/_l/"):
                    unreached.update(replicas.delete(key))
                forgotten += 1
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
        checkpoints_deleted=forgotten,
        objects_deleted=removed,
        objects_kept=kept_objects,
        unreached=sorted(unreached),
        unverified=unverified,
    )
    return GcReport(
        snapshots_deleted=dropped,
        objects_deleted=removed,
        objects_kept=kept_objects,
        checkpoints_deleted=forgotten,
        unreached=tuple(sorted(unreached)),
        unverified=tuple(unverified),
    )
