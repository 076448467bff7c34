"""The vault: replicated, content-addressed, signed snapshots with verified reads.

Owns: committing a tree (chunk -> hash -> compress where it pays -> write every replica
-> flush -> sign -> publish), resolving refs, verified reads that repair a bad replica
from a good one, restore, labels, and the write path's events.

Must never: make a snapshot visible before every object it names is durable on the
write quorum; serve bytes or a snapshot that fail verification; replace an object or a
snapshot except to repair it with verified bytes; delete without the admin key.

Layout of every replica (``Store`` keys)::

    objects/<2 hex>/<64 hex>                  one chunk, named by BLAKE3 of its plaintext
    snapshots/<name>/_v/<version:010d>        signed snapshot document (write once)
    snapshots/<name>/_l/<label>/<seq:010d>    signed label record; highest seq wins

Refs (``@latest``, ``@prod``) are write-once records too, so a replica never needs an
object to change in place: S3 with Object Lock can hold it as is.

Write path: files under 16 MiB are stored whole, in batches, by a worker that opens,
reads, cuts (FastCDC), hashes, compresses and writes them to every replica: worker
processes when a commit has 256 or more of them on local replicas (Python's per-object
work then runs on every core instead of queueing for the GIL; see ``_ingest``), a
thread pool otherwise. Bigger files (checkpoints, weights) and in-memory buffers are cut
lazily by the calling thread and each chunk is a thread job, so one big file spreads
over every worker from its first chunk (os.write, zstd and BLAKE3 release the GIL, so
the replicas' writes overlap). Objects of 1 MiB and more go to disk with O_DIRECT (see
``bastion.store``). Objects are written without a per-file fsync; each replica is
flushed once with ``syncfs`` before the snapshot document (fsync'd, then its directory
fsync'd) is published: durable before visible, at the cost of one flush per commit
instead of one per object (10,000 small files x 2 replicas would otherwise cost 20,000
fsyncs).
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.errors import (
    BastionError,
    IntegrityError,
    NotFoundError,
    ScopeError,
    UnavailableError,
    UsageError,
)
from bastion.names import parse_name, parse_ref
from bastion.store import LocalStore, Store, open_store
from bastion.vault._ingest import (
    ChunkResult,
    FileResult,
    FileSource,
    IngestWorkers,
    boundaries_of,
    open_source,
    store_chunk,
    store_file,
)
from bastion.vault._keys import Signer, Verifier
from bastion.vault._objects import (
    decode,
    object_key,
)
from bastion.vault._snapshot import (
    ChunkRef,
    FileEntry,
    LabelRecord,
    Snapshot,
    check_path,
    decode_document,
    encode_document,
)

if TYPE_CHECKING:
    from bastion.events import EventLog
    from bastion.manifest import Manifest
    from bastion.vault._scrub import ScrubReport

__all__ = ["FileSource", "Vault"]

_VERSION_WIDTH = 10
# Threads for restore (file creation waits on the disk).
_WORKERS = max(4, 2 * (os.cpu_count() or 2))
# Threads for put: chunks of big files and buffers (checkpoints) are hashed in C and
# written with O_DIRECT, each write waiting on the disk, so throughput follows the writes
# in flight: 1.2 GB to 2 replicas took 2.1 s with 4 threads, 1.8-2.1 s with 8 and
# 1.6-1.85 s with 16 on 2 cores (raw parallel O_DIRECT of the same bytes: 1.2-1.4 s).
_IO_WORKERS = max(16, 4 * (os.cpu_count() or 2))
# Worker processes for many whole files (see _ingest): one per core.
_PUT_WORKERS = max(2, os.cpu_count() or 2)
# A commit with at least this many whole files (Path sources under _WHOLE_BELOW) on local
# replicas stores them in worker processes (see _ingest): below it, starting them (about
# 0.1 s) costs more than the GIL does.
_PROCESS_FILES = 256
_ADMIN_PIN = "config/admin.pub"
# Chunks under _BATCH_BELOW (whole small files, in practice) go to the pool in batches
# of up to _BATCH_COUNT chunks or _BATCH_BYTES bytes.
_BATCH_BELOW = 256 << 10
_BATCH_COUNT = 64
_BATCH_BYTES = 1 << 20
# Files (Path sources) under _WHOLE_BELOW go to workers whole, batched like small
# chunks; bigger ones are cut here so their chunks spread over every worker.
_WHOLE_BELOW = 16 << 20


def _umask() -> int:
    """This process's umask, read without changing it (os.umask would race other threads)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o777  # unknown: always fchmod


def _versions_prefix(name: str) -> str:
    return f"snapshots/{name}/_v/"


def _version_key(name: str, version: int) -> str:
    return f"{_versions_prefix(name)}{version:0{_VERSION_WIDTH}d}"


def _labels_prefix(name: str, label: str) -> str:
    return f"snapshots/{name}/_l/{label}/"


class Vault:
    """A set of replicas holding objects and signed snapshots. Thread-safe."""

    #: Store whole files in worker processes: None decides per commit (many files on
    #: local replicas), True or False forces it either way.
    ingest_processes: bool | None = None

    def __init__(
        self,
        replicas: Sequence[Path | str | Store],
        *,
        key_path: Path | None = None,
        admin_key_path: Path | None = None,
        state_dir: Path | None = None,
        events: EventLog | None = None,
        quorum: int | None = None,
        subject: str = "vault",
    ) -> None:
        if not replicas:
            raise UsageError("a vault needs at least one replica (vault.replicas in bastion.yaml)")
        self.stores: list[Store] = [
            r if isinstance(r, Store) else open_store(str(r)) for r in replicas
        ]
        self.key_path = Path(key_path) if key_path else None
        self.admin_key_path = Path(admin_key_path) if admin_key_path else None
        self.state_dir = Path(state_dir) if state_dir else None
        self.events = events
        self.quorum = quorum
        self.subject = subject
        self._retention: dict[str, float] = {}
        self._available: tuple[float, list[Store]] | None = None
        self._signer: Signer | None = None
        self._verifier: Verifier | None = None
        self._commit_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._stats: dict[str, int] = {
            "commits": 0,
            "bytes_in": 0,
            "bytes_written": 0,
            "chunks_new": 0,
            "chunks_dedup": 0,
            "reads": 0,
            "repairs": 0,
            "integrity_failures": 0,
        }

    @classmethod
    def from_manifest(cls, manifest: Manifest, *, events: EventLog | None = None) -> Vault:
        """The manifest's vault: its replicas, keys, quorum, state dir and event log."""
        config = manifest.vault
        if config is None:
            raise UsageError(
                f"{manifest.base_dir / 'bastion.yaml'}: no vault section "
                "(add vault: {replicas: [.bastion/vault/a, .bastion/vault/b]}, or run "
                "`bastion init`)"
            )
        state = Path(manifest.state_dir)
        if events is None:
            from bastion.events import EventLog

            events = EventLog.in_state_dir(state)
        vault = cls(
            config.replicas,
            key_path=config.key or state / "keys" / "signing.key",
            admin_key_path=config.admin_key or state / "keys" / "admin.key",
            state_dir=state,
            events=events,
            quorum=config.quorum,
        )
        vault._retention = config.retention.model_dump(exclude_none=True)
        return vault

    # ----------------------------------------------------------------- plumbing

    def _emit(self, kind: str, subject: str | None = None, **data: Any) -> None:
        # subject is the artifact name when there is one, so `bastion events` can filter.
        if self.events is not None:
            self.events.emit(kind, subject=subject or self.subject, **data)

    def _count(self, **increments: int) -> None:
        with self._stats_lock:
            for key, value in increments.items():
                self._stats[key] += value

    def statistics(self) -> dict[str, Any]:
        with self._stats_lock:
            stats: dict[str, Any] = dict(self._stats)
        stats["replicas"] = [{"available": s.available(), **s.statistics()} for s in self.stores]
        stats["degraded"] = not all(r["available"] for r in stats["replicas"])
        return stats

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
        """Replicas reachable now. Cached for a second: reads ask once per chunk, and a
        replica that fails in between is caught by the read itself."""
        now = time.monotonic()
        cached = self._available
        if cached is not None and now - cached[0] < 1.0:
            return list(cached[1])
        found = [s for s in self.stores if s.available()]
        self._available = (now, found)
        return list(found)

    def degraded(self) -> list[str]:
        """URLs of replicas that cannot be reached now."""
        return [s.url for s in self.stores if not s.available()]

    @contextlib.contextmanager
    def _publish_lock(self) -> Iterator[None]:
        """One publisher at a time, across threads and processes (versions stay dense)."""
        with self._commit_lock:
            lock_dir = self.state_dir
            if lock_dir is None:
                first = self.stores[0]
                lock_dir = first.root if isinstance(first, LocalStore) else Path.cwd()
            lock_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_dir / "vault.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

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
    ) -> Snapshot:
        """Store ``files`` as the next version of ``name``; visible only once durable.

        ``chunk_size``: cut at fixed offsets of this many bytes instead of CDC, for data
        with nothing for CDC to find (checkpoints: see ``_objects``). A multiple of 4 KiB
        keeps the chunks of a page-aligned buffer aligned, so uncompressed ones are
        written with no copy.
        """
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
        stores = self.available_stores()
        needed = self.quorum or 1
        if len(stores) < needed:
            raise UnavailableError(
                f"vault: {len(stores)} of {len(self.stores)} replicas reachable, "
                f"{needed} needed ({', '.join(self.degraded())} down)"
            )
        started = time.perf_counter()
        entries, written, new_chunks, dedup, failed = self._write_files(
            files, paths, stores, compress, chunk_size
        )
        ok = [s for i, s in enumerate(stores) if i not in failed]
        if len(ok) < needed:
            raise UnavailableError(
                f"vault: commit of {name} reached {len(ok)} replicas, {needed} needed: "
                + "; ".join(f"{stores[i].url}: {why}" for i, why in failed.items())
            )
        self._parallel([s.sync for s in ok])
        with self._publish_lock():
            version = self._latest_version(name, ok) + 1
            parent = self._latest_id(name)
            snap = Snapshot(
                name=name,
                version=version,
                id="",
                files=entries,
                meta=dict(meta or {}),
                lineage=tuple(lineage),
                parents=(parent,) if parent else (),
                created=datetime.now(UTC),
                labels=tuple(labels),
                key_id=signer.public_bytes().hex()[:16],
            )
            document, snap_id = encode_document(snap.body(), signer)
            key = _version_key(name, version)
            published = []
            for store in ok:
                try:
                    if store.put(key, [document], durable=True):
                        published.append(store)
                    else:
                        raise IntegrityError(
                            f"{store.url}: {key} exists already; another writer is not "
                            "taking the vault lock"
                        )
                except (OSError, UnavailableError) as exc:
                    failed[stores.index(store)] = str(exc)
            if len(published) < needed:
                raise UnavailableError(
                    f"vault: snapshot {name}@{version} published on too few replicas"
                )
            for label in labels:
                self._write_label(name, label, version, snap_id, published)
            if version == 1 or not all(s.has(_ADMIN_PIN) for s in published):
                self._pin_admin(published)
        seconds = time.perf_counter() - started
        snap = Snapshot(**{**snap.__dict__, "id": snap_id})
        size = snap.size
        self._count(
            commits=1,
            bytes_in=size,
            bytes_written=written,
            chunks_new=new_chunks,
            chunks_dedup=dedup,
        )
        self._emit(
            "vault.put",
            subject=name,
            name=name,
            version=version,
            snapshot=snap_id,
            files=len(entries),
            bytes=size,
            bytes_written=written,
            chunks_new=new_chunks,
            chunks_dedup=dedup,
            replicas=len(published),
            seconds=round(seconds, 6),
            mb_per_s=round(size / 1e6 / seconds, 1) if seconds > 0 else None,
            labels=list(labels),
        )
        if failed or len(published) < len(self.stores):
            self._emit(
                "vault.degraded",
                subject=name,
                replicas_ok=len(published),
                replicas_total=len(self.stores),
                down=[s.url for s in self.stores if s not in published],
            )
        return snap

    def _parallel(self, calls: Sequence[Callable[[], Any]]) -> None:
        if len(calls) == 1:
            calls[0]()
            return
        with ThreadPoolExecutor(len(calls)) as pool:
            for fut in [pool.submit(c) for c in calls]:
                fut.result()

    def _write_files(
        self,
        files: Mapping[str, FileSource],
        paths: list[str],
        stores: list[Store],
        compress: bool,
        chunk_size: int | None = None,
    ) -> tuple[dict[str, FileEntry], int, int, int, dict[int, str]]:
        failed: dict[int, str] = {}
        failed_lock = threading.Lock()
        seal_key = self.signer.seal_key()
        # Bound the jobs in flight: views into mmaps cost nothing, compressed copies and
        # batches of small files (read into memory) do.
        slots = threading.BoundedSemaphore(_IO_WORKERS * 2)

        def note_failures(results: list[ChunkResult]) -> None:
            for result in results:
                if result.failed:
                    with failed_lock:
                        failed.update(result.failed)

        def one(view: memoryview) -> ChunkResult:
            try:
                result = store_chunk(
                    view,
                    stores,
                    skip=failed,
                    compress=compress,
                    seal_key=seal_key,
                    align=bool(chunk_size),
                )
            finally:
                view.release()
            note_failures([result])
            return result

        def job(views: list[memoryview]) -> list[ChunkResult]:
            # One job per batch of small chunks: a pool hand-off costs about as much as
            # writing a 4 KiB object, and a dataset can be mostly small files.
            try:
                results = []
                for done, view in enumerate(views):
                    try:
                        results.append(one(view))
                    except BaseException:
                        for rest in views[done + 1 :]:
                            rest.release()
                        raise
                return results
            finally:
                slots.release()

        def file_job(items: list[FileSource]) -> list[FileResult]:
            # Whole files to one worker: it opens, reads, cuts, hashes, compresses and
            # writes them, so reading and CDC run on every core instead of the calling
            # thread, and a small file costs one pool hand-off per batch, not per chunk.
            try:
                out = []
                for source in items:
                    result = store_file(
                        source,
                        stores,
                        skip=failed,
                        compress=compress,
                        seal_key=seal_key,
                        chunk_size=chunk_size,
                    )
                    note_failures(result[2])
                    out.append(result)
                return out
            finally:
                slots.release()

        processes = self._ingest_processes(
            files, paths, stores, compress=compress, seal_key=seal_key, chunk_size=chunk_size
        )

        entries: dict[str, FileEntry] = {}
        # Per file: its size, mode, and where each chunk's result will be (job, index).
        pending: list[tuple[str, int, int, list[tuple[Future[list[ChunkResult]], int]]]] = []
        # Files handed whole to a worker: (job, index in its batch).
        whole: dict[str, tuple[Future[list[FileResult]], int]] = {}
        opened: list[tuple[mmap.mmap, memoryview]] = []
        with (
            ThreadPoolExecutor(_IO_WORKERS, thread_name_prefix="vault-put") as pool,
            processes or contextlib.nullcontext() as workers,
        ):
            try:
                batch: list[memoryview] = []
                batch_bytes = 0
                waiting: list[tuple[list[tuple[Future[list[ChunkResult]], int]], int]] = []

                def flush() -> None:
                    nonlocal batch, batch_bytes, waiting
                    if not batch:
                        return
                    slots.acquire()
                    fut = pool.submit(job, batch)
                    for refs, slot in waiting:
                        refs[slot] = (fut, refs[slot][1])
                    batch, batch_bytes, waiting = [], 0, []

                files_batch: list[str] = []
                files_bytes = 0

                def flush_files() -> None:
                    nonlocal files_batch, files_bytes
                    if not files_batch:
                        return
                    fut: Future[list[FileResult]]
                    if workers is not None:
                        fut = workers.submit(
                            [str(Path(str(files[p])).absolute()) for p in files_batch]
                        )
                    else:
                        slots.acquire()
                        fut = pool.submit(file_job, [files[p] for p in files_batch])
                    for index, p in enumerate(files_batch):
                        whole[p] = (fut, index)
                    files_batch, files_bytes = [], 0

                placeholder: Future[list[ChunkResult]] = Future()
                for path in paths:
                    source = files[path]
                    if isinstance(source, Path):
                        try:
                            size = source.stat().st_size
                        except FileNotFoundError:
                            raise NotFoundError(
                                f"{source}: no such file to put in the vault"
                            ) from None
                        if size < _WHOLE_BELOW:
                            files_batch.append(path)
                            files_bytes += size
                            if len(files_batch) >= _BATCH_COUNT or files_bytes >= _BATCH_BYTES:
                                flush_files()
                            continue
                    view, mode, keep = open_source(source)
                    if keep is not None:
                        opened.append((keep, view))
                    refs: list[tuple[Future[list[ChunkResult]], int]] = []
                    for offset, length in boundaries_of(view, chunk_size):
                        chunk = view[offset : offset + length]
                        if length >= _BATCH_BELOW:
                            slots.acquire()
                            refs.append((pool.submit(job, [chunk]), 0))
                            continue
                        refs.append((placeholder, len(batch)))
                        waiting.append((refs, len(refs) - 1))
                        batch.append(chunk)
                        batch_bytes += length
                        if len(batch) >= _BATCH_COUNT or batch_bytes >= _BATCH_BYTES:
                            flush()
                    pending.append((path, len(view), mode, refs))
                flush()
                flush_files()
                written = new = dedup = 0
                for path, (job_fut, index) in whole.items():
                    size, mode, results = job_fut.result()[index]
                    if workers is not None:
                        note_failures(results)
                    chunk_list = []
                    for result in results:
                        chunk_list.append(ChunkRef(result.digest, result.size))
                        written += result.stored
                        if result.stored:
                            new += 1
                        else:
                            dedup += 1
                    entries[path] = FileEntry(size, tuple(chunk_list), mode)
                for path, size, mode, refs in pending:
                    chunks = []
                    for fut, slot in refs:
                        result = fut.result()[slot]
                        chunks.append(ChunkRef(result.digest, result.size))
                        written += result.stored
                        if result.stored:
                            new += 1
                        else:
                            dedup += 1
                    entries[path] = FileEntry(size, tuple(chunks), mode)
            finally:
                pool.shutdown(wait=True)
                for mapped, view in opened:
                    view.release()
                    with contextlib.suppress(BufferError):
                        mapped.close()
        entries = {path: entries[path] for path in paths}  # the document lists them sorted
        return entries, written, new, dedup, failed

    def _ingest_processes(
        self,
        files: Mapping[str, FileSource],
        paths: list[str],
        stores: list[Store],
        *,
        compress: bool,
        seal_key: bytes,
        chunk_size: int | None,
    ) -> IngestWorkers | None:
        """Worker processes for this commit's whole files, or None to use threads."""
        use = self.ingest_processes
        if use is False or not all(isinstance(s, LocalStore) for s in stores):
            return None
        if use is None:
            whole = sum(1 for p in paths if isinstance(files[p], Path))
            if whole < _PROCESS_FILES or (os.cpu_count() or 1) < 2:
                return None
        try:
            return IngestWorkers(
                [s for s in stores if isinstance(s, LocalStore)],
                seal_key=seal_key,
                compress=compress,
                count=_PUT_WORKERS,
                chunk_size=chunk_size,
            )
        except OSError as exc:
            # no processes here (a sandbox, a process limit): threads do the same work
            self._emit("vault.ingest.threads", reason=f"{type(exc).__name__}: {exc}")
            return None

    def _write_label(
        self, name: str, label: str, version: int, snap_id: str, stores: Sequence[Store]
    ) -> None:
        seq = self._label_seq(name, label, stores) + 1
        record = LabelRecord(
            name, label, version, snap_id, seq, datetime.now(UTC).isoformat(timespec="seconds")
        )
        document, _ = encode_document(record.body(), self.signer)
        key = f"{_labels_prefix(name, label)}{seq:0{_VERSION_WIDTH}d}"
        for store in stores:
            try:
                store.put(key, [document], durable=True)
            except (OSError, UnavailableError) as exc:
                self._emit("vault.degraded", subject=name, replica=store.url, error=str(exc))

    @staticmethod
    def _seq_of(key: str) -> int | None:
        tail = key.rsplit("/", 1)[-1]
        return int(tail) if tail.isdigit() else None

    def _label_seq(self, name: str, label: str, stores: Sequence[Store]) -> int:
        best = 0
        for store in stores:
            for key in store.list(_labels_prefix(name, label)):
                seq = self._seq_of(key)
                if seq is not None:
                    best = max(best, seq)
        return best

    def _version_numbers(self, name: str, stores: Sequence[Store] | None = None) -> list[int]:
        found: set[int] = set()
        for store in stores if stores is not None else self.available_stores():
            for key in store.list(_versions_prefix(name)):
                seq = self._seq_of(key)
                if seq is not None:
                    found.add(seq)
        return sorted(found)

    def _latest_version(self, name: str, stores: Sequence[Store] | None = None) -> int:
        numbers = self._version_numbers(name, stores)
        return numbers[-1] if numbers else 0

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

    def _read_document(
        self, key: str, check: Callable[[dict[str, Any], str], Any]
    ) -> tuple[Any, bytes]:
        """First replica copy of ``key`` that verifies; bad copies are repaired from it."""
        bad: list[tuple[Store, str]] = []
        missing: list[Store] = []
        for store in self.available_stores():
            try:
                stored = store.get(key)
            except NotFoundError:
                missing.append(store)
                continue
            except (OSError, UnavailableError) as exc:
                bad.append((store, f"unreadable: {exc}"))
                continue
            try:
                body, doc_id = decode_document(stored, self.verifier, f"{store.url}/{key}")
                value = check(body, doc_id)
            except IntegrityError as exc:
                bad.append((store, str(exc)))
                self._count(integrity_failures=1)
                self._emit("vault.integrity.failed", key=key, replica=store.url, error=str(exc))
                continue
            for target, why in bad:
                self._repair(target, key, stored, why)
            return value, stored
        if bad:
            raise IntegrityError(
                f"vault: {key}: no replica has a copy that verifies ("
                + "; ".join(f"{s.url}: {why}" for s, why in bad)
                + "); it will not be served"
            )
        raise NotFoundError(f"vault: {key} not found on any replica")

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
            snap, _ = self._read_document(_version_key(name, version), check)
        except NotFoundError:
            raise NotFoundError(
                f"vault: {name}@{version} does not exist (see `bastion vault log {name}`)"
            ) from None
        return snap  # type: ignore[no-any-return]

    def _resolve_label(self, name: str, label: str, *, missing_ok: bool = False) -> int:
        keys: set[str] = set()
        for store in self.available_stores():
            keys.update(store.list(_labels_prefix(name, label)))
        for key in sorted(keys, key=lambda k: self._seq_of(k) or -1, reverse=True):

            def check(body: dict[str, Any], _id: str, key: str = key) -> LabelRecord:
                if body.get("type") != "label":
                    raise IntegrityError(f"{key}: document is not a label record")
                record = LabelRecord.from_body(body)
                if (record.name, record.label, record.seq) != (name, label, self._seq_of(key)):
                    raise IntegrityError(f"{key}: record is for {record.name}@{record.label}")
                return record

            try:
                record, _ = self._read_document(key, check)
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
        found: set[str] = set()
        for store in self.available_stores():
            for key in store.list("snapshots/"):
                head, sep, _ = key.partition("/_v/")
                if sep:
                    found.add(head.removeprefix("snapshots/"))
        return sorted(n for n in found if n.startswith(prefix))

    def labels(self, name: str) -> dict[str, int]:
        """Every label of ``name`` and the version it points at."""
        parse_name(name)
        found: set[str] = set()
        prefix = f"snapshots/{name}/_l/"
        for store in self.available_stores():
            for key in store.list(prefix):
                found.add(key.removeprefix(prefix).split("/", 1)[0])
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
        stores = self.available_stores()
        with self._publish_lock():
            self._write_label(name, label, version, snap.id, stores)
        self._emit("vault.labelled", subject=name, name=name, version=version, label=label)

    # --------------------------------------------------------------------- read

    def fetch(self, digest: str, *, context: str = "") -> bytes | memoryview:
        """A chunk's plaintext, verified; a bad or missing replica copy is repaired."""
        key = object_key(digest)
        bad: list[tuple[Store, str]] = []
        stores = self.available_stores()
        if not stores:
            raise UnavailableError(f"vault: no replica reachable ({', '.join(self.degraded())})")
        for store in stores:
            try:
                stored = store.get(key)
                data = decode(stored, digest)
            except NotFoundError:
                bad.append((store, "missing"))
                continue
            except IntegrityError as exc:
                bad.append((store, str(exc)))
                continue
            except (OSError, UnavailableError) as exc:
                bad.append((store, f"unreadable: {exc}"))
                continue
            for target, why in bad:
                self._repair(target, key, stored, why, context=context)
            return data
        self._count(integrity_failures=1)
        self._emit(
            "vault.unrecoverable",
            object=digest,
            context=context,
            replicas={s.url: why for s, why in bad},
        )
        raise IntegrityError(
            f"vault: object {digest[:16]} ({context or 'chunk'}) has no good copy on any "
            "replica (" + "; ".join(f"{s.url}: {why}" for s, why in bad) + "); not served"
        )

    def _repair(
        self, store: Store, key: str, stored: bytes, why: str, *, context: str = ""
    ) -> None:
        try:
            store.put(key, [stored], replace=True, durable=True)
        except (OSError, BastionError) as exc:
            self._emit("vault.repair_failed", key=key, replica=store.url, error=str(exc))
            return
        self._count(repairs=1)
        self._emit("vault.repaired", key=key, replica=store.url, reason=why, context=context)

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

    def restore(
        self,
        ref: str | Snapshot,
        dest: Path,
        *,
        progress: Callable[[int], None] | None = None,
        clean: bool = False,
    ) -> Snapshot:
        """Write the snapshot's files under ``dest``, bit-identical and verified.

        ``clean`` also removes files under ``dest`` that the snapshot does not have (a
        ransom note, ``*.locked`` copies), so the directory is exactly the snapshot.
        """
        snap = self.snapshot(ref)
        started = time.perf_counter()
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        # Resolve each directory once (not each file): a symlinked directory inside dest
        # must not lead a file outside it. A file that is itself a symlink is replaced
        # by the restored file (rename), never written through.
        parents: dict[str, Path] = {"": root}
        targets: dict[str, Path] = {}
        for path in snap.files:
            head, _, tail = check_path(path).rpartition("/")
            parent = parents.get(head)
            if parent is None:
                parent = (root / head).resolve()
                if not parent.is_relative_to(root):
                    raise IntegrityError(f"{snap.ref}: file {path!r} would escape {dest}")
                parents[head] = parent
            targets[path] = parent / tail
        if clean:
            self._clean(root, set(targets.values()))
        for parent in parents.values():
            parent.mkdir(parents=True, exist_ok=True)

        umask = _umask()

        def restore_file(path: str) -> int:
            entry = snap.files[path]
            target = targets[path]
            tmp: Path | None = None
            try:
                # A new file is written in place: nothing to replace, and a failure
                # below removes it. An existing one is replaced whole by a rename, so a
                # failed restore leaves it as it was.
                fd = os.open(
                    target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, entry.mode
                )
                chmod = entry.mode & umask != 0
            except FileExistsError:
                if target.is_dir() and not target.is_symlink():
                    raise IntegrityError(
                        f"restore: {target} is a directory; remove it first"
                    ) from None
                tmp = target.with_name(f".{target.name}.bastion-restore")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                chmod = True
            try:
                for chunk in entry.chunks:
                    data = self.fetch(chunk.id, context=f"{snap.ref}:{path}")
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    if progress is not None:
                        progress(len(data))
                if chmod:  # a new file already has its mode unless the umask took bits
                    os.fchmod(fd, entry.mode)
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    (tmp or target).unlink()
                raise
            os.close(fd)
            if tmp is not None:
                tmp.replace(target)
            return entry.size

        def restore_batch(paths: list[str]) -> int:
            return sum(restore_file(path) for path in paths)

        # Small files go to the pool in batches, as on the write path.
        batches: list[list[str]] = []
        batch: list[str] = []
        batch_bytes = 0
        for path in sorted(snap.files):
            size = snap.files[path].size
            if size >= _BATCH_BELOW:
                batches.append([path])
                continue
            batch.append(path)
            batch_bytes += size
            if len(batch) >= _BATCH_COUNT or batch_bytes >= _BATCH_BYTES:
                batches.append(batch)
                batch, batch_bytes = [], 0
        if batch:
            batches.append(batch)
        with ThreadPoolExecutor(_WORKERS, thread_name_prefix="vault-restore") as pool:
            total = sum(pool.map(restore_batch, batches))
        seconds = time.perf_counter() - started
        self._emit(
            "vault.restored",
            subject=snap.name,
            ref=snap.ref,
            snapshot=snap.id,
            dest=str(dest),
            files=len(snap.files),
            bytes=total,
            seconds=round(seconds, 6),
        )
        return snap

    # ------------------------------------------------------------- maintenance

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

    def lineage(self, ref: str) -> dict[str, Any]:
        """What produced ``ref``: ``{root, nodes: {ref: info}, edges: [[child, parent]]}``."""
        return _lineage(self, ref)

    def _admin(self) -> Signer:
        """The admin key, checked against the one pinned in the replicas at first commit."""
        if self.admin_key_path is None:
            raise ScopeError(
                "deleting needs the vault's admin key (vault.admin_key in bastion.yaml); "
                "a writer key can add but not destroy"
            )
        admin = Signer(self.admin_key_path, role="admin")
        for store in self.available_stores():
            with contextlib.suppress(NotFoundError):
                if store.get(_ADMIN_PIN) != admin.public_bytes():
                    raise ScopeError(
                        f"{self.admin_key_path} is not this vault's admin key (pinned in "
                        f"{store.url}/{_ADMIN_PIN}); nothing was deleted"
                    )
        return admin

    def _pin_admin(self, stores: Sequence[Store]) -> None:
        if self.admin_key_path is None:
            return
        try:
            raw = Verifier.for_key_file(self.admin_key_path, "admin").raw
        except UsageError:
            return  # no admin key here (a writer-only host): another host pins it
        for store in stores:
            with contextlib.suppress(OSError, BastionError):
                store.put(_ADMIN_PIN, [raw], durable=True)

    def gc(
        self,
        *,
        keep_last: int | None = None,
        keep_within_days: float | None = None,
        grace_s: float = 3600.0,
    ) -> dict[str, int]:
        """Drop old versions and every object no remaining snapshot needs. Needs the
        admin key.

        A version is dropped only when every rule given lets it go: beyond the newest
        ``keep_last`` of its name, older than ``keep_within_days``. Whatever the rules,
        a labelled version (``@latest``, ``@prod``) and every snapshot a kept one names
        in its lineage (transitively: the data and code a kept model was made from) stay,
        so a model can always be rebuilt. No rule (here or in the manifest's
        ``vault.retention``): no version is dropped, only unneeded objects.

        ``grace_s``: objects younger than this are kept, so a commit in flight (whose
        objects are written before its snapshot) is never robbed.
        """
        self._admin()
        if keep_last is None and "keep_last" in self._retention:
            keep_last = int(self._retention["keep_last"])
        if keep_within_days is None and "keep_within_days" in self._retention:
            keep_within_days = float(self._retention["keep_within_days"])
        for value, flag in ((keep_last, "keep_last"), (keep_within_days, "keep_within_days")):
            if value is not None and value <= 0:
                raise UsageError(f"vault gc: {flag} must be positive, got {value}")
        dropped = removed = kept = 0
        with self._publish_lock():
            stores = self.available_stores()
            everything = {name: self.versions(name) for name in self.names()}
            keep: set[tuple[str, int]] = set()
            for name, snaps in everything.items():
                labelled = set(self.labels(name).values())
                cut = len(snaps) - keep_last if keep_last else None
                for index, snap in enumerate(snaps):
                    old_by_count = cut is not None and index < cut
                    age_days = (datetime.now(UTC) - snap.created).total_seconds() / 86400
                    old_by_age = keep_within_days is not None and age_days > keep_within_days
                    rules = [r for r in (keep_last, keep_within_days) if r is not None]
                    goes = (
                        bool(rules)
                        and (old_by_count or keep_last is None)
                        and (old_by_age or keep_within_days is None)
                    )
                    if not goes or snap.version in labelled:
                        keep.add((name, snap.version))
            # lineage of what stays stays too (to a fixpoint: lineage of lineage)
            by_key = {(n, s.version): s for n, snaps in everything.items() for s in snaps}
            todo = list(keep)
            while todo:
                source = by_key.get(todo.pop())
                if source is None:
                    continue
                for ref in source.lineage:
                    with contextlib.suppress(BastionError):
                        target = self.snapshot(ref)
                        named = (target.name, target.version)
                        if named not in keep:
                            keep.add(named)
                            todo.append(named)
            needed: set[str] = set()
            for (name, version), snap in sorted(by_key.items()):
                if (name, version) in keep:
                    needed.update(snap.chunk_ids())
                    continue
                for store in stores:
                    store.delete(_version_key(name, version))
                dropped += 1
                self._emit("vault.deleted", subject=name, ref=snap.ref, snapshot=snap.id)
            horizon = time.time() - grace_s
            for store in stores:
                for key in list(store.list("objects/")):
                    digest = key.rsplit("/", 1)[-1]
                    if digest in needed:
                        kept += 1
                        continue
                    if isinstance(store, LocalStore):
                        with contextlib.suppress(FileNotFoundError):
                            if (store.root / key).stat().st_mtime > horizon:
                                continue
                    if store.delete(key):
                        removed += 1
                if isinstance(store, LocalStore):
                    store.clean_tmp()
        result = {"snapshots_deleted": dropped, "objects_deleted": removed, "objects_kept": kept}
        self._emit("vault.gc", subject=self.subject, **result)
        return result

    @staticmethod
    def _clean(root: Path, keep: set[Path]) -> None:
        for dirpath, dirnames, filenames in os.walk(root, topdown=False):
            for filename in filenames:
                path = Path(dirpath) / filename
                if path not in keep:
                    path.unlink()
            for dirname in dirnames:
                path = Path(dirpath) / dirname
                if not any(k.is_relative_to(path) for k in keep):
                    with contextlib.suppress(OSError):
                        path.rmdir()


def _lineage(vault: Vault, ref: str, depth: int = 32) -> dict[str, Any]:
    root = vault.snapshot(ref)
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[list[str]] = []
    todo: list[tuple[str, Snapshot | None, int]] = [(root.ref, root, 0)]
    while todo:
        key, snap, level = todo.pop()
        if key in nodes:
            continue
        if snap is None:
            nodes[key] = {"ref": key, "in_vault": False}
            continue
        nodes[key] = {
            "ref": snap.ref,
            "in_vault": True,
            "id": snap.id,
            "created": snap.created.isoformat(timespec="seconds"),
            "meta": dict(snap.meta),
            "files": len(snap.files),
            "bytes": snap.size,
        }
        if level >= depth:
            continue
        for parent in snap.lineage:
            try:
                found: Snapshot | None = vault.snapshot(parent)
            except (NotFoundError, IntegrityError):
                found = None
            target = found.ref if found is not None else parent
            edges.append([snap.ref, target])
            todo.append((target, found, level + 1))
    return {"root": root.ref, "nodes": nodes, "edges": edges}
