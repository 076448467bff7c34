"""The playbooks' ledger: claims, token buckets, the blast radius and approvals, in the
event log's own database (``<state_dir>/events.db``, or the PostgreSQL database the
manifest's ``events: postgresql://...`` names, which runners on several hosts share).

Owns: the tables ``playbook_incidents`` (one handler per rule and incident),
``playbook_actions`` (one row per idempotency key, ``UNIQUE``: the database itself refuses
a second run of an action, whichever process, thread or host tries), ``playbook_buckets``
(a token bucket per target), ``playbook_approvals`` and ``playbook_cursors`` (where a
runner got to in the log). Each decision is one transaction that runs alone: SQLite's
``BEGIN IMMEDIATE`` (its write lock serialises every runner of the machine), or on
PostgreSQL a transaction that first takes one advisory lock (every runner of every host
takes turns, as on SQLite; a lock rather than SERIALIZABLE because the blast radius reads
a range of rows, and retried serialisation failures would cost more than the wait). So
the rate limit and blast radius are judged on what every runner has done.

The SQL is one text for both databases (``?`` placeholders, ``ON CONFLICT``, which SQLite
has since 3.24); the seam is ``_Sqlite`` / ``_Postgres``: how a transaction is opened,
and the column that orders rows as inserted (SQLite's ``rowid``, PostgreSQL's ``seq``).

On PostgreSQL a lost connection (a server restart, a failover) is reconnected and the
decision retried for ``retry_s``, then ``UnavailableError`` names the server. A retry
after a commit whose answer was lost finds its own row: a claim of an incident or of an
action made by this very call (same owner and trigger; same key, index and time) is
still this caller's, so it is neither lost nor run twice.

Must never: run an action (``bastion.playbooks._actions`` does), or forget a claim: a
claimed key stays claimed, so an action interrupted half way is reported, never
repeated.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bastion.errors import NotFoundError, UnavailableError, UsageError
from bastion.events import EventLog, url_of

__all__ = ["Approval", "Claim", "Ledger"]

_T = TypeVar("_T")

# {seq}: PostgreSQL's column of insertion order (SQLite has rowid). The types are spelt
# so both read them alike: DOUBLE PRECISION is SQLite's REAL affinity (PostgreSQL's REAL
# is 4 bytes, too short for a time), BIGINT its INTEGER.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS playbook_incidents (
    {seq}
    rule      TEXT NOT NULL,
    incident  TEXT NOT NULL,
    trigger   BIGINT NOT NULL,
    owner     TEXT NOT NULL,
    state     TEXT NOT NULL,
    created   DOUBLE PRECISION NOT NULL,
    UNIQUE (rule, incident)
);
CREATE TABLE IF NOT EXISTS playbook_actions (
    {seq}
    key       TEXT NOT NULL UNIQUE,
    rule      TEXT NOT NULL,
    incident  TEXT NOT NULL,
    idx       BIGINT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    params    TEXT NOT NULL,
    state     TEXT NOT NULL,
    created   DOUBLE PRECISION NOT NULL,
    finished  DOUBLE PRECISION,
    detail    TEXT
);
CREATE INDEX IF NOT EXISTS playbook_actions_created ON playbook_actions (created);
CREATE TABLE IF NOT EXISTS playbook_buckets (
    target    TEXT PRIMARY KEY,
    tokens    DOUBLE PRECISION NOT NULL,
    updated   DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS playbook_approvals (
    id        TEXT PRIMARY KEY,
    key       TEXT NOT NULL UNIQUE,
    rule      TEXT NOT NULL,
    incident  TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    params    TEXT NOT NULL,
    state     TEXT NOT NULL,
    requested DOUBLE PRECISION NOT NULL,
    deadline  DOUBLE PRECISION NOT NULL,
    decided   DOUBLE PRECISION,
    reason    TEXT
);
CREATE TABLE IF NOT EXISTS playbook_cursors (
    runner    TEXT PRIMARY KEY,
    last_id   BIGINT NOT NULL
);
"""
_LOCK_KEY = 0x62617374696F70  # beside the log's and the SLI rows': the ledger's turn


class _Exec(Protocol):
    """What a decision runs its statements on: ``sqlite3.Cursor`` or ``PgConn``; each
    ``execute`` returns a cursor (``fetchone``, ``fetchall``, ``rowcount``)."""

    def execute(self, sql: str, args: Any = ..., /) -> Any: ...


def _statements(seq: str) -> list[str]:
    return [s for s in _SCHEMA.format(seq=seq).split(";") if s.strip()]


class _Sqlite:
    """The embedded ledger: a second connection to ``events.db``."""

    order = "rowid"

    def __init__(self, path: Path) -> None:
        # EventLog makes the file (0600, in a 0700 directory) and sets WAL
        EventLog(path).close()
        self.where = str(path)
        self._conn = sqlite3.connect(
            path, timeout=60.0, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA busy_timeout = 60000")
        self._conn.execute("PRAGMA synchronous = NORMAL")

        def create(cur: _Exec) -> None:
            for statement in _statements(""):
                cur.execute(statement)

        self.write(create)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        cur = self._conn.cursor()
        for attempt in range(50):
            try:
                cur.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.01 * (attempt + 1))
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def write(self, op: Callable[[_Exec], _T]) -> _T:
        with self._transaction() as cur:
            return op(cur)

    def read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return list(self._conn.execute(sql, args).fetchall())

    def close(self) -> None:
        self._conn.close()


class _Postgres:
    """The shared ledger: the tables in the PostgreSQL database of the log, one
    connection (psycopg 3, autocommit; ``PgConn`` spells ``?`` as ``%s``)."""

    order = "seq"

    def __init__(self, url: str, *, retry_s: float) -> None:
        from bastion.events._postgres import where_of

        EventLog(url, retry_s=retry_s).close()  # the log's table, and a clear error if down
        self.url = url
        self.where = where_of(url)
        self.retry_s = retry_s
        self._held: dict[str, Any] = {"main": None}

        def create(cur: _Exec) -> None:
            for statement in _statements("seq BIGINT GENERATED BY DEFAULT AS IDENTITY,"):
                cur.execute(statement)

        self.write(create)

    def _connect(self) -> Any:
        import psycopg

        from bastion.events._postgres import PgConn

        return PgConn(psycopg.connect(self.url, autocommit=True, connect_timeout=5), self.where)

    def _retrying(self, op: Callable[[Any], _T]) -> _T:
        from bastion.events._postgres import reason_of, retrying

        def unavailable(exc: BaseException) -> UnavailableError:
            return UnavailableError(
                f"the playbook ledger's PostgreSQL server {self.where} is not "
                f"answering: {reason_of(exc)} (is the server up? check events: in "
                "the manifest, and PGPASSWORD / ~/.pgpass for the password)"
            )

        return retrying(
            op, self._held, connect=self._connect, retry_s=self.retry_s, unavailable=unavailable
        )

    def write(self, op: Callable[[_Exec], _T]) -> _T:
        def transaction(conn: Any) -> _T:
            with conn:
                conn.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK_KEY,))
                return op(conn)

        return self._retrying(transaction)

    def read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._retrying(lambda conn: list(conn.execute(sql, args).fetchall()))

    def close(self) -> None:
        conn, self._held["main"] = self._held["main"], None
        if conn is not None:
            conn.close()


class Claim(enum.Enum):
    """What ``claim_action`` decided: ``RUN`` (this caller, alone, runs it now)."""

    RUN = "run"
    DUPLICATE = "duplicate"
    RATE_LIMITED = "rate_limited"
    BLAST_RADIUS = "blast_radius"


@dataclass(frozen=True, slots=True)
class Approval:
    """One ``approve: true`` action waiting for (or past) a person's decision."""

    id: str
    key: str
    rule: str
    incident: str
    action: str
    target: str
    params: dict[str, Any]
    state: str  # pending, approved, denied
    requested: float
    deadline: float
    decided: float | None
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule,
            "incident": self.incident,
            "action": self.action,
            "target": self.target,
            "params": self.params,
            "state": self.state,
            "requested": self.requested,
            "deadline": self.deadline,
            "decided": self.decided,
            "reason": self.reason,
        }


class Ledger:
    """The playbooks' tables in the event log's database, on a connection of its own:
    ``<state_dir>/events.db``, or the PostgreSQL database at a ``postgresql://`` URL."""

    def __init__(
        self, path: str | Path, *, clock: Callable[[], float] = time.time, retry_s: float = 30.0
    ) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._db: _Sqlite | _Postgres
        if isinstance(path, str) and path.startswith(("postgresql://", "postgres://")):
            self.path = Path()
            self._db = _Postgres(path, retry_s=retry_s)
        else:
            self.path = Path(path)
            self._db = _Sqlite(self.path)
        self._order = self._db.order

    @classmethod
    def in_state_dir(cls, state_dir: str | Path, **kwargs: Any) -> Ledger:
        """The ledger beside the log of ``state_dir``: in the PostgreSQL database the
        manifest's ``events:`` names, else in ``<state_dir>/events.db``."""
        url = url_of(state_dir)
        return cls(url if url is not None else Path(state_dir) / "events.db", **kwargs)

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return "sqlite" if isinstance(self._db, _Sqlite) else "postgresql"

    @property
    def where(self) -> str:
        """The file, or the server's URL without credentials (for messages)."""
        return self._db.where

    def _write(self, op: Callable[[_Exec], _T]) -> _T:
        with self._lock:
            return self._db.write(op)

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.read(sql, args)

    # -- incidents ----------------------------------------------------------------------

    def claim_incident(self, rule: str, incident: str, trigger: int, owner: str) -> bool:
        """True for the one caller that handles this rule's incident; False for every
        other trigger of it (replayed, concurrent, or from another runner)."""
        now = self.clock()
        tries = 0

        def claim(cur: _Exec) -> bool:
            nonlocal tries
            tries += 1
            if (
                cur.execute(
                    "INSERT INTO playbook_incidents (rule, incident, trigger, owner, state, "
                    "created) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (rule, incident, trigger, owner, "running", now),
                ).rowcount
                == 1
            ):
                return True
            if tries == 1:
                return False
            # a retry whose first try committed unanswered: the row is this call's own
            row = cur.execute(
                "SELECT owner, trigger FROM playbook_incidents WHERE rule = ? AND incident = ?",
                (rule, incident),
            ).fetchone()
            return row is not None and (str(row[0]), int(row[1])) == (owner, trigger)

        return self._write(claim)

    def finish_incident(self, rule: str, incident: str, state: str) -> None:
        self._write(
            lambda cur: cur.execute(
                "UPDATE playbook_incidents SET state = ? WHERE rule = ? AND incident = ?",
                (state, rule, incident),
            )
        )

    def running_incidents(self) -> list[tuple[str, str, int, str]]:
        """``(rule, incident, trigger, owner)`` of every incident still ``running``."""
        rows = self._read(
            "SELECT rule, incident, trigger, owner FROM playbook_incidents "  # noqa: S608 - our column
            f"WHERE state = 'running' ORDER BY {self._order}"
        )
        return [(str(r), str(i), int(t), str(o)) for r, i, t, o in rows]

    def adopt_incident(self, rule: str, incident: str, dead: str, owner: str) -> bool:
        """Take over a running incident from ``dead`` (a runner that is gone): True for the
        one caller that got it, so two restarted runners never both resume it."""
        tries = 0

        def adopt(cur: _Exec) -> bool:
            nonlocal tries
            tries += 1
            if (
                cur.execute(
                    "UPDATE playbook_incidents SET owner = ? WHERE rule = ? AND incident = ? "
                    "AND owner = ? AND state = 'running'",
                    (owner, rule, incident, dead),
                ).rowcount
                == 1
            ):
                return True
            if tries == 1:
                return False
            row = cur.execute(  # a retry: did the first try take it?
                "SELECT owner FROM playbook_incidents WHERE rule = ? AND incident = ?",
                (rule, incident),
            ).fetchone()
            return row is not None and str(row[0]) == owner

        return self._write(adopt)

    def started_actions(self, rule: str, incident: str) -> list[tuple[str, int, str]]:
        """``(key, index, action)`` of the incident's actions claimed and never finished."""
        rows = self._read(
            "SELECT key, idx, action FROM playbook_actions WHERE rule = ? AND incident = ? "
            "AND state = 'started' ORDER BY idx",
            (rule, incident),
        )
        return [(str(k), int(i), str(a)) for k, i, a in rows]

    def finished_actions(self, rule: str, incident: str) -> dict[int, str]:
        """Index -> state of the incident's actions that finished."""
        rows = self._read(
            "SELECT idx, state FROM playbook_actions WHERE rule = ? AND incident = ? "
            "AND state != 'started'",
            (rule, incident),
        )
        return {int(i): str(s) for i, s in rows}

    # -- actions ------------------------------------------------------------------------

    def claim_action(
        self,
        *,
        key: str,
        rule: str,
        incident: str,
        index: int,
        action: str,
        target: str,
        params: dict[str, Any],
        burst: int,
        per_minute: float,
        blast_radius: int,
        blast_window_s: float,
    ) -> tuple[Claim, dict[str, Any]]:
        """Decide, in one transaction, whether this action runs now: not if its key is
        taken (``DUPLICATE``), nor past the blast radius (``BLAST_RADIUS``), nor with its
        target's bucket empty (``RATE_LIMITED``). ``RUN`` takes a token and the key."""
        now = self.clock()
        tries = 0

        def claim(cur: _Exec) -> tuple[Claim, dict[str, Any]]:
            nonlocal tries
            tries += 1
            row = cur.execute(
                "SELECT rule, incident, idx, created FROM playbook_actions WHERE key = ?", (key,)
            ).fetchone()
            if row is not None:
                if tries > 1 and tuple(row) == (rule, incident, index, now):
                    # a retry whose first try committed unanswered: this call's own claim
                    return Claim.RUN, {"retried": True}
                return Claim.DUPLICATE, {}
            targets = {
                str(r[0])
                for r in cur.execute(
                    "SELECT DISTINCT target FROM playbook_actions WHERE created >= ?",
                    (now - blast_window_s,),
                ).fetchall()
            }
            if target not in targets and len(targets) >= blast_radius:
                return Claim.BLAST_RADIUS, {"targets": sorted(targets), "cap": blast_radius}
            row = cur.execute(
                "SELECT tokens, updated FROM playbook_buckets WHERE target = ?", (target,)
            ).fetchone()
            tokens = float(burst) if row is None else float(row[0])
            if row is not None:
                tokens = min(float(burst), tokens + max(0.0, now - float(row[1])) * per_minute / 60)
            if tokens >= 1.0:
                # the UNIQUE key is the last word, whatever the check above saw
                taken = cur.execute(
                    "INSERT INTO playbook_actions (key, rule, incident, idx, action, target, "
                    "params, state, created) VALUES (?, ?, ?, ?, ?, ?, ?, 'started', ?) "
                    "ON CONFLICT DO NOTHING",
                    (key, rule, incident, index, action, target, json.dumps(params), now),
                ).rowcount
                if taken != 1:
                    return Claim.DUPLICATE, {}
            cur.execute(
                "INSERT INTO playbook_buckets (target, tokens, updated) VALUES (?, ?, ?) "
                "ON CONFLICT (target) DO UPDATE SET tokens = excluded.tokens, "
                "updated = excluded.updated",
                (target, tokens - 1.0 if tokens >= 1.0 else tokens, now),
            )
            if tokens < 1.0:
                wait = (1.0 - tokens) * 60 / per_minute
                return Claim.RATE_LIMITED, {
                    "tokens": round(tokens, 3),
                    "retry_in_s": round(wait, 1),
                }
            return Claim.RUN, {"tokens_left": round(tokens - 1.0, 3)}

        return self._write(claim)

    def finish_action(self, key: str, state: str, detail: str) -> None:
        now = self.clock()
        self._write(
            lambda cur: cur.execute(
                "UPDATE playbook_actions SET state = ?, finished = ?, detail = ? WHERE key = ?",
                (state, now, detail, key),
            )
        )

    def actions(self) -> list[dict[str, Any]]:
        """Every action ever claimed, oldest first."""
        rows = self._read(
            "SELECT key, rule, incident, idx, action, target, params, state, created, "  # noqa: S608 - our column
            f"finished, detail FROM playbook_actions ORDER BY {self._order}"
        )
        names = ("key", "rule", "incident", "index", "action", "target", "params", "state")
        out = []
        for row in rows:
            item = dict(zip(names, row[:8], strict=True))
            item["params"] = json.loads(item["params"])
            item.update(created=row[8], finished=row[9], detail=row[10])
            out.append(item)
        return out

    # -- approvals ----------------------------------------------------------------------

    def request_approval(
        self,
        *,
        id: str,
        key: str,
        rule: str,
        incident: str,
        action: str,
        target: str,
        params: dict[str, Any],
        timeout_s: float,
    ) -> Approval:
        now = self.clock()
        self._write(
            lambda cur: cur.execute(
                "INSERT INTO playbook_approvals (id, key, rule, incident, action, "
                "target, params, state, requested, deadline) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?) ON CONFLICT DO NOTHING",
                (id, key, rule, incident, action, target, json.dumps(params), now, now + timeout_s),
            )
        )
        return self.approval(id)

    def _approval(self, row: tuple[Any, ...]) -> Approval:
        return Approval(
            id=row[0],
            key=row[1],
            rule=row[2],
            incident=row[3],
            action=row[4],
            target=row[5],
            params=json.loads(row[6]),
            state=row[7],
            requested=row[8],
            deadline=row[9],
            decided=row[10],
            reason=row[11],
        )

    _COLUMNS = (
        "id, key, rule, incident, action, target, params, state, requested, deadline, "
        "decided, reason"
    )

    def approval(self, id: str) -> Approval:
        rows = self._read(
            f"SELECT {self._COLUMNS} FROM playbook_approvals WHERE id = ?",  # noqa: S608 - constant columns
            (id,),
        )
        if not rows:
            raise NotFoundError(f"no approval {id!r} (bastion playbook status lists those waiting)")
        return self._approval(rows[0])

    def approvals(self, state: str | None = None) -> list[Approval]:
        sql = f"SELECT {self._COLUMNS} FROM playbook_approvals"  # noqa: S608 - constant columns
        args: tuple[Any, ...] = ()
        if state is not None:
            sql += " WHERE state = ?"
            args = (state,)
        return [self._approval(r) for r in self._read(sql + " ORDER BY requested, id", args)]

    def decide(self, id: str, *, approve: bool, reason: str) -> Approval:
        """Approve or deny a pending approval. Past its deadline it is denied (timeout)
        whatever was asked; one already decided is not changed (``UsageError``)."""
        now = self.clock()
        tries = 0

        def decide(cur: _Exec) -> str:
            nonlocal tries
            tries += 1
            row = cur.execute(
                "SELECT state, deadline, decided, reason FROM playbook_approvals WHERE id = ?",
                (id,),
            ).fetchone()
            if row is None:
                raise NotFoundError(
                    f"no approval {id!r} (bastion playbook status lists those waiting)"
                )
            state, deadline, decided, stored = row
            if state == "pending" and now >= float(deadline):
                cur.execute(
                    "UPDATE playbook_approvals SET state = 'denied', decided = ?, reason = ? "
                    "WHERE id = ?",
                    (now, "timeout", id),
                )
                return "expired"
            if state == "pending":
                cur.execute(
                    "UPDATE playbook_approvals SET state = ?, decided = ?, reason = ? WHERE id = ?",
                    ("approved" if approve else "denied", now, reason, id),
                )
                return "decided"
            # a retry whose first try committed unanswered: that decision is this call's
            mine = (state, decided, stored) == ("approved" if approve else "denied", now, reason)
            return "decided" if tries > 1 and mine else "already"

        outcome = self._write(decide)
        found = self.approval(id)
        if outcome != "decided":
            raise UsageError(
                f"approval {id} is {found.state} ({found.reason}) already; a decided "
                "approval cannot be changed (the playbook escalated; act by hand)"
            )
        return found

    def wait_decision(
        self, id: str, *, poll_s: float = 0.05, stop: threading.Event | None = None
    ) -> Approval:
        """Wait until approval ``id`` is decided; at its deadline, deny it (timeout)."""
        while True:
            found = self.approval(id)
            if found.state != "pending":
                return found
            if self.clock() >= found.deadline or (stop is not None and stop.is_set()):
                self._expire(id, "timeout" if stop is None or not stop.is_set() else "stopped")
                continue
            time.sleep(min(poll_s, max(0.0, found.deadline - self.clock())))

    def _expire(self, id: str, why: str) -> None:
        now = self.clock()
        self._write(
            lambda cur: cur.execute(
                "UPDATE playbook_approvals SET state = 'denied', decided = ?, reason = ? "
                "WHERE id = ? AND state = 'pending'",
                (now, why, id),
            )
        )

    # -- cursors ------------------------------------------------------------------------

    def cursor(self, runner: str) -> int | None:
        rows = self._read("SELECT last_id FROM playbook_cursors WHERE runner = ?", (runner,))
        return None if not rows else int(rows[0][0])

    def set_cursor(self, runner: str, last_id: int) -> None:
        self._write(
            lambda cur: cur.execute(
                "INSERT INTO playbook_cursors (runner, last_id) VALUES (?, ?) "
                "ON CONFLICT (runner) DO UPDATE SET last_id = excluded.last_id "
                "WHERE excluded.last_id > playbook_cursors.last_id",
                (runner, last_id),
            )
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
