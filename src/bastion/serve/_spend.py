"""Spend rows in the state directory, and the cost report over them.

Owns: the SQLite database ``<state_dir>/spend.db`` (WAL mode, beside ``events.db``), whose
``spend`` table holds SLI-style rows (one per second, service, backend, tier, client key,
cause and currency that had spend: attempts, tokens, estimated attempts, cost in
pico-units), ``SpendWriter`` (a writer thread the gateway hands each ``Charge`` to, so the
event loop never waits on SQLite), and ``cost_report`` (spend over a day, week or month,
broken down and totalled, as typed records).

Must never: block the caller of ``SpendWriter.put`` (a ``SimpleQueue`` put, nothing
else); drop a charge on shutdown (``close`` drains); store a client key (only its id).
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bastion.errors import UsageError
from bastion.serve._cost import CAUSES, PICO, Charge

__all__ = [
    "PERIODS",
    "CostReport",
    "CostRow",
    "SpendWriter",
    "cost_between",
    "cost_report",
    "spend_by_backend",
    "spend_path",
    "spend_since",
]

Period = Literal["day", "week", "month"]
PERIODS: dict[str, float] = {"day": 86400.0, "week": 7 * 86400.0, "month": 30 * 86400.0}
"""A report's period, as the seconds before now it covers (a month is 30 days)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    ts            REAL    NOT NULL,
    service       TEXT    NOT NULL,
    backend       TEXT    NOT NULL,
    tier          INTEGER NOT NULL,
    key           TEXT    NOT NULL DEFAULT '',
    cause         TEXT    NOT NULL,
    currency      TEXT    NOT NULL,
    attempts      INTEGER NOT NULL,
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    estimated     INTEGER NOT NULL,
    cost_pico     INTEGER NOT NULL,
    gateway       TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS spend_ts ON spend (ts);
"""
_FLUSH_S = 1.0


def spend_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / "spend.db"


def _connect(path: Path, *, create: bool) -> sqlite3.Connection:
    try:
        if create:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        conn = sqlite3.connect(path, timeout=60.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 60000")
        if create:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(spend)")}
            if "gateway" not in columns:  # a spend log from before active-active gateways
                conn.execute("ALTER TABLE spend ADD COLUMN gateway TEXT NOT NULL DEFAULT ''")
    except (OSError, sqlite3.Error) as exc:
        raise UsageError(
            f"cannot open the spend log {path}: {exc} (check state_dir in the manifest)"
        ) from None
    return conn


def spend_since(
    state_dir: str | Path,
    service: str,
    seconds: float,
    *,
    now: float | None = None,
    gateways: tuple[str, ...] | None = None,
) -> list[tuple[float, str, str, int]]:
    """``service``'s spend rows of the last ``seconds``, oldest first, as (age in seconds,
    backend, key id, cost in pico-units): what ``Ledger.seed`` reads at start.
    ``gateways``: only the rows these gateways wrote (one of several active-active
    gateways counts its own spend against its share of a budget; "" is a row written
    before the service had several)."""
    path = spend_path(state_dir)
    if seconds <= 0 or not path.exists():
        return []
    until = time.time() if now is None else now
    conn = _connect(path, create=True)  # adds the gateway column to an older log
    where, args = "service = ? AND ts >= ?", [service, until - seconds]
    if gateways is not None:
        where += f" AND gateway IN ({', '.join('?' * len(gateways))})"
        args.extend(gateways)
    try:
        found = conn.execute(
            f"SELECT ts, backend, key, SUM(cost_pico) FROM spend WHERE {where} "  # noqa: S608 - placeholders only
            "GROUP BY ts, backend, key ORDER BY ts",
            args,
        ).fetchall()
    except sqlite3.Error as exc:
        raise UsageError(f"cannot read the spend log {path}: {exc}") from None
    finally:
        conn.close()
    return [(max(until - ts, 0.0), backend, key, int(cost)) for ts, backend, key, cost in found]


class SpendWriter:
    """Takes charges from the event loop (``put``) and writes them, summed per second and
    row key, from one daemon thread. ``failed`` counts rows the database refused (a full
    disk): they never stop the gateway."""

    def __init__(self, path: str | Path | None, *, gateways: dict[str, str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        # the gateway address each service's rows are written as (a service's active-active
        # gateways share the spend log; each seeds its budgets from its own rows)
        self.gateways = dict(gateways or {})
        self.put_count = 0
        self.written = 0
        self.failed = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.path is not None:
            _connect(self.path, create=True).close()  # a bad state_dir fails here, loudly
            self._thread = threading.Thread(target=self._drain, name="bastion-spend", daemon=True)
            self._thread.start()

    @classmethod
    def in_state_dir(
        cls, state_dir: str | Path | None, *, gateways: dict[str, str] | None = None
    ) -> SpendWriter:
        return cls(spend_path(state_dir) if state_dir is not None else None, gateways=gateways)

    def put(self, charge: Charge) -> None:
        """Hand one charge to the writer (never blocks)."""
        self.put_count += 1
        if self._thread is not None:
            # a plain tuple of numbers and strings, which the garbage collector stops
            # tracking: up to a second of charges wait here
            self._queue.put((time.time(), *charge))

    def _drain(self) -> None:
        # Wake once a flush interval and take everything queued, never once per charge:
        # a thread woken per request costs the gateway's process a futex and a fight for
        # the GIL each time, which was most of accounting's CPU.
        assert self.path is not None
        conn = _connect(self.path, create=False)
        stop = False
        try:
            while not stop:
                stop = self._stop.wait(_FLUSH_S)
                rows: dict[tuple[Any, ...], list[int]] = {}
                get = self._queue.get_nowait
                while True:
                    try:
                        # a charge's fields, in Charge's order, unpacked straight into
                        # locals: this thread's time is the gateway process's CPU too
                        ts, service, backend, tier, key_id, cause, currency, inp, out, est, cost = (
                            get()
                        )
                    except queue.Empty:
                        break
                    key = (float(int(ts)), service, backend, tier, key_id, cause, currency)
                    row = rows.get(key)
                    if row is None:
                        row = rows[key] = [0, 0, 0, 0, 0]
                    row[0] += 1
                    row[1] += inp
                    row[2] += out
                    row[3] += est
                    row[4] += cost
                if rows:
                    self._write(conn, rows)
        finally:
            conn.close()

    def _write(self, conn: sqlite3.Connection, rows: dict[tuple[Any, ...], list[int]]) -> None:
        try:
            with conn:
                conn.execute("BEGIN")
                conn.executemany(
                    "INSERT INTO spend (ts, service, backend, tier, key, cause, currency, "
                    "attempts, input_tokens, output_tokens, estimated, cost_pico, gateway) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(*k, *v, self.gateways.get(k[1], "")) for k, v in rows.items()],
                )
            self.written += len(rows)
        except sqlite3.Error:
            self.failed += len(rows)

    def close(self) -> None:
        """Write what is queued and stop the thread (a charge put before ``close`` is
        never lost)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)
            self._thread = None


@dataclass(frozen=True, slots=True)
class CostRow:
    """Spend of one (service, backend, tier, key, cause) over the report's period.

    Attributes:
        service, backend, tier: where the attempts went.
        key: the client key's id, or "" without auth.
        cause: why the attempts were made (first, retry, hedge, fallback, shadow, probe).
        currency: the currency of ``cost``.
        attempts: attempts accounted.
        input_tokens, output_tokens: their tokens.
        estimated: attempts whose tokens were estimated (no ``usage`` in the answer).
        cost: what they cost.
    """

    service: str
    backend: str
    tier: int
    key: str
    cause: str
    currency: str
    attempts: int
    input_tokens: int
    output_tokens: int
    estimated: int
    cost: float


@dataclass(frozen=True, slots=True)
class CostReport:
    """Spend over a period, from the spend rows.

    Attributes:
        period: day, week or month.
        since, until: the period, as Unix times.
        currencies: every currency spent in (totals are per currency; none is converted).
        total: spend by currency.
        by_cause: spend by currency, then cause (each cause's sum adds up to ``total``).
        by_service: spend by currency, then service.
        by_vendor: spend by currency, then backend: where the money is concentrated.
        extra: spend by currency that resilience caused (retry, hedge, fallback, shadow).
        estimated: attempts whose tokens were estimated.
        rows: the breakdown, largest cost first.
    """

    period: str
    since: float
    until: float
    currencies: tuple[str, ...]
    total: dict[str, float]
    by_cause: dict[str, dict[str, float]]
    by_service: dict[str, dict[str, float]]
    by_vendor: dict[str, dict[str, float]]
    extra: dict[str, float]
    estimated: int
    rows: tuple[CostRow, ...]


_EXTRA = ("retry", "hedge", "fallback", "shadow")


def _by(picos: dict[tuple[Any, ...], int], index: int) -> dict[str, dict[str, float]]:
    """Spend by currency, then by the row key's part at ``index``."""
    out: dict[str, dict[str, int]] = {}
    for key, pico in picos.items():
        inner = out.setdefault(key[5], {})
        inner[key[index]] = inner.get(key[index], 0) + pico
    return {c: {k: v / PICO for k, v in d.items()} for c, d in out.items()}


def cost_report(
    state_dir: str | Path, period: str = "day", *, now: float | None = None
) -> CostReport:
    """Spend over the last ``period`` (day, week or month) in ``state_dir``'s spend log;
    an empty report when nothing has been spent there yet."""
    if period not in PERIODS:
        raise UsageError(f"--period {period!r}: use one of {', '.join(PERIODS)}")
    until = time.time() if now is None else now
    return cost_between(state_dir, until - PERIODS[period], until, period=period)


def cost_between(
    state_dir: str | Path, since: float, until: float, *, period: str = "between"
) -> CostReport:
    """Spend between two Unix times (a drill's incident window, say): the report's
    shape, its ``period`` as given. Rows land within a second of their charge."""
    path = spend_path(state_dir)
    raw: list[tuple[Any, ...]] = []
    if path.exists():
        conn = _connect(path, create=False)
        try:
            raw = conn.execute(
                "SELECT service, backend, tier, key, cause, currency, SUM(attempts), "
                "SUM(input_tokens), SUM(output_tokens), SUM(estimated), SUM(cost_pico) "
                "FROM spend WHERE ts >= ? AND ts <= ? "
                "GROUP BY service, backend, tier, key, cause, currency",
                (since, until),
            ).fetchall()
        except sqlite3.Error as exc:
            raise UsageError(f"cannot read the spend log {path}: {exc}") from None
        finally:
            conn.close()
    picos = {tuple(r[:6]): int(r[10]) for r in raw}
    rows = tuple(
        sorted(
            (
                CostRow(
                    service=r[0],
                    backend=r[1],
                    tier=int(r[2]),
                    key=r[3],
                    cause=r[4],
                    currency=r[5],
                    attempts=int(r[6]),
                    input_tokens=int(r[7]),
                    output_tokens=int(r[8]),
                    estimated=int(r[9]),
                    cost=int(r[10]) / PICO,
                )
                for r in raw
            ),
            key=lambda r: (-r.cost, r.service, r.backend, r.cause, r.key),
        )
    )
    total: dict[str, int] = {}
    by_cause: dict[str, dict[str, int]] = {}
    for key, pico in picos.items():
        currency, cause = key[5], key[4]
        total[currency] = total.get(currency, 0) + pico
        causes = by_cause.setdefault(currency, dict.fromkeys(CAUSES, 0))
        causes[cause] = causes.get(cause, 0) + pico
    return CostReport(
        period=period,
        since=since,
        until=until,
        currencies=tuple(sorted(total)),
        total={c: v / PICO for c, v in total.items()},
        by_cause={c: {k: v / PICO for k, v in d.items()} for c, d in by_cause.items()},
        by_service=_by(picos, 0),
        by_vendor=_by(picos, 1),
        extra={c: sum(d.get(k, 0) for k in _EXTRA) / PICO for c, d in by_cause.items()},
        estimated=sum(r.estimated for r in rows),
        rows=rows,
    )


def spend_by_backend(
    state_dir: str | Path, period: str = "month", *, now: float | None = None
) -> dict[tuple[str, str], dict[str, float]] | None:
    """What each (service, backend) spent over the last ``period``, by currency (what the
    dependency map puts beside availability); None when no gateway of this state
    directory accounts spend."""
    if not spend_path(state_dir).exists():
        return None
    out: dict[tuple[str, str], dict[str, float]] = {}
    for row in cost_report(state_dir, period, now=now).rows:
        mine = out.setdefault((row.service, row.backend), {})
        mine[row.currency] = mine.get(row.currency, 0.0) + row.cost
    return out
