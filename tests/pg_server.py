"""A real PostgreSQL server for the tests: Debian's ``postgresql`` package, ``initdb`` in a
temp dir, a private port on 127.0.0.1, its unix socket in the same temp dir.

``pg_server`` is session-scoped (one server per xdist worker) and stopped at the end.
As root the server runs as the unprivileged ``postgres`` user (PostgreSQL refuses root),
through ``runuser``; the temp dir is made its own. Password authentication (SCRAM) over
TCP, the password given to libpq in ``PGPASSWORD`` (never in a URL), as in production.

A server that cannot start fails the tests that need it, with the reason, unless
``BASTION_SKIP_PG=1`` (then they skip, saying so): CI must not skip them silently.

``log``: the event-log target of a test, once per backend (``sqlite``, ``postgresql``);
its ``state_dir`` is registered for PostgreSQL, so ``EventLog.in_state_dir`` and a
``bastion`` child process use the database.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PASSWORD = "bastion-test-" + uuid.uuid4().hex[:12]  # a test secret; redaction is checked on it
USER = "bastion"


def _bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One PostgreSQL cluster in a temp dir; ``url(db)`` names a database on it."""

    def __init__(self, *, fsync: bool = False) -> None:
        self.fsync = fsync  # off for tests (a crash of the machine is not what they test)
        bindir = _bindir()
        if bindir is None:
            raise RuntimeError(
                "PostgreSQL is not installed (no initdb): run `make system-packages` as root, "
                "or apt-get install postgresql"
            )
        self.bin = bindir
        self.base = Path(tempfile.mkdtemp(prefix="bastion-pg-"))
        self.data = self.base / "data"
        self.logfile = self.base / "server.log"
        self.port = _free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root and there is no `postgres` user to run the server as "
                    "(Debian's postgresql package creates it)"
                ) from None
            os.chown(self.base, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.base.chmod(0o700)
        pwfile = self.base / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as:
            user = pwd.getpwnam("postgres")
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        pwfile.chmod(0o600)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            USER,
            "--pwfile",
            str(pwfile),
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
        )
        pwfile.unlink()
        self.start()

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*self._as, *argv], capture_output=True, text=True, check=False, timeout=120
        )
        if proc.returncode != 0:
            log = self.logfile.read_text() if self.logfile.exists() else ""
            raise RuntimeError(
                f"{Path(argv[0]).name} failed ({proc.returncode}): {proc.stderr.strip()}\n{log}"
            )
        return proc

    def _ctl(self, *args: str) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), *args)

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
            f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=200"
        )
        self._ctl("-l", str(self.logfile), "-o", opts, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def kill_and_start(self) -> None:
        """SIGKILL the postmaster (a crash), then start it again once its backends,
        orphaned, have noticed and exited (until then the old shared memory is in use)."""
        import signal

        import psutil

        pid = self.postmaster_pid()
        children = psutil.Process(pid).children()
        os.kill(pid, signal.SIGKILL)
        psutil.wait_procs([psutil.Process(pid), *children], timeout=30)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.start()
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    os.environ["PGPASSWORD"] = PASSWORD  # libpq's standard source; children inherit it
    try:
        server = PgServer()
    except Exception as exc:  # the reason, not a silent skip
        if os.environ.get("BASTION_SKIP_PG") == "1":
            pytest.skip(f"PostgreSQL server not started (BASTION_SKIP_PG=1): {exc}")
        pytest.fail(f"could not start a PostgreSQL server for the tests: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.close()


@dataclass
class LogTarget:
    """Where a test's event log is: ``target`` goes to ``EventLog(...)``."""

    backend: str
    target: str
    state_dir: Path
    server: PgServer | None = None

    def sql(self, statement: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run raw SQL on the log's database (tests that age rows or read them raw)."""
        if self.backend == "sqlite":
            import sqlite3

            with contextlib.closing(sqlite3.connect(self.target)) as conn, conn:
                return list(conn.execute(statement, args).fetchall())
        import psycopg

        with psycopg.connect(self.target, autocommit=True) as conn:
            cur = conn.execute(statement.replace("?", "%s"), args)
            return list(cur.fetchall()) if cur.description else []


@pytest.fixture(params=["sqlite", "postgresql"])
def log(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> LogTarget:
    from bastion.events import use_postgres

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    if request.param == "sqlite":
        return LogTarget("sqlite", str(state / "events.db"), state)
    server: PgServer = request.getfixturevalue("pg_server")
    url = server.create_database()
    monkeypatch.setenv("BASTION_EVENTS_URLS", "{}")  # restored after the test
    use_postgres(state, url)
    return LogTarget("postgresql", url, state, server)
