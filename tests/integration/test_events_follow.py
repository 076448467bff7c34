"""``bastion events --follow --since AGE`` prints only what is recent and what comes next
(issue 12, item 12: it printed the whole log from event #1 when nothing recent matched
at first). Run on both backends (the ``log`` fixture)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from bastion.events import EventLog
from tests.pg_server import LogTarget


def _age_everything(log: LogTarget, seconds: float) -> None:
    # Real old events: the rows' wall-clock time moved back, as if written an hour ago.
    log.sql("UPDATE events SET ts = ts - ?", (seconds,))


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


def test_follow_since_skips_old_events_after_an_empty_first_poll(log: LogTarget) -> None:
    with EventLog.in_state_dir(log.state_dir) as opened:
        for i in range(5):
            opened.emit("test.old", "before", i=i)
        _age_everything(log, 3600)
        stop = _EmitOnFirstWait(opened)
        since = opened.query()[-1].ts + 60
        seen = list(opened.follow(since=since, stop=stop, poll_s=0))  # type: ignore[arg-type]
    assert [e.kind for e in seen] == ["test.new"]


def _polled(log: LogTarget, child: psutil.Process) -> bool:
    if log.backend == "sqlite":
        db = log.state_dir / "events.db"
        return any(Path(f.path) == db for f in child.open_files())
    # the follower's read connection is idle after its SELECT of events (its first poll)
    rows = log.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state = 'idle' AND query LIKE 'SELECT id, ts, mono_ns%%'"
    )
    return bool(rows[0][0])


def _wait_polling(pid: int, log: LogTarget) -> None:
    """Until the follower has read the log and sleeps between polls: its first poll, which
    found nothing recent, is then done (emitting earlier would let that poll see the new
    event, and hide the bug)."""
    child = psutil.Process(pid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _polled(log, child) and child.status() == psutil.STATUS_SLEEPING:
            return
        time.sleep(0.01)
    raise AssertionError("the follower never opened the event log")


def test_cli_follow_since_5s_prints_only_new_events(log: LogTarget) -> None:
    tmp_path = log.state_dir
    with EventLog.in_state_dir(tmp_path) as opened:
        for i in range(5):
            opened.emit("test.old", "before", i=i)
    _age_everything(log, 3600)
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
        _wait_polling(proc.pid, log)
        with EventLog.in_state_dir(tmp_path) as opened:
            opened.emit("test.new", "after")
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert (first["kind"], first["subject"]) == ("test.new", "after")
