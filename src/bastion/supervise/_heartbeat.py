"""Heartbeats: the supervised process proves it is making progress by touching a file.

Owns: the heartbeat file protocol. The child calls ``Heartbeat.beat()`` (the checkpoint
API's step calls do); the supervisor reads the file's mtime.

Why a file and not a pipe or socket: the child must outlive its supervisor (the issue asks
that a killed supervisor can be started again and pick the job up). A pipe whose reader
died turns the child's next beat into EPIPE/SIGPIPE and kills a healthy job; a file does
not care who reads it, survives a supervisor restart, and costs one ``utime`` syscall
(about a microsecond), rate-limited to ``min_interval_s``. torchelastic's FileTimerServer
makes the same choice of a filesystem rendezvous for the same reason.

Must never: block the training loop or raise from ``beat()`` (a heartbeat that cannot be
written is reported by the supervisor as a missing heartbeat, not by crashing training).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

__all__ = [
    "EXITING",
    "HEARTBEAT_ENV",
    "Heartbeat",
    "heartbeat_age",
    "heartbeat_note",
    "heartbeat_progress",
]

HEARTBEAT_ENV = "BASTION_HEARTBEAT_FILE"
INTERVAL_ENV = "BASTION_HEARTBEAT_MIN_INTERVAL_S"
EXITING = "exiting"  # the note a child beats with when it is shutting down on purpose


class Heartbeat:
    """The child's side. ``Heartbeat.from_env()`` is a no-op when not supervised."""

    def __init__(self, path: str | Path | None, *, min_interval_s: float = 0.05) -> None:
        self.path = Path(path) if path else None
        self.min_interval_s = min_interval_s
        self._last = -1e18
        self.beats = 0

    @classmethod
    def from_env(cls, *, min_interval_s: float | None = None) -> Heartbeat:
        """``$BASTION_HEARTBEAT_FILE``; ``$BASTION_HEARTBEAT_MIN_INTERVAL_S`` overrides the
        rate limit (0: every beat is written, which fault tests use to aim precisely)."""
        if min_interval_s is None:
            try:
                min_interval_s = float(os.environ.get(INTERVAL_ENV, "0.05"))
            except ValueError:
                min_interval_s = 0.05
        return cls(os.environ.get(HEARTBEAT_ENV) or None, min_interval_s=min_interval_s)

    def beat(self, progress: int | None = None, *, note: str = "", force: bool = False) -> None:
        """Touch the file; with ``progress`` (e.g. the step), write it there too, so the
        supervisor knows how far a job got before it died (steps lost). ``note`` is a
        short word of state (the checkpointer writes ``saving=<step>`` while a save is in
        flight)."""
        if self.path is None:
            return
        now = time.monotonic()
        if not force and now - self._last < self.min_interval_s:
            return
        self._last = now
        try:
            if progress is None:
                os.utime(self.path)
            else:
                # Fixed width, one pwrite: a reader never sees a half-written number.
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
                try:
                    line = f"{progress:<20d} {note[:42]:<42}\n".encode()
                    os.pwrite(fd, line, 0)
                finally:
                    os.close(fd)
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                self.path.touch()
        except OSError:
            return
        self.beats += 1


def heartbeat_age(path: Path, *, now: float | None = None) -> float | None:
    """Seconds since the last beat (wall clock, as mtime is), or ``None`` if never beaten."""
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    return max(0.0, (time.time() if now is None else now) - mtime)


def heartbeat_progress(path: Path) -> int | None:
    """The last progress number the child wrote with ``beat(progress)``, if any."""
    try:
        text = path.read_text()[:21].strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def heartbeat_note(path: Path) -> str:
    """The note written with the last ``beat(progress, note=...)`` ("" if none)."""
    try:
        return path.read_text()[21:64].strip()
    except OSError:
        return ""
