"""The SLI tables in the PostgreSQL database of a shared event log (``events:`` in the
manifest): the same SQL as SQLite's, through a small adapter.

Owns: ``open_pg``, a connection that looks enough like ``sqlite3.Connection`` for
``SqliteSli`` and ``write_rows`` (``execute``, ``executemany``, ``with conn:`` as one
transaction), written by hand because the two drivers differ only in the placeholder
(``?`` / ``%s``), and one adapter is smaller than a second copy of every query.

Must never: retry a write whose commit is unknown (an SLI batch that fails is counted by
the writer, ``failed``); print the URL's credentials.
"""

from __future__ import annotations

import re
import weakref
from typing import Any

from bastion.errors import UnavailableError

_UNITS = ("sli_s", "sli_m", "sli_h")
_NB = 12
_SCHEMA = "\n".join(
    f"""CREATE TABLE IF NOT EXISTS {table} (
    service TEXT NOT NULL, t BIGINT NOT NULL, backend TEXT NOT NULL,
    good BIGINT NOT NULL, total BIGINT NOT NULL,
    {", ".join(f"l{i} BIGINT NOT NULL DEFAULT 0" for i in range(_NB))},
    PRIMARY KEY (service, t, backend));"""
    for table in _UNITS
)
_LOCK_KEY = 0x62617374696F6F  # beside the log's: new databases create the tables in turn
_MARK = re.compile(r"\?")


class PgConn:
    """``sqlite3.Connection``'s few methods the SLI code uses, over psycopg."""

    def __init__(self, conn: Any, where: str) -> None:
        self._conn = conn
        self.where = where
        self._tx: Any = None
        weakref.finalize(self, conn.close)  # a reader dropped unclosed: no psycopg warning

    def execute(self, sql: str, args: Any = ()) -> Any:
        return self._conn.execute(_MARK.sub("%s", sql), tuple(args))

    def executemany(self, sql: str, rows: Any) -> None:
        rows = list(rows)
        if rows:
            with self._conn.cursor() as cur:
                cur.executemany(_MARK.sub("%s", sql), rows)

    def __enter__(self) -> PgConn:
        self._tx = self._conn.transaction()
        self._tx.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        tx, self._tx = self._tx, None
        tx.__exit__(*exc)

    def close(self) -> None:
        self._conn.close()


def open_pg(url: str) -> PgConn:
    import psycopg

    from bastion.events._postgres import reason_of, where_of

    where = where_of(url)
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=5)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            conn.execute(_SCHEMA)
    except psycopg.Error as exc:
        raise UnavailableError(
            f"the SLI rows' PostgreSQL server {where} is not answering: {reason_of(exc)} "
            "(is the server up? check events: in the manifest)"
        ) from None
    return PgConn(conn, where)
