"""The event log: real SQLite and a real PostgreSQL server (the ``log`` fixture runs each
test on both), real processes writing at once."""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bastion.errors import UsageError
from bastion.events import EventLog, parse_since, redact
from tests.pg_server import LogTarget

WRITERS = 6
PER_WRITER = 150


def _writer(path: str, writer: int, start: mp.synchronize.Event) -> None:  # type: ignore[name-defined]
    log = EventLog(path)
    start.wait()
    for i in range(PER_WRITER):
        log.emit("test.write", subject=f"w{writer}", writer=writer, i=i)
    log.close()


def test_concurrent_writer_processes_lose_nothing(log: LogTarget) -> None:
    path = log.target
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(path, w, start)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    with EventLog(path) as opened:
        events = opened.query(kind="test.write")
    assert len(events) == WRITERS * PER_WRITER
    seen = {(e.data["writer"], e.data["i"]) for e in events}
    assert len(seen) == WRITERS * PER_WRITER
    # Each writer's own events keep their order.
    for w in range(WRITERS):
        mine = [e.data["i"] for e in events if e.subject == f"w{w}"]
        assert mine == list(range(PER_WRITER))
    ids = [e.id for e in events]
    assert ids == sorted(ids)


def test_postgresql_indexes_and_host(log: LogTarget) -> None:
    with EventLog(log.target) as opened:
        event = opened.emit("test.one", "x")
        assert opened.query()[0].host == event.host
    if log.backend == "postgresql":
        names = {
            r[0] for r in log.sql("SELECT indexname FROM pg_indexes WHERE tablename = 'events'")
        }
        assert {"events_ts", "events_kind"} <= names
        assert event.host
        assert event.to_json()["host"] == event.host
    else:
        assert event.host == ""
        assert "host" not in event.to_json()


def test_wal_mode_and_indexes(tmp_path: Path) -> None:
    import sqlite3

    EventLog(tmp_path / "e.db").close()
    conn = sqlite3.connect(tmp_path / "e.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"events_ts", "events_kind"} <= names
    conn.close()


def test_query_filters(log: LogTarget) -> None:
    with EventLog(log.target) as opened:
        _filters(opened)


def _filters(log: EventLog) -> None:
    log.emit("vault.repaired", subject="a", chunk="x")
    log.emit("vault.scrub.done", subject="b")
    log.emit("serve.backend.ejected", subject="a", segment="prod")
    assert [e.kind for e in log.query(kind="vault.*")] == ["vault.repaired", "vault.scrub.done"]
    assert [e.kind for e in log.query(kind="vault.repaired")] == ["vault.repaired"]
    assert [e.kind for e in log.query(subject="a")] == [
        "vault.repaired",
        "serve.backend.ejected",
    ]
    assert [e.kind for e in log.query(kind="serve.*.ejected")] == ["serve.backend.ejected"]
    assert log.query(since=parse_since("1h"))[0].kind == "vault.repaired"
    assert log.query(since=parse_since("2999-01-01T00:00:00")) == []
    first = log.query()[0]
    assert log.query(after_id=first.id)[0].kind == "vault.scrub.done"
    assert first.mono_ns > 0
    assert first.to_json()["ts"].endswith("+00:00")


def test_pages_newest_first_by_segment_on_both_backends(log: LogTarget) -> None:
    """The control API's pages and streams read through ``EventLog`` (not SQLite
    directly), so the dashboard's timeline works on a PostgreSQL log too: newest first by
    time then id, the ``before`` cursor, kind globs, subject and segment filters, and the
    stream's "after" read."""
    from bastion.control import events_page
    from bastion.control._api import _events_after

    with EventLog(log.target) as opened:
        for i in range(25):
            opened.emit(
                "serve.backend.ejected" if i % 2 else "vault.repaired",
                subject=f"s{i % 3}",
                segment="prod" if i % 5 else "lab",
                i=i,
            )
        everything = opened.query()
        assert [e.data["i"] for e in opened.query(newest_first=True)] == list(range(24, -1, -1))
        assert [e.data["i"] for e in opened.query(segment="lab")] == [0, 5, 10, 15, 20]
        # pages of 4, newest first, filtered, following each page's cursor to the end
        seen: list[int] = []
        before = None
        pages = 0
        while True:
            page = events_page(
                opened, kind="serve.*.ejected", segment="prod", before=before, limit=4
            )
            seen += [e["data"]["i"] for e in page["events"]]
            assert all(e["segment"] == "prod" for e in page["events"])
            pages += 1
            if page["next"] is None:
                break
            before = page["next"]
        want = [i for i in range(24, -1, -1) if i % 2 and i % 5]
        assert seen == want
        assert pages == -(-len(want) // 4)
        assert events_page(opened, before=10**9)["events"] == []  # no such event: nothing
        after = _events_after(opened, everything[19].id, None, "s0", None)
        assert [e["data"]["i"] for e in after] == [21, 24]
        assert opened.last_id() == everything[-1].id


def test_bad_kind_rejected(log: LogTarget) -> None:
    with EventLog(log.target) as opened, pytest.raises(UsageError, match="dotted lower-case"):
        opened.emit("Not A Kind")


def test_secrets_are_redacted_before_writing(log: LogTarget) -> None:
    with EventLog(log.target) as opened:
        opened.emit(
            "serve.started", headers={"Authorization": "Bearer sk-123"}, api_key="sk-456", n=1
        )
    if log.backend == "sqlite":
        raw = b"".join(f.read_bytes() for f in log.state_dir.glob("events.db*"))
    else:
        raw = "\n".join(str(r) for r in log.sql("SELECT * FROM events")).encode()
    assert b"sk-123" not in raw
    assert b"sk-456" not in raw
    assert redact({"password": "x", "nested": [{"token": "y"}], "ok": 2}) == {
        "password": "***",
        "nested": [{"token": "***"}],
        "ok": 2,
    }


def test_parse_since_errors() -> None:
    with pytest.raises(UsageError, match="--since"):
        parse_since("yesterday-ish")


def test_follow_sees_events_from_another_writer(log: LogTarget) -> None:
    path = log.target
    reader, writer = EventLog(path), EventLog(path)
    stop = threading.Event()
    got: list[str] = []

    def consume() -> None:
        for event in reader.follow(kind="t.*", poll_s=0.01, stop=stop):
            got.append(event.kind)
            if len(got) == 3:
                stop.set()

    thread = threading.Thread(target=consume)
    thread.start()
    for kind in ("t.a", "x.skip", "t.b", "t.c"):
        writer.emit(kind)
    thread.join(timeout=30)
    assert got == ["t.a", "t.b", "t.c"]
    reader.close()
    writer.close()


def test_cli_events_json(log: LogTarget) -> None:
    tmp_path = log.state_dir
    with EventLog.in_state_dir(tmp_path) as opened:
        assert opened.backend == log.backend
        opened.emit("vault.repaired", subject="data", chunk="abc")
        opened.emit("train.restarted", subject="job")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bastion",
            "events",
            "--state-dir",
            str(tmp_path),
            "--kind",
            "vault.*",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["kind"] for r in rows] == ["vault.repaired"]
    assert rows[0]["data"] == {"chunk": "abc"}
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "bastion",
            "events",
            "--state-dir",
            str(tmp_path),
            "--since",
            "soon",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "--since" in bad.stderr


def test_at_ns_is_the_one_time_of_an_event(log: LogTarget) -> None:
    import time

    with EventLog(log.target) as opened:
        before = time.monotonic_ns()
        earlier = before - 2_000_000_000
        late = opened.emit("test.late", subject="s", at_ns=earlier, n=1)
        now = opened.emit("test.now", subject="s")
        rows = opened.query(kind="test.*")
    assert late.mono_ns == earlier == rows[0].mono_ns
    assert rows[0].data == {"n": 1}
    assert rows[1].mono_ns >= before
    # the wall clock moves back with it, so --since sees the event where it happened
    assert 1.9 <= now.ts - late.ts <= 3.0


def test_event_writer_keeps_the_emit_time_and_drains_on_close(log: LogTarget) -> None:
    from bastion.events import NO_EVENTS, EventWriter

    tmp_path = log.state_dir
    writer = EventWriter.in_state_dir(tmp_path, segment="prod")
    stamps = []
    import time

    for i in range(50):
        before = time.monotonic_ns()
        writer.emit("test.queued", "svc", i=i)
        stamps.append((before, time.monotonic_ns()))
    writer.close()
    with EventLog.in_state_dir(tmp_path) as opened:
        rows = opened.query(kind="test.queued")
    assert [r.data["i"] for r in rows] == list(range(50))
    assert all(r.segment == "prod" for r in rows)
    # each row's time is when emit was called, not when the thread wrote it
    for (before, after), row in zip(stamps, rows, strict=True):
        assert before <= row.mono_ns <= after
    assert (writer.emitted, writer.failed) == (50, 0)
    assert NO_EVENTS.emit("test.nothing", "x") is None


def test_the_log_and_a_new_state_dir_are_private(tmp_path: Path) -> None:
    import stat

    state = tmp_path / "new" / ".bastion"
    with EventLog.in_state_dir(state) as log:
        log.emit("test.private", "x")
    for path in state.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_a_crash_log_is_private(tmp_path: Path) -> None:
    import stat

    from bastion.cli.main import _crash_log

    log = _crash_log(RuntimeError("boom"))
    try:
        assert "boom" in log.read_text()
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
    finally:
        log.unlink()
