"""Scrub: read every object on every replica, verify it, and repair what a good copy allows.

Owns: the scrub pass (all at once, or budgeted with ``max_seconds`` and resumed from a
cursor saved in the state directory, so a large vault is covered over several runs), its
report, and the ``vault.scrub.*`` events.

Must never: "repair" from bytes that did not verify, count an object as fine without
hashing it, or treat an unreferenced leftover of a killed write as data loss.

Like restic's ``check --read-data`` it reads everything; unlike it, it repairs from
another replica instead of stopping at the report, and it can be spread over runs.

What a copy must pass (see ``_objects.verify_stored``): a raw object's stored bytes hash
to its name (the full check); a sealed compressed object's seal (a keyed BLAKE3 of name
and stored bytes, keyed from the signing key) matches, so it is checked at hashing speed
without decompressing; anything else, or every object with ``deep``, is decompressed and
its content hashed. A seal that does not match is never trusted either way: the object
is then checked in full, so a seal can only spare work, never pass a bad object.
"""

from __future__ import annotations

import functools
import json
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion import event_kinds as ek
from bastion.errors import BastionError, UsageError
from bastion.vault._admin import check_pins
from bastion.vault._layout import OBJECTS, SNAPSHOTS, name_of_version_key
from bastion.vault._objects import object_key, verify_stored
from bastion.vault._replicas import Copy, ReplicaSet
from bastion.vault._snapshot import decode_document

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.store import Store
    from bastion.vault._vault import Vault

__all__ = ["ScrubReport", "scrub"]

# Reads run ahead of verification in a few I/O threads, so a cold vault (objects written
# with O_DIRECT are not in the page cache) is read at the disk's queue depth instead of
# one file at a time; hashing stays on the calling thread (one core).
_READERS = 4
_BATCH = 8  # objects per read task (one hand-off per batch: a warm vault reads at
_BATCH_BYTES = 32 << 20  # memory speed), or fewer once this many bytes are read
_AHEAD = 4  # batches read ahead: at most ~4 x (32 MiB + one object's copies) held


@dataclass
class ScrubReport:
    """What one scrub (or verify) pass saw.

    Attributes:
        replicas: replicas checked (reachable when the pass began).
        unreachable: URLs of the replicas that could not be checked.
        objects: objects checked.
        copies_checked: copies read and verified, over every replica.
        bytes_checked: plaintext bytes verified, summed over replicas.
        bytes_read: stored bytes read and hashed (less where objects are compressed).
        decompressed: copies checked by decompressing (deep, unsealed, or a bad seal).
        seals_failed: copies with the right content under a seal that did not match.
        deep: every compressed copy was decompressed (``scrub(deep=True)``).
        snapshots: snapshot documents checked.
        bad_copies: copies missing or failing verification where a good copy exists.
        repaired: bad copies rewritten from a good one (only with ``repair``).
        repair_failed: ``"<replica>: <why it was bad>"`` for each repair that failed.
        pins_missing: replicas without the admin pin (``config/admin.pub``) after the
            pass (with ``repair`` a missing pin is written; see ``_admin``).
        pins_written: replicas that had no pin and got it in this pass.
        pins_mismatched: replicas whose pin is not the vault's admin key (never
            changed by scrub: a person decides which key is right).
        unrecoverable: objects with no good copy on any replica.
        bad_snapshots: snapshot or label keys with no copy that verifies.
        orphans: objects no snapshot names (left by a killed write; not data).
        seconds: how long the pass took.
        complete: this run reached the end of the vault (not stopped by ``max_seconds``).
        resumed_from: the cursor this run started after ("" from the beginning).
        cursor: the last object checked (where the next budgeted run resumes).
    """

    replicas: int = 0
    unreachable: list[str] = field(default_factory=list)
    objects: int = 0
    copies_checked: int = 0
    bytes_checked: int = 0
    bytes_read: int = 0
    decompressed: int = 0
    seals_failed: int = 0
    deep: bool = False
    snapshots: int = 0
    bad_copies: int = 0
    repaired: int = 0
    repair_failed: list[str] = field(default_factory=list)
    pins_missing: list[str] = field(default_factory=list)
    pins_written: list[str] = field(default_factory=list)
    pins_mismatched: list[str] = field(default_factory=list)
    unrecoverable: list[str] = field(default_factory=list)
    bad_snapshots: list[str] = field(default_factory=list)
    orphans: int = 0
    seconds: float = 0.0
    complete: bool = True
    resumed_from: str = ""
    cursor: str = ""

    @property
    def ok(self) -> bool:
        """No data is lost: every object and snapshot has a good copy somewhere."""
        return not self.unrecoverable and not self.bad_snapshots

    @property
    def gb_per_s(self) -> float:
        return self.bytes_checked / 1e9 / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "gb_per_s": round(self.gb_per_s, 3)}


def _check_snapshots(
    vault: Vault, stores: list[Store], repair: bool, report: ScrubReport
) -> set[str]:
    """Verify every snapshot document and label record on every replica; return every
    chunk a snapshot names."""
    replicas = vault.replicas
    referenced: set[str] = set()
    keys = [k for k in replicas.keys(SNAPSHOTS, stores) if "/_v/" in k or "/_l/" in k]
    for key in keys:

        def verify(stored: bytes, key: str = key) -> object:
            return decode_document(stored, vault.verifier, key)

        checked = replicas.check(key, verify, stores=stores, repair=repair)
        if checked.good is None:
            report.bad_snapshots.append(key)
            continue
        _count_repairs(report, checked.bad, checked.repaired, checked.repair_failed)
        named = name_of_version_key(key)
        if named is not None:
            report.snapshots += 1
            try:
                snap = vault.snapshot(f"{named[0]}@{named[1]}")
            except BastionError:
                report.bad_snapshots.append(key)
                continue
            referenced.update(snap.chunk_ids())
    return referenced


def _count_repairs(
    report: ScrubReport,
    bad: list[tuple[Store, str]],
    repaired: int,
    failed: list[tuple[str, str]],
) -> None:
    report.bad_copies += len(bad)
    report.repaired += repaired
    report.repair_failed.extend(f"{url}: {why}" for url, why in failed)


def _cursor_file(vault: Vault) -> Path | None:
    return vault.state_dir / "scrub-cursor.json" if vault.state_dir else None


def scrub(
    vault: Vault,
    *,
    repair: bool = True,
    max_seconds: float | None = None,
    progress: Callable[[int], None] | None = None,
    deep: bool = False,
) -> ScrubReport:
    """Verify every object on every reachable replica; repair bad copies when ``repair``.

    ``deep``: decompress every compressed copy and hash its content, instead of trusting
    a matching seal.
    """
    started = time.perf_counter()
    report = ScrubReport(deep=deep)
    seal_key: bytes | None = None
    if not deep:
        try:
            seal_key = vault.signer.seal_key()
        except UsageError:
            seal_key = None  # a verify-only host: no seals to check, every copy in full
    stores = vault.replicas.available()
    report.unreachable = [s.url for s in vault.stores if s not in stores]
    vault.events.emit(
        ek.VAULT_SCRUB_STARTED, vault.subject, repair=repair, max_seconds=max_seconds, deep=deep
    )
    listed = vault.replicas.keys_each(OBJECTS, stores)
    # a replica that cannot even list is not checked this pass, and the report says so
    report.unreachable += [s.url for s in stores if s not in {st for st, _ in listed}]
    stores = [store for store, _ in listed]
    present = [{k.rsplit("/", 1)[-1] for k in keys} for _, keys in listed]
    report.replicas = len(stores)
    referenced = _check_snapshots(vault, stores, repair=repair, report=report)
    pins = check_pins(vault.replicas, stores, vault.admin_key_path, repair=repair)
    report.pins_missing, report.pins_written = pins.missing, pins.pinned
    report.pins_mismatched = pins.mismatched
    digests = sorted(set().union(referenced, *present))
    cursor_path = _cursor_file(vault)
    cursor = ""
    if max_seconds is not None and cursor_path is not None and cursor_path.exists():
        cursor = str(json.loads(cursor_path.read_text()).get("cursor", ""))
        report.resumed_from = cursor
    todo = [d for d in digests if not cursor or d > cursor]
    read = functools.partial(_read_batch, vault.replicas, stores, present, referenced)
    with ThreadPoolExecutor(_READERS, thread_name_prefix="vault-scrub") as pool:
        ahead: deque[tuple[list[str], Future[list[list[Copy]]]]] = deque()
        batches = (todo[at : at + _BATCH] for at in range(0, len(todo), _BATCH))
        current: list[tuple[str, list[Copy]]] = []
        try:
            while True:
                while len(ahead) < _AHEAD and (batch := next(batches, None)) is not None:
                    ahead.append((batch, pool.submit(read, batch)))
                if not current:
                    if not ahead:
                        break
                    batch, reading = ahead.popleft()
                    done = reading.result()
                    if len(done) < len(batch):  # stopped at _BATCH_BYTES: read the rest next
                        rest = batch[len(done) :]
                        ahead.appendleft((rest, pool.submit(read, rest)))
                    current = list(zip(batch, done, strict=False))[::-1]
                # Checked after at least one object, so every budgeted run makes progress.
                spent = time.perf_counter() - started
                if report.objects and max_seconds is not None and spent > max_seconds:
                    report.complete = False
                    break
                digest, copies = current.pop()
                _scrub_object(
                    vault.replicas,
                    stores=stores,
                    copies=copies,
                    digest=digest,
                    referenced=digest in referenced,
                    repair=repair,
                    report=report,
                    seal_key=seal_key,
                )
                report.cursor = digest
                if progress is not None:
                    progress(1)
        finally:
            for _, pending in ahead:
                pending.cancel()
    if cursor_path is not None:
        state = {"cursor": "" if report.complete else report.cursor, "ts": time.time()}
        vault.write_state(cursor_path.name, json.dumps(state).encode())
    report.seconds = time.perf_counter() - started
    vault.events.emit(ek.VAULT_SCRUB_COMPLETED, vault.subject, **report.to_json())
    return report


def _read_batch(
    replicas: ReplicaSet,
    stores: list[Store],
    present: list[set[str]],
    referenced: set[str],
    digests: list[str],
) -> list[list[Copy]]:
    """Every replica's stored bytes of some objects (read in an I/O thread, checked later).

    One hand-off per batch, not per object: a warm vault is read at memory speed, where a
    pool hand-off per object costs more than the read.

    A snapshot's object that a replica did not list is asked for anyway: the listing is
    taken before the documents are read, and a commit in between (objects land before
    their document) names objects the listing never saw. Trusting the listing there
    reported a live commit's objects as ``vault.unrecoverable`` (seen under load in the
    drill suite's disk-full scenario, whose writes run during its scrubs).
    """
    out = []
    held = 0
    for digest in digests:
        if held >= _BATCH_BYTES:
            break
        listed = None if digest in referenced else present
        copies = replicas.copies(object_key(digest), stores, listed, name=digest)
        held += sum(len(c) for c in copies if isinstance(c, bytes))
        out.append(copies)
    return out


def _seal_damaged(checked: tuple[int, str]) -> str | None:
    # A failed seal over the right content is damage to the seal (or a seal made with
    # another key): the data is fine, so it is a bad copy only when another replica has
    # a copy that passed to repair it from; otherwise every copy may simply predate a
    # key change, and it stays as it is (checked in full each time).
    return "seal does not match" if checked[1] == "seal_failed" else None


def _scrub_object(
    replicas: ReplicaSet,
    *,
    stores: list[Store],
    copies: list[Copy],
    digest: str,
    referenced: bool,
    repair: bool,
    report: ScrubReport,
    seal_key: bytes | None,
) -> None:
    def verify(stored: bytes) -> tuple[int, str]:
        return verify_stored(stored, digest, seal_key=seal_key, deep=report.deep)

    # An object no snapshot names (left by a killed write, never published) is not
    # data: a missing copy of it is not bad, and no good copy is not a loss.
    checked = replicas.check(
        object_key(digest),
        verify,
        stores=stores,
        copies=copies,
        repair=repair,
        required=referenced,
        inferior=_seal_damaged,
    )
    report.objects += 1
    report.copies_checked += sum(1 for c in copies if c is not None)
    for copy in checked.copies:
        if copy.value is None or copy.stored is None:
            continue
        size, how = copy.value
        report.bytes_checked += size
        report.bytes_read += len(copy.stored)
        report.decompressed += how in ("decompressed", "seal_failed")
        report.seals_failed += how == "seal_failed"
    if not referenced:
        report.orphans += 1
        if checked.good is None:
            return
    if checked.good is None:
        report.unrecoverable.append(digest)
        return
    _count_repairs(report, checked.bad, checked.repaired, checked.repair_failed)
