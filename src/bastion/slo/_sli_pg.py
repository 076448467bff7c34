"""The SLI tables in the PostgreSQL database of a shared event log (``events:`` in the
manifest): the same SQL as SQLite's, through a small adapter.

Owns: ``open_pg``, the SLI tables opened in that database, through
``bastion.events._postgres.PgConn`` (enough of ``sqlite3.Connection`` for ``SqliteSli``
and ``write_rows``), so the SLI code has one copy of every query.

Must never: retry a write whose commit is unknown (an SLI batch that fails is counted by
the writer, ``failed``); print the URL's credentials.
"""

from __future__ import annotations

from bastion.errors import UnavailableError
from bastion.events._postgres import PgConn

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
