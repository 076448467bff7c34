"""SLI time series: per-second good/total counts and latency buckets, next to the event log.

Owns: the tables ``sli_s``, ``sli_m`` and ``sli_h`` in ``<state_dir>/events.db`` (one row
per service, backend and second, minute or hour), the gateway's in-memory accumulator
(``SliRecorder``), the writer thread that flushes it (``SliWriter``) and the reader the
evaluator sums windows with (``SqliteSli``).

A row counts the requests that *ended* in its second: ``good`` (not answered 5xx or 429),
``total``, and ``l0`` .. ``l11``, how many took at most each of ``BOUNDS_MS`` (the last
bucket is everything slower). The minute and hour rows are the sums of their seconds,
written in the same transaction, so a window of 30 days is read as about 720 hour rows, a
hundred minute rows and a hundred second rows at its ragged edges, not 2.6 million rows.

Must never: make the gateway's event loop wait on SQLite (``observe`` only adds to a dict;
complete seconds are handed to the writer thread as one batch); drop a second's counts on
shutdown (``close`` flushes); double-count a second written twice (rows add up on
conflict, each count is written once).
"""

from __future__ import annotations

import bisect
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "BOUNDS_MS",
    "NO_SLI",
    "Observe",
    "SliReader",
    "SliRecorder",
    "SliRow",
    "SliWriter",
    "SqliteSli",
    "Tally",
    "write_rows",
]

BOUNDS_MS: tuple[float, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
"""Upper bounds of the latency buckets, in milliseconds; one more bucket holds the rest."""
_NB = len(BOUNDS_MS) + 1
_COLS = ", ".join(f"l{i}" for i in range(_NB))
_UNITS = (("sli_s", 1), ("sli_m", 60), ("sli_h", 3600))

_SCHEMA = "\n".join(
    f"""CREATE TABLE IF NOT EXISTS {table} (
    service TEXT NOT NULL, t INTEGER NOT NULL, backend TEXT NOT NULL,
    good INTEGER NOT NULL, total INTEGER NOT NULL,
    {", ".join(f"l{i} INTEGER NOT NULL DEFAULT 0" for i in range(_NB))},
    PRIMARY KEY (service, t, backend)) WITHOUT ROWID;"""
    for table, _ in _UNITS
)


@dataclass(frozen=True, slots=True)
class Tally:
    """Counts summed over some span: ``good`` and ``total`` requests, and the latency
    buckets (``buckets[i]``: requests that took at most ``BOUNDS_MS[i]``, the last one the
    rest)."""

    good: int = 0
    total: int = 0
    buckets: tuple[int, ...] = (0,) * _NB

    def faster_than(self, threshold_ms: float) -> int:
        """Requests answered within ``threshold_ms``, counted by whole buckets: a threshold
        between two bounds counts only up to the lower one (never more than is known)."""
        k = bisect.bisect_right(BOUNDS_MS, threshold_ms)
        return sum(self.buckets[:k])

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.good + other.good,
            self.total + other.total,
            tuple(a + b for a, b in zip(self.buckets, other.buckets, strict=True)),
        )


@dataclass(frozen=True, slots=True)
class SliRow:
    """One second of one service's backend (``backend`` is "" when none answered)."""

    service: str
    t: int
    backend: str
    good: int
    total: int
    buckets: tuple[int, ...]


class SliReader(Protocol):
    """Sums of SLI rows; windows are ``[start, end)`` in whole Unix seconds."""

    def tally(self, service: str, start: int, end: int, *, backend: str | None = None) -> Tally:
        """The sum over ``[start, end)``, of one backend's rows if ``backend`` is given."""
        ...

    def slice_counts(
        self,
        service: str,
        start: int,
        end: int,
        size_s: int,
        *,
        need: float,
        threshold_ms: float | None,
    ) -> tuple[int, int]:
        """(bad slices, slices with traffic) over the slices of ``size_s`` (a multiple of
        60 that divides 3600) wholly inside the window: a slice is bad when fewer than
        ``need`` of its requests were good (answered within ``threshold_ms``, if given)."""
        ...

    def first_after(self, service: str, start: int) -> int | None:
        """The first second at or after ``start`` with a row."""
        ...

    def last(self, service: str) -> int | None:
        """The last second with a row."""
        ...


def write_rows(conn: Any, rows: Iterable[SliRow]) -> int:
    """Add ``rows`` (and their minute and hour sums) in one transaction; returns how many."""
    rolled: list[dict[tuple[str, int, str], list[int]]] = [{}, {}, {}]
    n = 0
    for row in rows:
        n += 1
        for level, (_, unit) in enumerate(_UNITS):
            key = (row.service, row.t - row.t % unit, row.backend)
            acc = rolled[level].get(key)
            if acc is None:
                rolled[level][key] = [row.good, row.total, *row.buckets]
            else:
                acc[0] += row.good
                acc[1] += row.total
                for i, b in enumerate(row.buckets):
                    acc[2 + i] += b
    marks = ", ".join("?" * (5 + _NB))
    cols = ("good", "total", *(f"l{i}" for i in range(_NB)))
    with conn:
        for level, (table, _) in enumerate(_UNITS):
            # qualified by the table: PostgreSQL calls a bare column ambiguous beside excluded
            adds = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in cols)
            conn.executemany(
                f"INSERT INTO {table} (service, t, backend, good, total, {_COLS}) "  # noqa: S608 - table names are ours
                f"VALUES ({marks}) ON CONFLICT (service, t, backend) DO UPDATE SET {adds}",
                [(s, t, b, *v) for (s, t, b), v in rolled[level].items()],
            )
    return n


def _open(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=60.0, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 60000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    for attempt in range(50):
        try:
            conn.executescript(_SCHEMA)
            break
        except sqlite3.OperationalError as exc:  # new databases racing in several processes
            if "locked" not in str(exc) or attempt == 49:
                raise
            time.sleep(0.01 * (attempt + 1))
    return conn


class SqliteSli:
    """The SLI tables of one events database, read (and written, for tests and the
    benchmark) directly. Thread-safe through one lock. ``path`` may also be the
    ``postgresql://`` URL of a shared log (the same SQL, through ``_sli_pg``)."""

    def __init__(self, path: str | Path) -> None:
        from bastion.events import EventLog

        self._lock = threading.Lock()
        self._conn: Any
        if isinstance(path, str) and path.startswith(("postgresql://", "postgres://")):
            from bastion.slo._sli_pg import open_pg

            self.path = Path()
            self._conn = open_pg(path)
            return
        self.path = Path(path)
        EventLog(self.path).close()  # create it as the log does (0600, in a 0700 dir)
        self._conn = _open(self.path)

    @classmethod
    def in_state_dir(cls, state_dir: str | Path) -> SqliteSli:
        """The SLI tables beside the log of ``state_dir`` (its PostgreSQL database when
        the manifest's ``events:`` names one)."""
        from bastion.events import url_of

        url = url_of(state_dir)
        return cls(url if url is not None else Path(state_dir) / "events.db")

    def write(self, rows: Iterable[SliRow]) -> int:
        with self._lock:
            return write_rows(self._conn, rows)

    def _sum(self, table: str, service: str, start: int, end: int, backend: str | None) -> Tally:
        sums = ", ".join(f"coalesce(sum({c}), 0)" for c in ("good", "total", *_COLS.split(", ")))
        sql = f"SELECT {sums} FROM {table} WHERE service = ? AND t >= ? AND t < ?"  # noqa: S608
        args: tuple[object, ...] = (service, start, end)
        if backend is not None:
            sql += " AND backend = ?"
            args += (backend,)
        row = self._conn.execute(sql, args).fetchone()
        return Tally(int(row[0]), int(row[1]), tuple(int(v) for v in row[2:]))

    def tally(self, service: str, start: int, end: int, *, backend: str | None = None) -> Tally:
        total = Tally()
        with self._lock:
            for table, lo, hi in _cover(start, end):
                total = total + self._sum(table, service, lo, hi, backend)
        return total

    def slice_counts(
        self,
        service: str,
        start: int,
        end: int,
        size_s: int,
        *,
        need: float,
        threshold_ms: float | None,
    ) -> tuple[int, int]:
        lo = -(-start // size_s) * size_s
        hi = end - end % size_s
        if hi <= lo:
            return 0, 0
        if threshold_ms is None:
            good = "good"
        else:
            k = bisect.bisect_right(BOUNDS_MS, threshold_ms)
            good = " + ".join(f"l{i}" for i in range(k)) or "0"
        # counted inside the database: a month of minutes is 43,200 rows, too many to hand to Python
        with self._lock:
            row = self._conn.execute(
                "SELECT count(*), coalesce(sum(CASE WHEN g < ? * n THEN 1 ELSE 0 END), 0) "  # noqa: S608 - column names are ours
                f"FROM (SELECT sum({good}) AS g, "
                "sum(total) AS n FROM sli_m WHERE service = ? AND t >= ? AND t < ? "
                "GROUP BY t / ?) AS slices WHERE n > 0",
                (need, service, lo, hi, size_s),
            ).fetchone()
        return int(row[1]), int(row[0])

    def series(self, service: str, start: int, end: int, *, step: int) -> list[tuple[int, Tally]]:
        """``service``'s tallies over ``[start, end)`` in buckets of ``step`` seconds (1, 60
        or 3600: one row table each), oldest first; buckets with no row are left out."""
        table = {1: "sli_s", 60: "sli_m", 3600: "sli_h"}.get(step)
        if table is None:
            raise ValueError(f"step {step}: use 1, 60 or 3600 seconds")
        sums = ", ".join(f"sum({c})" for c in ("good", "total", *_COLS.split(", ")))
        with self._lock:
            rows = self._conn.execute(
                f"SELECT t, {sums} FROM {table} WHERE service = ? AND t >= ? AND t < ? "  # noqa: S608
                "GROUP BY t ORDER BY t",
                (service, start, end),
            ).fetchall()
        return [
            (int(r[0]), Tally(int(r[1]), int(r[2]), tuple(int(v) for v in r[3:]))) for r in rows
        ]

    def backend_series(
        self, service: str, start: int, end: int, *, step: int
    ) -> list[tuple[int, str, Tally]]:
        """``service``'s tallies over ``[start, end)`` per backend, in buckets of ``step``
        seconds (read from the hour table when ``step`` is whole hours, the minute table
        when whole minutes, else the seconds): (bucket start, backend, tally), oldest
        first; buckets with no row are left out. The dashboard's charts read this."""
        if step < 1:
            raise ValueError(f"step {step}: at least 1 second")
        table = "sli_h" if step % 3600 == 0 else "sli_m" if step % 60 == 0 else "sli_s"
        sums = ", ".join(f"sum({c})" for c in ("good", "total", *_COLS.split(", ")))
        with self._lock:
            rows = self._conn.execute(
                f"SELECT (t / ?) * ?, backend, {sums} FROM {table} "  # noqa: S608 - our columns
                "WHERE service = ? AND t >= ? AND t < ? GROUP BY t / ?, backend ORDER BY 1, 2",
                (step, step, service, start, end, step),
            ).fetchall()
        return [
            (int(r[0]), str(r[1]), Tally(int(r[2]), int(r[3]), tuple(int(v) for v in r[4:])))
            for r in rows
        ]

    def first_after(self, service: str, start: int) -> int | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT min(t) FROM sli_s WHERE service = ? AND t >= ?", (service, start)
            ).fetchone()
        return None if row[0] is None else int(row[0])

    def last(self, service: str) -> int | None:
        with self._lock:
            row = self._conn.execute("SELECT max(t) FROM sli_s WHERE service = ?", (service,))
            got = row.fetchone()
        return None if got[0] is None else int(got[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _cover(start: int, end: int) -> list[tuple[str, int, int]]:
    """``[start, end)`` as whole hours in the middle, whole minutes beside them and single
    seconds at the edges: (table, from, to) ranges that add up to the window exactly."""
    out: list[tuple[str, int, int]] = []

    def split(lo: int, hi: int, level: int) -> None:
        if hi <= lo:
            return
        table, unit = _UNITS[level]
        if level == 0:
            out.append((table, lo, hi))
            return
        a = -(-lo // unit) * unit
        b = hi - hi % unit
        if b <= a:
            split(lo, hi, level - 1)
            return
        out.append((table, a, b))
        split(lo, a, level - 1)
        split(b, hi, level - 1)

    split(start, end, len(_UNITS) - 1)
    return out


class Observe(Protocol):
    """Where the gateway reports each finished request (one call, on its event loop)."""

    def observe(self, route: str, status: int, seconds: float, backend: str) -> None: ...


class _NoSli:
    def observe(self, route: str, status: int, seconds: float, backend: str) -> None:
        return None

    def __repr__(self) -> str:
        return "NO_SLI"


NO_SLI: Observe = _NoSli()
"""Records nothing: a gateway run without a state directory, or benchmarked without SLIs."""

_STOP = object()


class SliWriter:
    """A writer thread: takes batches of rows and writes them, so no caller waits on
    SQLite. A batch the database cannot take (a full disk) is counted in ``failed``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path) if not str(path).startswith("postgres") else Path()
        self.written = 0
        self.failed = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._pending = 0
        self._store = SqliteSli(path)
        self._thread = threading.Thread(target=self._drain, name="bastion-sli", daemon=True)
        self._thread.start()

    @classmethod
    def in_state_dir(cls, state_dir: str | Path) -> SliWriter:
        from bastion.events import url_of

        url = url_of(state_dir)
        return cls(url if url is not None else Path(state_dir) / "events.db")

    def put(self, rows: Sequence[SliRow]) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put(rows)

    def _drain(self) -> None:
        while True:
            rows = self._queue.get()
            if rows is _STOP:
                return
            try:
                self.written += self._store.write(rows)
            except Exception:  # sqlite3.Error, or PostgreSQL gone (UnavailableError)
                self.failed += len(rows)
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every batch handed over so far is written (tests, shutdown)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout=30)
        self._store.close()


class SliRecorder:
    """The gateway's per-second accumulator: ``observe`` adds a finished request to the
    current second's counts (a dict update on the event loop); ``flush`` hands every
    complete second to the writer. Only the proxied inference routes (``routes``) count:
    a scrape of ``/metrics`` is not a user's request.

    ``wall`` is the clock rows are stamped with (Unix seconds); tests may pass their own.
    """

    def __init__(
        self,
        service: str,
        writer: SliWriter | Callable[[Sequence[SliRow]], None],
        *,
        routes: Iterable[str],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self._put = writer.put if isinstance(writer, SliWriter) else writer
        self._routes = frozenset(routes)
        self._wall = wall
        self._acc: dict[tuple[int, str], list[int]] = {}
        self._second = -1
        self.observed = 0

    def observe(self, route: str, status: int, seconds: float, backend: str) -> None:
        if route not in self._routes:
            return
        now = int(self._wall())
        if now != self._second:
            if self._acc:
                self.flush(before=now)
            self._second = now
        key = (now, backend)
        acc = self._acc.get(key)
        if acc is None:
            acc = self._acc[key] = [0] * (2 + _NB)
        if status < 500 and status != 429:
            acc[0] += 1
        acc[1] += 1
        acc[2 + bisect.bisect_left(BOUNDS_MS, seconds * 1000.0)] += 1
        self.observed += 1

    def flush(self, *, before: int | None = None) -> int:
        """Hand the seconds before ``before`` (default: every second, the current one too,
        as at shutdown) to the writer; returns how many rows."""
        done = list(self._acc) if before is None else [k for k in self._acc if k[0] < before]
        if not done:
            return 0
        rows = [
            SliRow(self.service, t, backend, v[0], v[1], tuple(v[2:]))
            for (t, backend), v in ((k, self._acc.pop(k)) for k in done)
        ]
        self._put(rows)
        return len(rows)
