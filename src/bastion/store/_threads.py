"""Kept threads for running a few blocking I/O calls at once (fsyncs, one put per replica).

Owns: ``IoThreads``, a lazily made thread pool that runs a short list of jobs at once
and returns when every one has ended.

Why: a durable write is a chain of fsyncs, and on a busy disk each one waits for a
journal commit and a cache flush of its own; fsyncs issued at once share them (the
journal's group commit) and overlap in the device's queue, so independent ones cost
about one instead of their sum. The threads are kept because starting one costs about
as much as a small fsync on a quiet disk.

Must never: let a job wait on the same ``IoThreads`` (a full pool would deadlock: each
layer has its own, and a store's jobs are leaves), or leave a job running after
``run_all`` returns.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

__all__ = ["IoThreads"]

_T = TypeVar("_T")


class IoThreads:
    """Up to ``workers`` kept threads named ``name-N``, made on first use and made again
    in a child after ``fork`` (threads do not survive it)."""

    def __init__(self, workers: int, name: str) -> None:
        self._workers = workers
        self._name = name
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._pool = None

    def run_all(self, jobs: Sequence[Callable[[], _T]]) -> list[_T]:
        """Run ``jobs`` at once (the first in this thread, the rest on the pool) and
        return their results in order, once every one has ended. The first job that
        raised raises."""
        if len(jobs) <= 1:
            return [job() for job in jobs]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix=self._name)
            pool = self._pool
        futures = [pool.submit(job) for job in jobs[1:]]
        try:
            first = jobs[0]()
        finally:
            wait(futures)
        return [first, *(f.result() for f in futures)]
