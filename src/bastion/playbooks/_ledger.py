"""The playbooks' ledger: claims, token buckets, the blast radius and approvals, in the
event log's own SQLite database.

Owns: the tables ``playbook_incidents`` (one handler per rule and incident),
``playbook_actions`` (one row per idempotency key, ``UNIQUE``: the database itself refuses
a second run of an action, whichever process or thread tries), ``playbook_buckets`` (a
token bucket per target), ``playbook_approvals`` and ``playbook_cursors`` (where a runner
got to in the log). Each decision is one ``BEGIN IMMEDIATE`` transaction, so runners in
many processes are serialised by SQLite's write lock, and the rate limit and blast radius
are judged on what every runner has done.

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
from typing import Any

from bastion.errors import NotFoundError, UsageError
from bastion.events import EventLog

__all__ = ["Approval", "Claim", "Ledger"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS playbook_incidents (
    rule      TEXT NOT NULL,
    incident  TEXT NOT NULL,
    trigger   INTEGER NOT NULL,
    owner     TEXT NOT NULL,
    state     TEXT NOT NULL,
    created   REAL NOT NULL,
    UNIQUE (rule, incident)
);
CREATE TABLE IF NOT EXISTS playbook_actions (
    key       TEXT NOT NULL UNIQUE,
    rule      TEXT NOT NULL,
    incident  TEXT NOT NULL,
    idx       INTEGER NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    params    TEXT NOT NULL,
    state     TEXT NOT NULL,
    created   REAL NOT NULL,
    finished  REAL,
    detail    TEXT
);
CREATE INDEX IF NOT EXISTS playbook_actions_created ON playbook_actions (created);
CREATE TABLE IF NOT EXISTS playbook_buckets (
    target    TEXT PRIMARY KEY,
    tokens    REAL NOT NULL,
    updated   REAL NOT NULL
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
    requested REAL NOT NULL,
    deadline  REAL NOT NULL,
    decided   REAL,
    reason    TEXT
);
CREATE TABLE IF NOT EXISTS playbook_cursors (
    runner    TEXT PRIMARY KEY,
    last_id   INTEGER NOT NULL
);
"""


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
    """The playbooks' tables in ``<state_dir>/events.db``, on a connection of its own."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        # EventLog makes the file (0600, in a 0700 directory) and sets WAL; this opens a
        # second connection to the same database.
        EventLog(path).close()
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            self.path, timeout=60.0, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA busy_timeout = 60000")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        with self._transaction() as cur:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    cur.execute(statement)

    @classmethod
    def in_state_dir(cls, state_dir: str | Path, **kwargs: Any) -> Ledger:
        return cls(Path(state_dir) / "events.db", **kwargs)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
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

    # -- incidents ----------------------------------------------------------------------

    def claim_incident(self, rule: str, incident: str, trigger: int, owner: str) -> bool:
        """True for the one caller that handles this rule's incident; False for every
        other trigger of it (replayed, concurrent, or from another runner)."""
        with self._transaction() as cur:
            cur.execute(
                "INSERT OR IGNORE INTO playbook_incidents "
                "(rule, incident, trigger, owner, state, created) VALUES (?, ?, ?, ?, ?, ?)",
                (rule, incident, trigger, owner, "running", self.clock()),
            )
            return cur.rowcount == 1

    def finish_incident(self, rule: str, incident: str, state: str) -> None:
        with self._transaction() as cur:
            cur.execute(
                "UPDATE playbook_incidents SET state = ? WHERE rule = ? AND incident = ?",
                (state, rule, incident),
            )

    def running_incidents(self) -> list[tuple[str, str, int, str]]:
        """``(rule, incident, trigger, owner)`` of every incident still ``running``."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT rule, incident, trigger, owner FROM playbook_incidents "
                "WHERE state = 'running' ORDER BY rowid"
            ).fetchall()
        return [(str(r), str(i), int(t), str(o)) for r, i, t, o in rows]

    def adopt_incident(self, rule: str, incident: str, dead: str, owner: str) -> bool:
        """Take over a running incident from ``dead`` (a runner that is gone): True for the
        one caller that got it, so two restarted runners never both resume it."""
        with self._transaction() as cur:
            cur.execute(
                "UPDATE playbook_incidents SET owner = ? WHERE rule = ? AND incident = ? "
                "AND owner = ? AND state = 'running'",
                (owner, rule, incident, dead),
            )
            return cur.rowcount == 1

    def started_actions(self, rule: str, incident: str) -> list[tuple[str, int, str]]:
        """``(key, index, action)`` of the incident's actions claimed and never finished."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT key, idx, action FROM playbook_actions WHERE rule = ? AND incident = ? "
                "AND state = 'started' ORDER BY idx",
                (rule, incident),
            ).fetchall()
        return [(str(k), int(i), str(a)) for k, i, a in rows]

    def finished_actions(self, rule: str, incident: str) -> dict[int, str]:
        """Index -> state of the incident's actions that finished."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT idx, state FROM playbook_actions WHERE rule = ? AND incident = ? "
                "AND state != 'started'",
                (rule, incident),
            ).fetchall()
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
        with self._transaction() as cur:
            if cur.execute("SELECT 1 FROM playbook_actions WHERE key = ?", (key,)).fetchone():
                return Claim.DUPLICATE, {}
            targets = {
                row[0]
                for row in cur.execute(
                    "SELECT DISTINCT target FROM playbook_actions WHERE created >= ?",
                    (now - blast_window_s,),
                )
            }
            if target not in targets and len(targets) >= blast_radius:
                return Claim.BLAST_RADIUS, {"targets": sorted(targets), "cap": blast_radius}
            row = cur.execute(
                "SELECT tokens, updated FROM playbook_buckets WHERE target = ?", (target,)
            ).fetchone()
            tokens = float(burst) if row is None else float(row[0])
            if row is not None:
                tokens = min(float(burst), tokens + max(0.0, now - float(row[1])) * per_minute / 60)
            if tokens < 1.0:
                cur.execute(
                    "INSERT OR REPLACE INTO playbook_buckets (target, tokens, updated) "
                    "VALUES (?, ?, ?)",
                    (target, tokens, now),
                )
                wait = (1.0 - tokens) * 60 / per_minute
                return Claim.RATE_LIMITED, {
                    "tokens": round(tokens, 3),
                    "retry_in_s": round(wait, 1),
                }
            cur.execute(
                "INSERT OR REPLACE INTO playbook_buckets (target, tokens, updated) "
                "VALUES (?, ?, ?)",
                (target, tokens - 1.0, now),
            )
            try:
                cur.execute(
                    "INSERT INTO playbook_actions (key, rule, incident, idx, action, target, "
                    "params, state, created) VALUES (?, ?, ?, ?, ?, ?, ?, 'started', ?)",
                    (key, rule, incident, index, action, target, json.dumps(params), now),
                )
            except sqlite3.IntegrityError:
                # the UNIQUE key is the last word, whatever the check above saw
                cur.execute(
                    "UPDATE playbook_buckets SET tokens = tokens + 1 WHERE target = ?", (target,)
                )
                return Claim.DUPLICATE, {}
            return Claim.RUN, {"tokens_left": round(tokens - 1.0, 3)}

    def finish_action(self, key: str, state: str, detail: str) -> None:
        with self._transaction() as cur:
            cur.execute(
                "UPDATE playbook_actions SET state = ?, finished = ?, detail = ? WHERE key = ?",
                (state, self.clock(), detail, key),
            )

    def actions(self) -> list[dict[str, Any]]:
        """Every action ever claimed, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT key, rule, incident, idx, action, target, params, state, created, "
                "finished, detail FROM playbook_actions ORDER BY rowid"
            ).fetchall()
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
        with self._transaction() as cur:
            cur.execute(
                "INSERT OR IGNORE INTO playbook_approvals (id, key, rule, incident, action, "
                "target, params, state, requested, deadline) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                (id, key, rule, incident, action, target, json.dumps(params), now, now + timeout_s),
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
        with self._lock:
            row = self._conn.execute(
                f"SELECT {self._COLUMNS} FROM playbook_approvals WHERE id = ?",  # noqa: S608 - constant columns
                (id,),
            ).fetchone()
        if row is None:
            raise NotFoundError(f"no approval {id!r} (bastion playbook status lists those waiting)")
        return self._approval(row)

    def approvals(self, state: str | None = None) -> list[Approval]:
        sql = f"SELECT {self._COLUMNS} FROM playbook_approvals"  # noqa: S608 - constant columns
        args: tuple[Any, ...] = ()
        if state is not None:
            sql += " WHERE state = ?"
            args = (state,)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY requested", args).fetchall()
        return [self._approval(r) for r in rows]

    def decide(self, id: str, *, approve: bool, reason: str) -> Approval:
        """Approve or deny a pending approval. Past its deadline it is denied (timeout)
        whatever was asked; one already decided is not changed (``UsageError``)."""
        now = self.clock()
        with self._transaction() as cur:
            row = cur.execute(
                "SELECT state, deadline FROM playbook_approvals WHERE id = ?", (id,)
            ).fetchone()
            if row is None:
                raise NotFoundError(
                    f"no approval {id!r} (bastion playbook status lists those waiting)"
                )
            state, deadline = row
            if state == "pending" and now >= float(deadline):
                cur.execute(
                    "UPDATE playbook_approvals SET state = 'denied', decided = ?, reason = ? "
                    "WHERE id = ?",
                    (now, "timeout", id),
                )
                outcome = "expired"
            elif state == "pending":
                cur.execute(
                    "UPDATE playbook_approvals SET state = ?, decided = ?, reason = ? WHERE id = ?",
                    ("approved" if approve else "denied", now, reason, id),
                )
                outcome = "decided"
            else:
                outcome = "already"
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
                with self._transaction() as cur:
                    cur.execute(
                        "UPDATE playbook_approvals SET state = 'denied', decided = ?, reason = ? "
                        "WHERE id = ? AND state = 'pending'",
                        (
                            self.clock(),
                            "timeout" if stop is None or not stop.is_set() else "stopped",
                            id,
                        ),
                    )
                continue
            time.sleep(min(poll_s, max(0.0, found.deadline - self.clock())))

    # -- cursors ------------------------------------------------------------------------

    def cursor(self, runner: str) -> int | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT last_id FROM playbook_cursors WHERE runner = ?", (runner,)
            ).fetchone()
        return None if row is None else int(row[0])

    def set_cursor(self, runner: str, last_id: int) -> None:
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO playbook_cursors (runner, last_id) VALUES (?, ?) "
                "ON CONFLICT (runner) DO UPDATE SET last_id = max(last_id, excluded.last_id)",
                (runner, last_id),
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
