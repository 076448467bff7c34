"""Event sink for the gateway: hands events to a writer thread so the event loop never
waits on SQLite.

Owns: one daemon thread and an unbounded-by-design ``SimpleQueue`` of *rare* events
(ejections, restarts, scaling, first use of a backend). Per-request facts go to Prometheus
counters, never here.

Must never: write from the event loop, or drop an event on shutdown (``close`` drains).
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

from bastion.events import EventLog

__all__ = ["EventSink"]

_STOP = object()


class EventSink:
    def __init__(self, state_dir: Path | None, *, segment: str = "") -> None:
        self.segment = segment
        self.emitted = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._log = EventLog.in_state_dir(state_dir) if state_dir is not None else None
        self._thread: threading.Thread | None = None
        if self._log is not None:
            self._thread = threading.Thread(target=self._drain, name="bastion-events", daemon=True)
            self._thread.start()

    def emit(self, kind: str, subject: str, **data: Any) -> None:
        """Queue an event. ``at_mono_ns`` records when it happened: the row's own
        ``mono_ns`` is when the writer thread got to it, a little later."""
        self.emitted += 1
        if self._log is not None:
            self._queue.put((kind, subject, {**data, "at_mono_ns": time.monotonic_ns()}))

    def _drain(self) -> None:
        assert self._log is not None
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            kind, subject, data = item
            try:
                self._log.emit(kind, subject=subject, segment=self.segment, **data)
            except Exception:  # noqa: S112 - a full disk must not kill the gateway's loop
                continue

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=10)
            self._thread = None
        if self._log is not None:
            self._log.close()
            self._log = None
