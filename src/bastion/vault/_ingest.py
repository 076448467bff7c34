"""The write path's unit of work, and worker processes that run it for whole files.

Owns: storing one chunk on every replica that lacks it (hash, compress where it pays,
write once), opening a source (bytes, a view, or a file: read when small, mapped when
big), and ``IngestWorkers``: processes that open, cut, hash, compress and write batches
of whole files.

Must never: report a chunk as stored on a replica it was not written to, or leave a
worker process running after the vault call that started it returns.

Why processes: Python's per-object work (tens of microseconds of interpreter time per
object and replica, on top of the syscalls) holds the GIL, and with threads every GIL
hand-off around a syscall is a futex wake, so a dataset of many small files cannot keep
every core busy on threads. Worker processes run that work on every core. They are used
for many whole files on replicas another process can reach (``Store.worker_url``;
``Vault`` decides); in-memory buffers (checkpoints) and big files stay on threads, where
the work is in C and releases the GIL.

Why a pipe of pickles and not ``multiprocessing``: its ``spawn`` and ``forkserver``
start methods re-import the caller's ``__main__`` in every worker (a user's script
without a ``__name__`` guard would run again), and ``fork`` copies a process whose other
threads may hold locks. The workers run ``python -c`` importing only the vault's write
path. The pickles come from our own child over its private pipe.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import queue
import subprocess
import sys
import threading
from collections.abc import Container, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.errors import BastionError, NotFoundError, UnavailableError, UsageError
from bastion.store import Store, StoreStatistics, buffer_address, open_store
from bastion.vault._objects import (
    ALIGNED_HEADER,
    Encoded,
    encode,
    fixed_boundaries,
    hash_bytes,
    iter_boundaries,
    object_key,
)

if TYPE_CHECKING:
    from bastion.vault._snapshot import FileEntry

__all__ = [
    "ChunkResult",
    "FileResult",
    "FileSource",
    "IngestWorkers",
    "boundaries_of",
    "open_source",
    "store_chunk",
    "store_file",
]

FileSource = bytes | bytearray | memoryview | Path
_MMAP_FROM = 1 << 20
_ALIGNED_FROM = 1 << 20  # smaller chunks are not worth a 4 KiB header block


def boundaries_of(view: memoryview, chunk_size: int | None) -> Iterator[tuple[int, int]]:
    """Where ``view`` is cut: fixed ``chunk_size`` pieces if given, else CDC."""
    if chunk_size:
        return fixed_boundaries(len(view), chunk_size)
    return iter_boundaries(view)


def _starts_aligned(view: memoryview) -> bool:
    address = buffer_address(view)
    return address is not None and address % ALIGNED_HEADER == 0


@dataclass
class ChunkResult:
    digest: str
    size: int
    stored: int  # bytes written per replica that lacked it (0 if every replica had it)
    failed: dict[int, str] = field(default_factory=dict)


# (file size, mode, its chunks in order)
FileResult = tuple[int, int, list[ChunkResult]]
# a batch for a worker process: paths it opens or buffers it is sent, and its results
_Job = tuple[Sequence[str | pickle.PickleBuffer], Future[list[FileResult]]]


def store_chunk(
    view: memoryview,
    stores: Sequence[Store],
    *,
    skip: Container[int],
    compress: bool,
    seal_key: bytes | None,
    align: bool = False,
) -> ChunkResult:
    """Put one chunk on every replica (index not in ``skip``) that lacks it.

    ``align``: the chunk came from fixed-size cutting; if it is uncompressed, big and
    starts page-aligned in memory, it is stored in the aligned form (written without a
    copy, see ``_objects``).
    """
    digest = hash_bytes(view)
    key = object_key(digest)
    encoded: Encoded | None = None
    stored = 0
    errors: dict[int, str] = {}
    for index, store in enumerate(stores):
        if index in skip:
            continue
        try:
            if store.has(key):
                continue
            if encoded is None:
                aligned = (
                    align and not compress and len(view) >= _ALIGNED_FROM and _starts_aligned(view)
                )
                encoded = encode(
                    view, compress=compress, digest=digest, seal_key=seal_key, aligned=aligned
                )
            if store.put(key, encoded.parts(), durable=False):
                stored = encoded.size
        except (OSError, BastionError) as exc:
            errors[index] = f"{type(exc).__name__}: {exc}"
    return ChunkResult(digest, len(view), stored, errors)


_MEMORY_MODE = 0o600


def _read_all(fd: int, size: int) -> bytes:
    """The whole of a small file (one read in practice; loops if it grew or was short)."""
    data = os.read(fd, size + 1)
    if len(data) <= size:
        return data
    parts = [data]
    while block := os.read(fd, 1 << 20):
        parts.append(block)
    return b"".join(parts)


def open_source(source: FileSource) -> tuple[memoryview, int, mmap.mmap | None]:
    """A view of ``source``'s bytes, its mode, and the mapping to close after (if any)."""
    if isinstance(source, Path):
        try:
            fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFoundError(f"{source}: no such file to put in the vault") from None
        try:
            stat = os.fstat(fd)
            mode = stat.st_mode & 0o777
            if stat.st_size < _MMAP_FROM:
                return memoryview(_read_all(fd, stat.st_size)), mode, None
            mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        with contextlib.suppress(OSError, AttributeError):
            mapped.madvise(mmap.MADV_SEQUENTIAL)
        return memoryview(mapped), mode, mapped
    # Bytes in memory have no mode of their own: a restore makes them private (0600).
    if isinstance(source, memoryview):
        # always a view of our own: callers release what this returns, and releasing the
        # caller's own view (a checkpoint's staging buffer) would break it for them
        return (
            source.cast("B") if source.format != "B" or source.ndim != 1 else memoryview(source),
            _MEMORY_MODE,
            None,
        )
    if isinstance(source, bytes | bytearray):
        return memoryview(source), _MEMORY_MODE, None
    raise UsageError(f"cannot store a {type(source).__name__}; give bytes, memoryview or Path")


def tree_matches(files: Mapping[str, FileEntry], sources: Mapping[str, FileSource]) -> bool:
    """Would committing ``sources`` give exactly ``files`` (the same paths, sizes, modes and
    chunks, cut as a commit cuts them)? Reads and hashes, stores nothing."""
    if set(files) != set(sources):
        return False
    for path, source in sources.items():
        entry = files[path]
        view, mode, mapped = open_source(source)
        try:
            if len(view) != entry.size or mode != entry.mode:
                return False
            ids = []
            for offset, length in iter_boundaries(view):
                chunk = view[offset : offset + length]
                try:
                    ids.append(hash_bytes(chunk))
                finally:
                    chunk.release()
            if ids != [c.id for c in entry.chunks]:
                return False
        finally:
            view.release()
            if mapped is not None:
                with contextlib.suppress(BufferError):
                    mapped.close()
    return True


def store_file(
    source: FileSource,
    stores: Sequence[Store],
    *,
    skip: Container[int],
    compress: bool,
    seal_key: bytes | None,
    chunk_size: int | None = None,
) -> FileResult:
    """Open, cut, and store one whole file; return its size, mode and chunks."""
    view, mode, mapped = open_source(source)
    try:
        chunks = []
        for offset, length in boundaries_of(view, chunk_size):
            chunk = view[offset : offset + length]
            try:
                chunks.append(
                    store_chunk(
                        chunk,
                        stores,
                        skip=skip,
                        compress=compress,
                        seal_key=seal_key,
                        align=bool(chunk_size),
                    )
                )
            finally:
                chunk.release()
        return len(view), mode, chunks
    finally:
        view.release()
        if mapped is not None:
            with contextlib.suppress(BufferError):
                mapped.close()


class IngestWorkers:
    """Worker processes storing batches of whole files on replicas they reach themselves
    (through each store's ``worker_url``; every store must have one).

    ``submit(items)`` returns a future of one ``FileResult`` per item: a path the worker
    opens, or a buffer (``pickle.PickleBuffer``) whose bytes go through the worker's pipe
    (it raises the worker's NotFoundError for a file that vanished). Use as a context
    manager: leaving it stops and reaps every worker.
    """

    def __init__(
        self,
        stores: Sequence[Store],
        *,
        seal_key: bytes,
        compress: bool,
        count: int,
        chunk_size: int | None = None,
    ) -> None:
        self._stores = list(stores)
        self._jobs: queue.SimpleQueue[_Job | None]
        self._jobs = queue.SimpleQueue()
        self._procs: list[subprocess.Popen[bytes]] = []
        self._threads: list[threading.Thread] = []
        self._alive = 0
        self._lock = threading.Lock()
        urls = [s.worker_url for s in self._stores]
        if None in urls:
            raise UsageError("ingest worker processes need replicas with a worker_url")
        init = {
            "urls": urls,
            "seal_key": seal_key,
            "compress": compress,
            "chunk_size": chunk_size,
        }
        # The child imports this very package, wherever the parent found it (a script
        # may have put src/ on sys.path by hand).
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        try:
            for _ in range(count):
                proc = subprocess.Popen(
                    # -c, not -m: run as __main__, this module's classes would pickle
                    # under a name the parent cannot resolve.
                    [sys.executable, "-c", "from bastion.vault._ingest import _worker; _worker()"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    close_fds=True,
                    env=env,
                )
                self._procs.append(proc)
                self._alive += 1
                assert proc.stdin is not None
                pickle.dump(init, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                proc.stdin.flush()
                thread = threading.Thread(
                    target=self._feed, args=(proc,), name="vault-ingest", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> IngestWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, items: Sequence[str | pickle.PickleBuffer]) -> Future[list[FileResult]]:
        fut: Future[list[FileResult]] = Future()
        with self._lock:
            if not self._alive:
                fut.set_exception(UnavailableError("every vault ingest worker has died"))
                return fut
            self._jobs.put((items, fut))
        return fut

    def _feed(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None
        assert proc.stdout is not None
        while (job := self._jobs.get()) is not None:
            items, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                pickle.dump(items, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                proc.stdin.flush()
                status, payload, stats = pickle.load(proc.stdout)  # noqa: S301 - our child's pipe
            except Exception as exc:  # any failure here fails the job; it never hangs it
                proc.kill()  # a worker whose reply cannot be read takes no more jobs
                code = proc.wait()
                fut.set_exception(
                    UnavailableError(
                        f"vault ingest worker {proc.pid} died or sent an unreadable reply "
                        f"({type(exc).__name__}: {exc}; exit status {code})"
                    )
                )
                self._died()
                return
            for store, delta in zip(self._stores, stats, strict=True):
                store.absorb_statistics(delta)
            if status == "ok":
                fut.set_result(payload)
            elif status == "missing":
                fut.set_exception(NotFoundError(payload))
            else:
                fut.set_exception(UnavailableError(f"vault ingest worker {proc.pid}: {payload}"))

    def _died(self) -> None:
        # A dead worker takes no more jobs; the others take the rest. When none is left,
        # queued jobs fail now rather than wait forever.
        with self._lock:
            self._alive -= 1
            if not self._alive:
                self._drain("every vault ingest worker has died")

    def _drain(self, why: str) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None and job[1].set_running_or_notify_cancel():
                job[1].set_exception(UnavailableError(why))

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()
        with self._lock:
            self._alive = 0
            self._drain("vault ingest workers stopped")
        for proc in self._procs:
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._threads.clear()
        self._procs.clear()


def _worker() -> None:
    """Serve batches from the parent until its end of the pipe closes."""
    inp = sys.stdin.buffer
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but replies may reach the parent's pipe
    try:
        init: dict[str, Any] = pickle.load(inp)  # noqa: S301 - our parent's pipe
    except EOFError:
        return  # the parent died before it said what to do
    stores = [open_store(url, create=False) for url in init["urls"]]
    seal_key: bytes = init["seal_key"]
    compress: bool = init["compress"]
    chunk_size: int | None = init["chunk_size"]
    failed: set[int] = set()  # replicas that failed a write: skipped from then on
    while True:
        try:
            items: list[str | bytes | bytearray] = pickle.load(inp)  # noqa: S301 - our parent's pipe
        except EOFError:
            return
        before = [s.statistics() for s in stores]
        status: str
        payload: list[FileResult] | str
        try:
            results = []
            for item in items:
                result = store_file(
                    Path(item) if isinstance(item, str) else item,
                    stores,
                    skip=failed,
                    compress=compress,
                    seal_key=seal_key,
                    chunk_size=chunk_size,
                )
                for chunk in result[2]:
                    failed.update(chunk.failed)
                results.append(result)
            status, payload = "ok", results
        except NotFoundError as exc:
            status, payload = "missing", str(exc)
        except (OSError, BastionError) as exc:
            status, payload = "error", f"{type(exc).__name__}: {exc}"
        after = [s.statistics() for s in stores]
        deltas: list[StoreStatistics] = [a.since(b) for a, b in zip(after, before, strict=True)]
        try:
            pickle.dump((status, payload, deltas), out, protocol=pickle.HIGHEST_PROTOCOL)
            out.flush()
        except BrokenPipeError:
            return  # the parent is gone: what was written is an orphan, never published
