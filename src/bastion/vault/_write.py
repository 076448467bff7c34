"""The commit's write path: a tree of files becomes chunks on every replica of a ``Write``.

Owns: how a commit's files are split into jobs (whole small files in batches, big files
and buffers cut here with each chunk a job, small chunks batched), who runs the jobs (a
thread pool, or ``IngestWorkers`` processes for many whole files), how many jobs may be
in flight, and gathering each file's chunk list and the byte counts.

Must never: report a file stored when one of its chunks failed on every replica of the
quorum (a failure drops that replica out of the ``Write``; the caller checks the quorum
before it publishes), or keep a source's memory map open after the commit returns.

Why this shape: a commit of a few small files in all (what would be one batch) is
written in the calling thread: starting a pool thread and handing the job over costs
more than the job. Otherwise files under 16 MiB go to a worker whole, in batches of up
to 64 files or 1 MiB, because a pool hand-off costs about as much as writing a 4 KiB
object and a dataset can be mostly small files; the worker opens, reads, cuts, hashes,
compresses and writes them, so reading and CDC run on every core instead of the calling
thread. With
256 or more of them, on replicas another process can reach (``Store.worker_url``), the
workers are processes (see ``_ingest``: Python's per-object work holds the GIL). Bigger
files (checkpoints, weights) and in-memory buffers are cut lazily here and each chunk is
a thread job, so one big file spreads over every worker from its first chunk (os.write,
zstd and BLAKE3 release the GIL, so the replicas' writes overlap).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from bastion.errors import NotFoundError
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
from bastion.vault._replicas import Write
from bastion.vault._snapshot import ChunkRef, FileEntry

__all__ = [
    "BATCH_BELOW",
    "BATCH_BYTES",
    "BATCH_COUNT",
    "IO_WORKERS",
    "PROCESS_FILES",
    "PROCESS_WORKERS",
    "WHOLE_BELOW",
    "Written",
    "write_files",
]

# Threads for put: chunks of big files and buffers (checkpoints) are hashed in C and
# written with O_DIRECT, each write waiting on the disk, so throughput follows the writes
# in flight (16 threads on 2 cores came closest to raw parallel O_DIRECT of the same
# bytes; see benchmarks/checkpoint.py).
IO_WORKERS = max(16, 4 * (os.cpu_count() or 2))
# Worker processes for many whole files (see _ingest): one per core.
PROCESS_WORKERS = max(2, os.cpu_count() or 2)
# A commit with at least this many whole files (Path sources under WHOLE_BELOW) on
# replicas workers can reach stores them in worker processes: below it, starting them
# (about 0.1 s) costs more than the GIL does.
PROCESS_FILES = 256
# Chunks under BATCH_BELOW (whole small files, in practice) go to the pool in batches
# of up to BATCH_COUNT items or BATCH_BYTES bytes.
BATCH_BELOW = 256 << 10
BATCH_COUNT = 64
BATCH_BYTES = 1 << 20
# Files (Path sources) under WHOLE_BELOW go to workers whole, batched like small
# chunks; bigger ones are cut here so their chunks spread over every worker.
WHOLE_BELOW = 16 << 20

_T = TypeVar("_T")


@dataclass
class Written:
    """What a commit's files became: each file's entry, and what the chunks cost."""

    entries: dict[str, FileEntry] = field(default_factory=dict)
    bytes_written: int = 0  # stored bytes per replica that lacked a chunk, summed
    chunks_new: int = 0
    chunks_dedup: int = 0

    def add(self, path: str, size: int, mode: int, results: list[ChunkResult]) -> None:
        for result in results:
            self.bytes_written += result.stored
            if result.stored:
                self.chunks_new += 1
            else:
                self.chunks_dedup += 1
        chunks = tuple(ChunkRef(r.digest, r.size) for r in results)
        self.entries[path] = FileEntry(size, chunks, mode)


class _Batch(Generic[_T]):
    """Items gathered until there are ``BATCH_COUNT`` of them or ``BATCH_BYTES``, then
    handed to ``hand_off`` as one job."""

    def __init__(self, hand_off: Callable[[list[_T]], None]) -> None:
        self._hand_off = hand_off
        self.items: list[_T] = []
        self._bytes = 0

    def add(self, item: _T, size: int) -> None:
        self.items.append(item)
        self._bytes += size
        if len(self.items) >= BATCH_COUNT or self._bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.items:
            items, self.items, self._bytes = self.items, [], 0
            self._hand_off(items)


class _Slot:
    """Where one chunk's result will be: the job that stores it, and its place there."""

    __slots__ = ("future", "index")

    def __init__(self) -> None:
        self.future: Future[list[ChunkResult]] | None = None
        self.index = 0

    def result(self) -> ChunkResult:
        assert self.future is not None, "a chunk was never handed to a job"
        return self.future.result()[self.index]


class _FileWriter:
    """One commit's jobs: hands files and chunks out, then gathers what they became."""

    def __init__(
        self,
        write: Write,
        pool: ThreadPoolExecutor,
        workers: IngestWorkers | None,
        *,
        seal_key: bytes,
        compress: bool,
        chunk_size: int | None,
    ) -> None:
        self.write = write
        self.pool = pool
        self.workers = workers
        self.seal_key = seal_key
        self.compress = compress
        self.chunk_size = chunk_size
        # Bound the jobs in flight: views into mmaps cost nothing, compressed copies and
        # batches of small files (read into memory) do.
        self.slots = threading.BoundedSemaphore(IO_WORKERS * 2)
        self.whole: dict[str, tuple[Future[list[FileResult]], int]] = {}
        self.cut: list[tuple[str, int, int, list[_Slot]]] = []
        self.opened: list[tuple[mmap.mmap, memoryview]] = []
        self.chunks: _Batch[tuple[memoryview, _Slot]] = _Batch(self._submit_chunks)
        self.files: _Batch[tuple[str, FileSource]] = _Batch(self._submit_files)

    # ------------------------------------------------------------- handing out

    def add(self, path: str, source: FileSource) -> None:
        if isinstance(source, Path):
            try:
                size = source.stat().st_size
            except FileNotFoundError:
                raise NotFoundError(f"{source}: no such file to put in the vault") from None
            if size < WHOLE_BELOW:
                self.files.add((path, source), size)
                return
        elif self.workers is not None and isinstance(source, bytes | bytearray | memoryview):
            # with worker processes, a small buffer (an upload's file the vault server
            # received) goes to them whole too, through their pipe
            size = memoryview(source).nbytes
            if size < WHOLE_BELOW:
                self.files.add((path, source), size)
                return
        view, mode, mapped = open_source(source)
        if mapped is not None:
            self.opened.append((mapped, view))
        slots: list[_Slot] = []
        for offset, length in boundaries_of(view, self.chunk_size):
            slot = _Slot()
            slots.append(slot)
            chunk = view[offset : offset + length]
            if length >= BATCH_BELOW:
                self._submit_chunks([(chunk, slot)])
            else:
                self.chunks.add((chunk, slot), length)
        self.cut.append((path, len(view), mode, slots))

    def flush(self) -> None:
        self.chunks.flush()
        self.files.flush()

    def _submit_chunks(self, items: list[tuple[memoryview, _Slot]]) -> None:
        self.slots.acquire()
        future = self.pool.submit(self._store_chunks, [view for view, _ in items])
        for index, (_, slot) in enumerate(items):
            slot.future, slot.index = future, index

    def _submit_files(self, items: list[tuple[str, FileSource]]) -> None:
        future: Future[list[FileResult]]
        if self.workers is not None:
            sent: list[str | pickle.PickleBuffer] = []
            buffers = False
            for _, source in items:
                if isinstance(source, Path):
                    sent.append(str(source.absolute()))
                else:
                    sent.append(pickle.PickleBuffer(source))
                    buffers = True
            if buffers:
                # bytes wait in the workers' queue until a pipe takes them: bound them as
                # the thread jobs are bounded
                self.slots.acquire()
            future = self.workers.submit(sent)
            if buffers:
                future.add_done_callback(lambda _: self.slots.release())
        else:
            self.slots.acquire()
            future = self.pool.submit(self._store_files, [s for _, s in items])
        for index, (path, _) in enumerate(items):
            self.whole[path] = (future, index)

    # ------------------------------------------------------------ the jobs

    def _note(self, results: list[ChunkResult]) -> None:
        for result in results:
            for index, why in result.failed.items():
                self.write.fail(index, why)

    def _store_chunks(self, views: list[memoryview]) -> list[ChunkResult]:
        try:
            results = []
            for done, view in enumerate(views):
                try:
                    result = store_chunk(
                        view,
                        self.write.stores,
                        skip=self.write.failed,
                        compress=self.compress,
                        seal_key=self.seal_key,
                        align=bool(self.chunk_size),
                    )
                except BaseException:
                    for rest in views[done:]:
                        rest.release()
                    raise
                view.release()
                self._note([result])
                results.append(result)
            return results
        finally:
            self.slots.release()

    def _store_files(self, sources: list[FileSource]) -> list[FileResult]:
        try:
            out = []
            for source in sources:
                result = store_file(
                    source,
                    self.write.stores,
                    skip=self.write.failed,
                    compress=self.compress,
                    seal_key=self.seal_key,
                    chunk_size=self.chunk_size,
                )
                self._note(result[2])
                out.append(result)
            return out
        finally:
            self.slots.release()

    # ------------------------------------------------------------- gathering

    def gather(self, paths: list[str]) -> Written:
        done = Written()
        for path, (future, index) in self.whole.items():
            size, mode, results = future.result()[index]
            if self.workers is not None:
                self._note(results)  # a worker process's failures reach us only here
            done.add(path, size, mode, results)
        for path, size, mode, slots in self.cut:
            done.add(path, size, mode, [slot.result() for slot in slots])
        done.entries = {path: done.entries[path] for path in paths}  # documents list them sorted
        return done

    def release(self) -> None:
        for mapped, view in self.opened:
            view.release()
            with contextlib.suppress(BufferError):
                mapped.close()


def _use_processes(files: Mapping[str, FileSource], write: Write, forced: bool | None) -> bool:
    if forced is False or any(s.worker_url is None for s in write.stores):
        return False
    if forced is None:
        whole = sum(1 for source in files.values() if isinstance(source, Path))
        return whole >= PROCESS_FILES and (os.cpu_count() or 1) >= 2
    return True


def _one_batch(files: Mapping[str, FileSource]) -> bool:
    """Whether ``files`` would make a single job: few, and small in all."""
    if len(files) > BATCH_COUNT:
        return False
    total = 0
    for source in files.values():
        if isinstance(source, Path):
            try:
                total += source.stat().st_size
            except OSError:
                return False  # the writer says what is wrong with it
        elif isinstance(source, bytes | bytearray | memoryview):
            total += memoryview(source).nbytes
        else:
            return False  # not a source: the writer says so
        if total > BATCH_BYTES:
            return False
    return True


def _write_inline(
    write: Write,
    files: Mapping[str, FileSource],
    paths: list[str],
    *,
    seal_key: bytes,
    compress: bool,
    chunk_size: int | None,
) -> Written:
    """The one job a pool would run, run here (no thread to start, no hand-off)."""
    done = Written()
    for path in paths:
        size, mode, results = store_file(
            files[path],
            write.stores,
            skip=write.failed,
            compress=compress,
            seal_key=seal_key,
            chunk_size=chunk_size,
        )
        for result in results:
            for index, why in result.failed.items():
                write.fail(index, why)
        done.add(path, size, mode, results)
    return done


def write_files(
    write: Write,
    files: Mapping[str, FileSource],
    paths: list[str],
    *,
    seal_key: bytes,
    compress: bool,
    chunk_size: int | None,
    processes: bool | None,
    on_no_processes: Callable[[str], object],
) -> Written:
    """Store every file of ``files`` (in ``paths`` order) on the replicas of ``write``.

    ``processes``: None decides (many whole files on replicas workers can reach), True or
    False forces it. ``on_no_processes(reason)`` is told when worker processes could not
    start and threads did the work.
    """
    if not processes and _one_batch(files):
        # a few small files (a pipeline stage's output, a label's worth of metadata)
        return _write_inline(
            write, files, paths, seal_key=seal_key, compress=compress, chunk_size=chunk_size
        )
    workers: IngestWorkers | None = None
    if _use_processes(files, write, processes):
        try:
            workers = IngestWorkers(
                write.stores,
                seal_key=seal_key,
                compress=compress,
                count=PROCESS_WORKERS,
                chunk_size=chunk_size,
            )
        except OSError as exc:
            # no processes here (a sandbox, a process limit): threads do the same work
            on_no_processes(f"{type(exc).__name__}: {exc}")
    with (
        ThreadPoolExecutor(IO_WORKERS, thread_name_prefix="vault-put") as pool,
        workers or contextlib.nullcontext(),
    ):
        writer = _FileWriter(
            write, pool, workers, seal_key=seal_key, compress=compress, chunk_size=chunk_size
        )
        try:
            for path in paths:
                writer.add(path, files[path])
            writer.flush()
            return writer.gather(paths)
        finally:
            pool.shutdown(wait=True)
            writer.release()
