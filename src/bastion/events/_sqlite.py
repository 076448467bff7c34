"""The event log's embedded backend: one SQLite file, ``<state_dir>/events.db`` (WAL).

Owns: the SQLite schema of ``events`` and its connection. Writers from other processes
wait for SQLite's lock (``busy_timeout``) rather than fail, so none is lost; ids are
given in commit order (one writer at a time), so a follower reading ``id > last`` never
skips a row committed late.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from bastion.errors import UsageError
from bastion.events._sql import Dialect, select

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    ts       REAL    NOT NULL,
    mono_ns  INTEGER NOT NULL,
    kind     TEXT    NOT NULL,
    subject  TEXT    NOT NULL DEFAULT '',
    segment  TEXT    NOT NULL DEFAULT '',
    data     TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_ts   ON events (ts);
CREATE INDEX IF NOT EXISTS events_kind ON events (kind, ts);
CREATE INDEX IF NOT EXISTS events_subject ON events (subject, ts);
CREATE INDEX IF NOT EXISTS events_kind_subject ON events (kind, subject, ts);
"""

_DIALECT = Dialect(param="?", host="''", glob=lambda kind: ("kind GLOB ?", kind))

Row = tuple[int, float, int, str, str, str, str, str]
"""id, ts, mono_ns, kind, subject, segment, data (JSON text), host."""


class SqliteBackend:
    """One SQLite file shared by the processes of one machine (``host`` is always "")."""

    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
        self._lock = threading.Lock()
        try:
            # Private to its owner: events name files, hosts and commands. A new state
            # directory is 0700 and the log 0600 (SQLite gives its -wal and -shm files
            # the database file's mode).
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Create it only if it is missing (O_EXCL): closing any descriptor of a file
            # drops every POSIX lock this process holds on it, so opening and closing an
            # existing log would silently unlock another connection of this process in
            # the middle of its transaction (the SQLite FAQ's "how to corrupt a database"
            # 2.2), and other processes then fail with "disk I/O error".
            with contextlib.suppress(FileExistsError):
                os.close(
                    os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                )
            self._conn = sqlite3.connect(
                self.path, timeout=60.0, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.OperationalError) as exc:
            raise UsageError(
                f"cannot open the event log {self.path}: {exc} "
                "(check state_dir in the manifest, or pass --state-dir)"
            ) from None
        self._conn.execute("PRAGMA busy_timeout = 60000")
        with self._lock:
            # switching a new log to WAL takes an exclusive lock, and SQLite answers
            # "locked" at once (no busy wait) when another process is creating the same
            # log at that moment: retried like the schema (seen with 6 writers at once)
            self._retrying(lambda: self._conn.execute("PRAGMA journal_mode = WAL"))
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._retrying(lambda: self._conn.executescript(_SCHEMA))

    def _retrying(self, op: Any) -> Any:
        # busy_timeout covers ordinary lock waits; schema creation racing in several new
        # processes can still report "locked" once, so try a few more times.
        for attempt in range(50):
            try:
                return op()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.01 * (attempt + 1))
        return None  # pragma: no cover

    def insert(
        self, *, ts: float, mono: int, kind: str, subject: str, segment: str, body: str, uid: str
    ) -> int:
        with self._lock:
            cur = self._retrying(
                lambda: self._conn.execute(
                    "INSERT INTO events (ts, mono_ns, kind, subject, segment, data) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (ts, mono, kind, subject, segment, body),
                )
            )
        return int(cur.lastrowid)

    def select(self, **where: Any) -> list[Row]:
        """Rows matching ``where`` (the filter of ``_sql.select``)."""
        sql, args = select(_DIALECT, **where)
        with self._lock:
            return list(self._retrying(lambda: self._conn.execute(sql, args).fetchall()))

    def last_id(self) -> int:
        with self._lock:
            row = self._retrying(
                lambda: self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
            )
        return int(row[0])

    def wait(self, timeout: float, stop: Any) -> None:
        """Until something may have been appended: SQLite has no notifications, so a poll."""
        if stop is not None:
            stop.wait(timeout)
        else:
            time.sleep(timeout)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
