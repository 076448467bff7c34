"""The event log's one read query, for both backends (SQLite and PostgreSQL).

Owns: building the ``SELECT`` over ``events`` from a filter (after an id, kind exact or
glob, subject, segment, since a time, before an event, newest first, a limit), in the
backend's placeholder style and glob operator. Every reader of the log goes through it:
``EventLog.query`` and ``follow``, the control API's pages and streams, so a page reads
the same rows on either backend.

Must never: put a value into the SQL text (every value is a parameter; only our own
column names and operators are); order a page other than the indexes keep it (newest
first is ``ts DESC, id DESC``, what ``(kind, ts)`` and ``(subject, ts)`` serve).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Dialect", "select"]


@dataclass(frozen=True, slots=True)
class Dialect:
    """How a backend spells a query: its placeholder, its host column (an expression),
    and a kind glob as a condition with its one argument."""

    param: str
    host: str
    glob: Callable[[str], tuple[str, Any]]


def select(
    d: Dialect,
    *,
    after_id: int = 0,
    kind: str | None = None,
    glob: bool = False,
    subject: str | None = None,
    segment: str | None = None,
    since: float | None = None,
    before: int | None = None,
    newest_first: bool = False,
    limit: int | None = None,
) -> tuple[str, list[Any]]:
    """The SQL and its arguments. ``before``: only events older than that event (by time,
    then id; none when it does not exist), the cursor of a newest-first page."""
    p = d.param
    sql = (
        f"SELECT id, ts, mono_ns, kind, subject, segment, data, {d.host} FROM events WHERE id > {p}"  # noqa: S608 - columns and operators are ours; values are parameters
    )
    args: list[Any] = [after_id]
    if kind:
        cond, arg = d.glob(kind) if glob else (f"kind = {p}", kind)
        sql += f" AND {cond}"
        args.append(arg)
    if subject:
        sql += f" AND subject = {p}"
        args.append(subject)
    if segment:
        sql += f" AND segment = {p}"
        args.append(segment)
    if since is not None:
        sql += f" AND ts >= {p}"
        args.append(since)
    if before is not None:
        sql += f" AND (ts, id) < ((SELECT ts FROM events WHERE id = {p}), {p})"  # noqa: S608
        args += [before, before]
    sql += " ORDER BY ts DESC, id DESC" if newest_first else " ORDER BY id"
    if limit is not None:
        sql += f" LIMIT {p}"
        args.append(limit)
    return sql, args
