"""``bastion events --follow --since AGE`` prints only what is recent and what comes next
(issue 12, item 12: it printed the whole log from event #1 when nothing recent matched
at first)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from bastion.events import EventLog


def _age_everything(db: Path, seconds: float) -> None:
    # Real old events: the rows' wall-clock time moved back, as if written an hour ago.
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE events SET ts = ts - ?", (seconds,))


class _EmitOnFirstWait:
    """A ``stop`` for ``EventLog.follow`` that appends one event when the follower first
    waits (so its first poll has certainly come back empty) and stops it at the second."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.waits = 0
        self._stop = threading.Event()

    def is_set(self) -> bool:
        return self._stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        if self.waits == 1:
            self.log.emit("test.new", "after")
        else:
            self._stop.set()
        return self._stop.is_set()


def test_follow_since_skips_old_events_after_an_empty_first_poll(tmp_path: Path) -> None:
    with EventLog.in_state_dir(tmp_path) as log:
        for i in range(5):
            log.emit("test.old", "before", i=i)
        _age_everything(tmp_path / "events.db", 3600)
        stop = _EmitOnFirstWait(log)
        seen = list(log.follow(since=log.query()[-1].ts + 60, stop=stop, poll_s=0))  # type: ignore[arg-type]
    assert [e.kind for e in seen] == ["test.new"]


def _wait_polling(pid: int, db: Path) -> None:
    """Until the follower has the log open and sleeps between polls: its first poll, which
    found nothing recent, is then done (emitting earlier would let that poll see the new
    event, and hide the bug)."""
    child = psutil.Process(pid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        opened = any(Path(f.path) == db for f in child.open_files())
        if opened and child.status() == psutil.STATUS_SLEEPING:
            return
        time.sleep(0.01)
    raise AssertionError("the follower never opened the event log")


def test_cli_follow_since_5s_prints_only_new_events(tmp_path: Path) -> None:
    with EventLog.in_state_dir(tmp_path) as log:
        for i in range(5):
            log.emit("test.old", "before", i=i)
    _age_everything(tmp_path / "events.db", 3600)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bastion",
            "events",
            "--state-dir",
            str(tmp_path),
            "--follow",
            "--since",
            "5s",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_polling(proc.pid, tmp_path / "events.db")
        with EventLog.in_state_dir(tmp_path) as log:
            log.emit("test.new", "after")
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert (first["kind"], first["subject"]) == ("test.new", "after")
