"""The vault: replicated, content-addressed, signed snapshots with verified reads.

Owns: committing a tree (write the objects on every replica of a ``Write`` -> flush ->
sign -> publish), the snapshot model (numbering versions, moving labels, resolving
``name``, ``name@7`` and ``name@label``), verified reads of chunks and documents (through
the replica set, which repairs a bad copy from a good one), ``VaultStatistics``, and the
commit's ``vault.put`` / ``vault.labelled`` / ``vault.ingest.threads`` events. Restore
(``_restore``), gc (``_gc``), scrub (``_scrub``) and lineage (``_lineage``) are their own
modules behind the methods of the same names.

Must never: make a snapshot visible before every object it names is durable on the
write quorum; serve bytes or a snapshot that fail verification; replace an object or a
snapshot except to repair it with verified bytes; delete without the admin key; hold a
``Store`` itself (the ``ReplicaSet`` does).

Layout of every replica: see ``_layout``. Refs (``@latest``, ``@prod``) are write-once
records too, so a replica never needs an object to change in place: S3 with Object Lock
can hold it as is.

Durable before visible: objects are written without a per-file fsync (see ``_write``);
each replica is flushed once before the snapshot document is published, and the
document is fsync'd before it is linked under its name, then its directory (and the
parent of each directory made for it) is fsync'd; only then are the label records
written (each the same way), so no label can survive a crash that its snapshot did not.
The flush: a commit that names at most ``FSYNC_OBJECTS`` objects fsyncs just those
(each object, and every directory from its bucket up to the replica's root), which on a
busy disk is far cheaper than ``syncfs``, which waits for every dirty page of the
filesystem, other processes' included. A bigger commit flushes each replica with one
``syncfs`` (10,000 small files x 2 replicas would otherwise cost 20,000 fsyncs).
Either way every object the snapshot names (those it wrote, and those it found there
already, which may be another writer's not yet flushed) is durable on every replica
still in the write before the document that names them exists.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bastion import event_kinds as ek
from bastion.errors import IntegrityError, NotFoundError, UnavailableError, UsageError
from bastion.events import NO_EVENTS, Emit
from bastion.names import parse_name, parse_ref
from bastion.store import (
    AccessMode,
    Store,
    make_dirs,
    open_file,
    open_store,
    permissions,
    write_file,
)
from bastion.vault._admin import pin_admin
from bastion.vault._ingest import FileSource, tree_matches
from bastion.vault._keys import Signer, Verifier
from bastion.vault._layout import (
    ADMIN_PIN,
    SNAPSHOTS,
    label_key,
    labels_prefix,
    name_of_version_key,
    seq_of,
    version_key,
    versions_prefix,
)
from bastion.vault._manifest import checkpoint_series, vault_keys, vault_replicas
from bastion.vault._objects import decode, object_key
from bastion.vault._replicas import ReplicaSet, ReplicaSetStatistics, Write
from bastion.vault._snapshot import (
    LabelRecord,
    Snapshot,
    check_path,
    decode_document,
    encode_document,
)
from bastion.vault._write import Written, write_files

if TYPE_CHECKING:
    from bastion.manifest import Manifest
    from bastion.vault._gc import GcReport
    from bastion.vault._heal import HealReport
    from bastion.vault._scrub import ScrubReport

__all__ = ["FSYNC_OBJECTS", "FileSource", "PutResult", "Vault", "VaultStatistics"]

_T = TypeVar("_T")

#: A commit naming at most this many objects fsyncs each of them instead of flushing
#: the whole filesystem (see the module). On a quiet disk one syncfs is cheaper than
#: even a few fsyncs; on a busy one it waits for everyone's writeback while fsyncs
#: issued at once share a journal commit or two. 16 (and their directories, all at
#: once) stays within a few milliseconds either way; many more would not.
FSYNC_OBJECTS = 16


@dataclass(frozen=True, slots=True)
class PutResult:
    """What ``Vault.put`` did: the snapshot, and where it is.

    Attributes:
        snapshot: the snapshot committed.
        replicas: URLs of the replicas that hold it (at least the quorum).
        missed: for each replica of the vault that does not hold it, why (unreachable,
            a full disk, ...); empty when it is on every replica.
    """

    snapshot: Snapshot
    replicas: tuple[str, ...]
    missed: Mapping[str, str]

    @property
    def degraded(self) -> bool:
        """The snapshot is on fewer replicas than the vault has (scrub fills the gap)."""
        return bool(self.missed)


@dataclass(frozen=True, slots=True)
class VaultStatistics:
    """What this ``Vault`` did since it was made, and its replicas now.

    Attributes:
        commits: snapshots committed.
        bytes_in: plaintext bytes committed (every file, deduplicated or not).
        bytes_written: stored bytes written, summed over the replicas that lacked a chunk
            (what deduplication did not save; compressed chunks count as stored).
        chunks_new: chunks some replica lacked and got.
        chunks_dedup: chunks every replica had already.
        reads: files read whole (``read``); restores and fetches are not counted here.
        replicas: the replica set's own statistics (repairs, integrity failures, each
            replica's health and store counts).
    """

    commits: int
    bytes_in: int
    bytes_written: int
    chunks_new: int
    chunks_dedup: int
    reads: int
    replicas: ReplicaSetStatistics

    @property
    def degraded(self) -> bool:
        """At least one replica is unreachable."""
        return self.replicas.degraded


class Vault:
    """A set of replicas holding objects and signed snapshots. Thread-safe.

    ``replicas``: paths or URLs (``bastion.store.open_store``), ``Store`` objects, or a
    ready ``ReplicaSet`` (then ``quorum`` is the set's, and the set records its events
    through ``events`` when given). ``clock``: wall-clock seconds
    since the epoch, for when a snapshot is created and how old it is (retention).
    ``retention``: gc's defaults, as ``vault.retention`` in the manifest
    (``keep_last``, ``keep_within_days``). ``series``: checkpoint series gc counts as
    one (name prefix -> how many to keep; ``from_manifest`` gives each job's
    ``checkpoint.keep``, see ``bastion.vault._gc``). ``mode``: who may read the files of
    the replicas opened from paths here and of the state directory (``private``: the
    owner alone; ``group``: the owner's group too; ``vault.mode`` in the manifest).
    """

    #: Store whole files in worker processes: None decides per commit (many files on
    #: replicas worker processes can reach), True or False forces it either way.
    ingest_processes: bool | None = None

    def __init__(
        self,
        replicas: Sequence[Path | str | Store] | ReplicaSet,
        *,
        key_path: Path | None = None,
        admin_key_path: Path | None = None,
        state_dir: Path | None = None,
        events: Emit | None = None,
        quorum: int | None = None,
        subject: str = "vault",
        clock: Callable[[], float] = time.time,
        retention: Mapping[str, float] | None = None,
        series: Mapping[str, int] | None = None,
        mode: AccessMode = "private",
    ) -> None:
        self.events: Emit = events if events is not None else NO_EVENTS
        self.permissions = permissions(mode)
        self.subject = subject
        if isinstance(replicas, ReplicaSet):
            self.replicas = replicas
            if events is not None:
                replicas.events, replicas.subject = events, subject
        else:
            stores = [
                r if isinstance(r, Store) else open_store(str(r), mode=mode) for r in replicas
            ]
            self.replicas = ReplicaSet(stores, quorum=quorum, events=self.events, subject=subject)
        self.key_path = Path(key_path) if key_path else None
        self.admin_key_path = Path(admin_key_path) if admin_key_path else None
        self.state_dir = Path(state_dir) if state_dir else None
        self.clock = clock
        self.retention: dict[str, float] = dict(retention or {})
        self.series: dict[str, int] = dict(series or {})
        self._signer: Signer | None = None
        self._verifier: Verifier | None = None
        self._commit_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._stats = {
            "commits": 0,
            "bytes_in": 0,
            "bytes_written": 0,
            "chunks_new": 0,
            "chunks_dedup": 0,
            "reads": 0,
        }

    @classmethod
    def from_manifest(
        cls, manifest: Manifest, *, events: Emit | None = None, create: bool = True
    ) -> Vault:
        """The manifest's vault: its replicas, keys, quorum, retention, mode, each job's
        checkpoint series, the state dir and its event log. A manifest without
        ``vault:`` has the default vault under its state directory (see
        ``bastion.vault.vault_replicas``), the one its jobs checkpoint into.
        ``create=False`` opens the replicas without making a missing directory (a
        read-only check must not re-create a replica that was deleted)."""
        config = manifest.vault
        state = Path(manifest.state_dir)
        if events is None:
            from bastion.events import EventLog

            events = EventLog.in_state_dir(state)
        mode: AccessMode = config.mode if config is not None else "private"
        signing, admin = vault_keys(manifest)
        return cls(
            [open_store(r, create=create, mode=mode) for r in vault_replicas(manifest)],
            key_path=signing,
            admin_key_path=admin,
            state_dir=state,
            events=events,
            quorum=config.quorum if config is not None else None,
            retention=config.retention.model_dump(exclude_none=True) if config else None,
            series=checkpoint_series(manifest),
            mode=mode,
        )

    # ----------------------------------------------------------------- plumbing

    @property
    def stores(self) -> tuple[Store, ...]:
        """The replicas' stores, in the manifest's order (held by ``replicas``)."""
        return self.replicas.stores

    @property
    def quorum(self) -> int | None:
        return self.replicas.quorum

    def _count(self, **increments: int) -> None:
        with self._stats_lock:
            for key, value in increments.items():
                self._stats[key] += value

    def statistics(self) -> VaultStatistics:
        with self._stats_lock:
            counts = dict(self._stats)
        return VaultStatistics(**counts, replicas=self.replicas.statistics())

    @property
    def signer(self) -> Signer:
        if self._signer is None:
            if self.key_path is None:
                raise UsageError("this vault has no signing key (set vault.key in bastion.yaml)")
            self._signer = Signer(self.key_path)
        return self._signer

    @property
    def verifier(self) -> Verifier:
        if self._verifier is None:
            if self.key_path is None:
                raise UsageError("this vault has no signing key (set vault.key in bastion.yaml)")
            self._verifier = Verifier.for_key_file(self.key_path)
        return self._verifier

    def available_stores(self) -> list[Store]:
        """Replicas reachable now (asked at most once a second)."""
        return self.replicas.available()

    def degraded(self) -> list[str]:
        """URLs of replicas that cannot be reached now."""
        return self.replicas.unavailable()

    @contextlib.contextmanager
    def publish_lock(self) -> Iterator[None]:
        """One publisher at a time, across threads and processes, while a version is
        numbered and published (commit, label, gc), so versions stay dense: a file lock
        in the state directory, or the replica set's lock without one."""
        with self._commit_lock:
            if self.state_dir is None:
                with self.replicas.lock("vault"):
                    yield
                return
            fd = open_file(self.state_file("vault.lock"), os.O_RDWR, self.permissions.files)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def state_file(self, name: str) -> Path:
        """Where the vault keeps its state file ``name`` (``vault.lock``,
        ``scrub-cursor.json``, ``guard.json``), the state directory made with the
        vault's mode if it is missing. ``UsageError`` without a state directory."""
        if self.state_dir is None:
            raise UsageError(f"this vault has no state directory to keep {name} in")
        make_dirs(self.state_dir, self.permissions.dirs)
        return self.state_dir / name

    def write_state(self, name: str, data: bytes) -> None:
        """Replace the state file ``name`` whole, with the vault's mode (0600 private)."""
        write_file(
            self.state_file(name),
            data,
            mode=self.permissions.files,
            dir_mode=self.permissions.dirs,
        )

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # ------------------------------------------------------------------- commit

    def commit(
        self,
        name: str,
        files: Mapping[str, FileSource],
        *,
        meta: Mapping[str, Any] | None = None,
        lineage: Sequence[str] = (),
        labels: Sequence[str] = ("latest",),
        compress: bool = True,
        chunk_size: int | None = None,
        processes: bool | None = None,
    ) -> Snapshot:
        """Store ``files`` as the next version of ``name``; visible only once durable on
        the write quorum. ``put`` does the same and also says which replicas hold it.

        ``chunk_size``: cut at fixed offsets of this many bytes instead of CDC, for data
        with nothing for CDC to find (checkpoints: see ``_objects``). A multiple of 4 KiB
        keeps the chunks of a page-aligned buffer aligned, so uncompressed ones are
        written with no copy.

        ``processes``: store whole files (and small buffers) in worker processes (True),
        in threads (False), or as ``ingest_processes`` says (None).
        """
        return self.put(
            name,
            files,
            meta=meta,
            lineage=lineage,
            labels=labels,
            compress=compress,
            chunk_size=chunk_size,
            processes=processes,
        ).snapshot

    def unchanged(self, name: str, files: Mapping[str, FileSource]) -> Snapshot | None:
        """The latest version of ``name`` if committing ``files`` would store exactly what
        it holds (same paths, modes and chunks), else None: a caller that records the same
        tree again and again (a stage's code on every run) reuses the version it has."""
        try:
            latest = self.snapshot(name)
        except NotFoundError:
            return None
        return latest if tree_matches(latest.files, files) else None

    def put(
        self,
        name: str,
        files: Mapping[str, FileSource],
        *,
        meta: Mapping[str, Any] | None = None,
        lineage: Sequence[str] = (),
        labels: Sequence[str] = ("latest",),
        compress: bool = True,
        chunk_size: int | None = None,
        processes: bool | None = None,
    ) -> PutResult:
        """``commit``, returning where the snapshot went: a ``PutResult`` whose
        ``missed`` names each replica that does not hold it and why (degraded)."""
        if chunk_size is not None and (chunk_size < 4096 or chunk_size > 64 << 20):
            raise UsageError(
                f"vault commit of {name}: chunk_size {chunk_size} is outside 4 KiB..64 MiB"
            )
        parse_name(name)
        for ref in lineage:
            parse_ref(ref)
        for label in labels:
            parse_ref(f"{name}@{label}")
        paths = sorted(files)
        for path in paths:
            check_path(path)
        signer = self.signer  # fail before writing anything if the key is missing
        write = self.replicas.begin_write(f"commit of {name}")
        started = time.perf_counter()
        written = write_files(
            write,
            files,
            paths,
            seal_key=signer.seal_key(),
            compress=compress,
            chunk_size=chunk_size,
            processes=self.ingest_processes if processes is None else processes,
            on_no_processes=lambda why: self.events.emit(
                ek.VAULT_INGEST_THREADS, self.subject, reason=why
            ),
        )
        write.require("stored its objects")
        # Every object the snapshot names, written now or found in place, must be durable
        # before _publish makes the document that names them (see the module).
        named = sorted({c.id for entry in written.entries.values() for c in entry.chunks})
        write.sync([object_key(d) for d in named] if len(named) <= FSYNC_OBJECTS else None)
        write.require("flushed its objects")
        with self.publish_lock():
            snap = self._publish(
                name, write=write, written=written, meta=meta, lineage=lineage, labels=labels
            )
        seconds = time.perf_counter() - started
        size = snap.size
        self._count(
            commits=1,
            bytes_in=size,
            bytes_written=written.bytes_written,
            chunks_new=written.chunks_new,
            chunks_dedup=written.chunks_dedup,
        )
        self.events.emit(
            ek.VAULT_PUT,
            name,
            name=name,
            version=snap.version,
            snapshot=snap.id,
            files=len(snap.files),
            bytes=size,
            bytes_written=written.bytes_written,
            chunks_new=written.chunks_new,
            chunks_dedup=written.chunks_dedup,
            replicas=len(write.ok()),
            seconds=round(seconds, 6),
            mb_per_s=round(size / 1e6 / seconds, 1) if seconds > 0 else None,
            labels=list(labels),
        )
        missed = write.close(name)
        return PutResult(snap, tuple(s.url for s in write.ok()), missed)

    def _publish(
        self,
        name: str,
        *,
        write: Write,
        written: Written,
        meta: Mapping[str, Any] | None,
        lineage: Sequence[str],
        labels: Sequence[str],
    ) -> Snapshot:
        """Number, sign and publish the snapshot (under the publish lock)."""
        numbers = [n for k in write.keys(versions_prefix(name)) if (n := seq_of(k)) is not None]
        version = max(numbers, default=0) + 1
        parent = self._latest_id(name)
        signer = self.signer
        snap = Snapshot(
            name=name,
            version=version,
            id="",
            files=written.entries,
            meta=dict(meta or {}),
            lineage=tuple(lineage),
            parents=(parent,) if parent else (),
            created=self._now(),
            labels=tuple(labels),
            key_id=signer.public_bytes().hex()[:16],
        )
        document, snap_id = encode_document(snap.body(), signer)
        # durable on every replica (at once) before any label names it
        write.put(version_key(name, version), [document], exclusive=True)
        published = write.require(f"published {name}@{version}")
        # the labels are independent of one another: all at once, on every replica
        write.put_all([self._label_record(name, lb, version, snap_id, write) for lb in labels])
        if not all(_has(s, ADMIN_PIN) for s in published):  # the first commit, a new replica
            pin_admin(self.replicas, published, self.admin_key_path)
        return replace(snap, id=snap_id)

    def _label_record(
        self, name: str, label: str, version: int, snap_id: str, write: Write
    ) -> tuple[str, list[bytes]]:
        """The next label record of ``name@label`` (under the publish lock): its key and
        its signed document, for ``write`` to put."""
        seqs = [n for k in write.keys(labels_prefix(name, label)) if (n := seq_of(k)) is not None]
        seq = max(seqs, default=0) + 1
        record = LabelRecord(
            name, label, version, snap_id, seq, self._now().isoformat(timespec="seconds")
        )
        document, _ = encode_document(record.body(), self.signer)
        return label_key(name, label, seq), [document]

    def _version_numbers(self, name: str) -> list[int]:
        keys = self.replicas.keys(versions_prefix(name))
        return sorted({seq for k in keys if (seq := seq_of(k)) is not None})

    def _latest_id(self, name: str) -> str | None:
        try:
            return self.snapshot(name).id
        except NotFoundError:
            return None

    # ------------------------------------------------------------------ resolve

    def snapshot(self, ref: str | Snapshot) -> Snapshot:
        """The verified snapshot for ``name``, ``name@7`` or ``name@label``."""
        if isinstance(ref, Snapshot):
            return ref
        parsed = parse_ref(ref)
        rev = parsed.rev
        if isinstance(rev, int):
            return self._load_version(parsed.name, rev)
        if rev is not None and rev != "latest":
            return self._load_version(parsed.name, self._resolve_label(parsed.name, rev))
        label_version = self._resolve_label(parsed.name, "latest", missing_ok=True)
        if label_version:
            return self._load_version(parsed.name, label_version)
        # No (valid) latest label: the highest version whose signature verifies.
        for version in reversed(self._version_numbers(parsed.name)):
            try:
                return self._load_version(parsed.name, version)
            except IntegrityError:
                continue
        raise NotFoundError(f"vault: no snapshot named {parsed.name} (see `bastion vault ls`)")

    def _read_document(self, key: str, check: Callable[[dict[str, Any], str], _T]) -> _T:
        """The first copy of document ``key`` that verifies and passes ``check``; bad
        copies read before it are repaired from it (a missing one is left alone: a label
        record written while a replica was down is simply not there)."""

        def verify(stored: bytes) -> _T:
            body, doc_id = decode_document(stored, self.verifier, key)
            return check(body, doc_id)

        return self.replicas.read(key, verify, what=key, required=False)

    def _load_version(self, name: str, version: int) -> Snapshot:
        def check(body: dict[str, Any], doc_id: str) -> Snapshot:
            if body.get("type") != "snapshot":
                raise IntegrityError(f"{name}@{version}: document is not a snapshot")
            snap = Snapshot.from_body(body, doc_id, self.verifier.key_id)
            if snap.name != name or snap.version != version:
                raise IntegrityError(
                    f"{name}@{version}: document is {snap.name}@{snap.version} "
                    "(a signed snapshot replayed under another name or version)"
                )
            return snap

        try:
            return self._read_document(version_key(name, version), check)
        except NotFoundError:
            raise NotFoundError(
                f"vault: {name}@{version} does not exist (see `bastion vault log {name}`)"
            ) from None

    def _resolve_label(self, name: str, label: str, *, missing_ok: bool = False) -> int:
        keys = self.replicas.keys(labels_prefix(name, label))
        for key in sorted(keys, key=lambda k: seq_of(k) or -1, reverse=True):

            def check(body: dict[str, Any], _id: str, key: str = key) -> LabelRecord:
                if body.get("type") != "label":
                    raise IntegrityError(f"{key}: document is not a label record")
                record = LabelRecord.from_body(body)
                if (record.name, record.label, record.seq) != (name, label, seq_of(key)):
                    raise IntegrityError(f"{key}: record is for {record.name}@{record.label}")
                return record

            try:
                record = self._read_document(key, check)
            except (IntegrityError, NotFoundError):
                continue  # a forged or damaged record: fall back to the one before it
            return int(record.version)
        if missing_ok:
            return 0
        raise NotFoundError(f"vault: {name}@{label} does not exist (no such label)")

    def versions(self, name: str) -> list[Snapshot]:
        """Every snapshot of ``name`` that verifies, oldest first."""
        parse_name(name)
        out = []
        for version in self._version_numbers(name):
            try:
                out.append(self._load_version(name, version))
            except (IntegrityError, NotFoundError):
                continue
        return out

    def names(self, prefix: str = "") -> list[str]:
        """Every artifact name with at least one snapshot, sorted."""
        found = {
            named[0]
            for key in self.replicas.keys(SNAPSHOTS)
            if (named := name_of_version_key(key)) is not None
        }
        return sorted(n for n in found if n.startswith(prefix))

    def labels(self, name: str) -> dict[str, int]:
        """Every label of ``name`` and the version it points at."""
        parse_name(name)
        prefix = f"{SNAPSHOTS}{name}/_l/"
        found = {key.removeprefix(prefix).split("/", 1)[0] for key in self.replicas.keys(prefix)}
        out = {}
        for label in sorted(found):
            version = self._resolve_label(name, label, missing_ok=True)
            if version:
                out[label] = version
        return out

    def label(self, name: str, version: int, label: str) -> None:
        """Point ``name@label`` at ``version`` (e.g. promote a model to ``prod``)."""
        parse_ref(f"{name}@{label}")
        snap = self._load_version(name, version)
        write = self.replicas.begin_write(f"label {name}@{label}")
        with self.publish_lock():
            write.put(*self._label_record(name, label, version, snap.id, write))
            write.require(f"moved {name}@{label}")
        write.close(name)
        self.events.emit(ek.VAULT_LABELLED, name, name=name, version=version, label=label)

    # --------------------------------------------------------------------- read

    def fetch(self, digest: str, *, context: str = "") -> bytes | memoryview:
        """A chunk's plaintext, verified; a bad or missing replica copy is repaired."""
        return self.replicas.read(
            object_key(digest),
            lambda stored: decode(stored, digest),
            what=f"object {digest[:16]} ({context or 'chunk'})",
            required=True,
            context=context,
        )

    def read(self, ref: str | Snapshot, path: str) -> bytes:
        """The whole of one file of a snapshot, every chunk verified."""
        snap = self.snapshot(ref)
        entry = snap.files.get(path)
        if entry is None:
            raise NotFoundError(
                f"vault: {snap.ref} has no file {path!r} (it has: "
                f"{', '.join(sorted(snap.files)[:5])}{', ...' if len(snap.files) > 5 else ''})"
            )
        self._count(reads=1)
        context = f"{snap.ref}:{path}"
        # One list, one join: the chunks are views, so the file is copied exactly once.
        return b"".join([self.fetch(c.id, context=context) for c in entry.chunks])

    # ------------------------------------------------ restore, scrub, lineage, gc

    def restore(
        self,
        ref: str | Snapshot,
        dest: Path,
        *,
        progress: Callable[[int], None] | None = None,
        clean: bool = False,
        empty_only: bool = False,
    ) -> Snapshot:
        """Write the snapshot's files under ``dest``, bit-identical and verified.

        ``clean`` also removes files under ``dest`` that the snapshot does not have (a
        ransom note, ``*.locked`` copies), so the directory is exactly the snapshot.
        ``empty_only``: refuse (``UsageError``, nothing written) unless ``dest`` is
        missing or empty (``bastion vault restore`` without ``--force``).
        """
        from bastion.vault._restore import restore

        return restore(
            self,
            self.snapshot(ref),
            Path(dest),
            progress=progress,
            clean=clean,
            empty_only=empty_only,
        )

    def scrub(
        self,
        *,
        repair: bool = True,
        max_seconds: float | None = None,
        progress: Callable[[int], None] | None = None,
        deep: bool = False,
    ) -> ScrubReport:
        """Verify every object on every replica (``repair``: fix bad copies from good).

        ``deep``: decompress and hash the content of every compressed copy rather than
        checking its seal (see ``bastion.vault._scrub``).
        """
        from bastion.vault._scrub import scrub

        return scrub(self, repair=repair, max_seconds=max_seconds, progress=progress, deep=deep)

    def heal(
        self, ref: str | Snapshot, *, rebuilt: Mapping[str, bytes] | None = None
    ) -> HealReport:
        """Put one snapshot back whole on every reachable replica: its document, its
        name's labels and every chunk, from a copy that verifies, or from ``rebuilt``
        files only if they are hash-identical to it (``bastion.vault._heal``)."""
        from bastion.vault._heal import heal

        return heal(self, self.snapshot(ref), rebuilt=rebuilt)

    def lineage(self, ref: str) -> dict[str, Any]:
        """What produced ``ref``: ``{root, nodes: {ref: info}, edges: [[child, parent]]}``."""
        from bastion.vault._lineage import lineage

        return lineage(self, ref)

    def gc(
        self,
        *,
        keep_last: int | None = None,
        keep_within_days: float | None = None,
        grace_s: float = 3600.0,
        series: Mapping[str, int] | None = None,
    ) -> GcReport:
        """Drop old versions and every object no remaining snapshot needs. Needs the
        admin key.

        A version is dropped only when every rule given lets it go: beyond the newest
        ``keep_last`` of its name, older than ``keep_within_days`` (by the vault's
        ``clock``). Whatever the rules, a labelled version (``@latest``, ``@prod``) and
        every snapshot a kept one names in its lineage (transitively: the data and code a
        kept model was made from) stay, so a model can always be rebuilt. No rule (here
        or in ``retention``, the manifest's ``vault.retention``): no version is dropped,
        only unneeded objects.

        ``series``: checkpoint series (name prefix -> how many to keep; by default the
        vault's ``series``, each job's ``checkpoint.keep``): each counted as one, its
        newest steps kept and the others dropped whole, except the newest checkpoint
        that reads back whole and any a kept snapshot names in its lineage.

        ``grace_s``: objects younger than this are kept, so a commit in flight (whose
        objects are written before its snapshot) is never robbed.

        Returns a ``GcReport``: a mapping of its counts (``snapshots_deleted``,
        ``objects_deleted``, ``objects_kept``, ``checkpoints_deleted``), and the replicas
        it could not reach and the checkpoints that did not read back whole.
        """
        from bastion.vault._gc import gc

        if keep_last is None and "keep_last" in self.retention:
            keep_last = int(self.retention["keep_last"])
        if keep_within_days is None and "keep_within_days" in self.retention:
            keep_within_days = float(self.retention["keep_within_days"])
        return gc(
            self,
            keep_last=keep_last,
            keep_within_days=keep_within_days,
            grace_s=grace_s,
            series=self.series if series is None else series,
        )


def _has(store: Store, key: str) -> bool:
    try:
        return store.has(key)
    except (OSError, UnavailableError):
        return True  # unreachable now: nothing to pin there this time
