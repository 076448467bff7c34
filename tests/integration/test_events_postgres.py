"""The PostgreSQL event log's own failure semantics (issue 18, item 4), on a real server:
a restart and a crash of the server mid-append lose no acknowledged event and write none
twice; a stopped server is said clearly by the commands (exit 1, the server named, no
traceback) and costs the gateway's writer only counted, announced drops.

The log's ordinary behaviour (queries, follow, secrets, concurrent writers) is tested on
both backends by test_events_log.py, test_events_follow.py and test_events_secrets.py."""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.errors import UnavailableError
from bastion.events import EventLog, EventWriter
from tests.helpers import wait_for
from tests.pg_server import LogTarget

WRITERS = 4
PER_WRITER = 250


def _writer(url: str, writer: int, acked: str, start: mp.synchronize.Event) -> None:  # type: ignore[name-defined]
    log = EventLog(url, retry_s=60)
    start.wait()
    with Path(acked).open("a") as out:
        for i in range(PER_WRITER):
            log.emit("test.write", subject=f"w{writer}", writer=writer, i=i)
            out.write(f"{i}\n")  # acknowledged: emit returned after the commit
            out.flush()
    log.close()


def _events(log: LogTarget) -> int:
    return int(log.sql("SELECT count(*) FROM events")[0][0])


PG_ONLY = pytest.mark.parametrize("log", ["postgresql"], indirect=True)


@pytest.mark.slow
@PG_ONLY
@pytest.mark.parametrize("fault", ["restart", "sigkill"])
def test_the_server_restarting_mid_append_loses_no_acknowledged_event(
    log: LogTarget, tmp_path: Path, fault: str
) -> None:
    server = log.server
    assert server is not None
    EventLog(log.target).close()  # the table, before the count below reads it
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    acked = [tmp_path / f"acked-{w}" for w in range(WRITERS)]
    procs = [
        ctx.Process(target=_writer, args=(log.target, w, str(acked[w]), start))
        for w in range(WRITERS)
    ]
    for p in procs:
        p.start()
    start.set()
    # every writer appending (one opening its log during the fault would fail at once, as
    # a command does: only appends retry), and a good part of the events written
    wait_for(
        lambda: (
            all(a.exists() and a.stat().st_size > 0 for a in acked)
            and _events(log) >= PER_WRITER // 2
        ),
        "every writer to be appending",
    )
    if fault == "restart":
        server.restart("fast")
    else:
        server.kill_and_start()
    for p in procs:
        p.join(timeout=180)
        assert p.exitcode == 0
    with EventLog(log.target) as opened:
        events = opened.query(kind="test.write")
    for w in range(WRITERS):
        acknowledged = [int(x) for x in acked[w].read_text().split()]
        assert acknowledged == list(range(PER_WRITER))
        mine = [e.data["i"] for e in events if e.subject == f"w{w}"]
        # every acknowledged event is there, once, in the writer's order (a retry after a
        # commit whose answer was lost finds its row by uid instead of writing it again)
        assert mine == list(range(PER_WRITER)), f"writer {w}"
    assert [e.id for e in events] == sorted(e.id for e in events)


def _bastion(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@PG_ONLY
def test_a_stopped_server_is_said_clearly_and_breaks_nothing_else(
    log: LogTarget, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    server = log.server
    assert server is not None
    manifest = tmp_path / "bastion.yaml"
    manifest.write_text(
        f"version: 1\nsystem: s\nstate_dir: {log.state_dir}\nevents: {log.target}\n"
    )
    # the gateway's sink: opened while the server is up
    writer = EventWriter(EventLog(log.target, retry_s=1.0))
    writer.emit("test.before", "gw")
    wait_for(lambda: _events(log) == 1, "the first event")
    server.stop("fast")
    try:
        where = f"127.0.0.1:{server.port}"
        for argv in (["events", "-f", str(manifest)], ["slo", "status", "-f", str(manifest)]):
            proc = _bastion(*argv, cwd=tmp_path)
            assert proc.returncode == 1, (argv, proc.stdout, proc.stderr)
            assert where in proc.stderr, proc.stderr
            assert "not answering" in proc.stderr, proc.stderr
            assert "Traceback" not in proc.stderr
        # the caller of emit never waits: events are queued, then dropped and counted
        for i in range(3):
            writer.emit("test.during", "gw", i=i)
        wait_for(lambda: writer.failed == 3, "the writer to give up on the 3 events")
        assert writer.emitted == 4
    finally:
        server.start()
    writer.emit("test.after", "gw")
    writer.close()
    err = capfd.readouterr().err
    assert "event log unavailable, dropping events" in err
    assert "event log back; 3 event(s) were dropped" in err
    with EventLog(log.target) as opened:
        assert [e.kind for e in opened.query()] == ["test.before", "test.after"]
    proc = _bastion("events", "-f", str(manifest), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["kind"] for line in proc.stdout.splitlines()] == [
        "test.before",
        "test.after",
    ]


def test_a_server_down_at_open_names_the_server() -> None:
    with pytest.raises(UnavailableError, match=r"127\.0\.0\.1:1/x is not answering"):
        EventLog("postgresql://nobody@127.0.0.1:1/x")


def test_sli_rows_in_postgresql(log: LogTarget) -> None:
    from bastion.slo import SliRow, SqliteSli

    with_backend = SqliteSli.in_state_dir(log.state_dir)
    try:
        rows = [
            SliRow("svc", 3600 * 10 + s, "a", 9, 10, (5, 4) + (0,) * 9 + (1,)) for s in range(120)
        ]
        assert with_backend.write(rows) == 120
        assert with_backend.write(rows[:1]) == 1  # adds up on conflict
        tally = with_backend.tally("svc", 3600 * 10, 3600 * 11)
        assert (tally.good, tally.total) == (9 * 121, 10 * 121)
        assert with_backend.first_after("svc", 0) == 36000
        assert with_backend.last("svc") == 36119
        assert with_backend.slice_counts("svc", 36000, 36120, 60, need=0.95, threshold_ms=None) == (
            2,
            2,
        )
        assert [t for t, _ in with_backend.series("svc", 36000, 36120, step=60)] == [36000, 36060]
    finally:
        with_backend.close()
    if log.backend == "postgresql":
        assert log.sql("SELECT count(*) FROM sli_m")[0][0] == 2


@PG_ONLY
def test_the_control_api_reads_a_postgresql_log(log: LogTarget, tmp_path: Path) -> None:
    """`bastion up` over a manifest whose ``events:`` is PostgreSQL: the API's event
    pages (filtered, newest first, with the cursor) and its SSE stream read that
    database, including events another host's writer appended, and the stream's default
    start is the newest id there (not SQLite's)."""
    import socket
    import urllib.request

    from ruamel.yaml import YAML

    from bastion.control import Up
    from bastion.manifest import load

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "bastion.yaml"
    YAML().dump(
        {
            "version": 1,
            "system": "pgctl",
            "events": log.target,
            "control": {"listen": f"127.0.0.1:{port}", "scrub": None},
        },
        path,
    )
    up = Up(load(path))
    up.start()
    try:
        up.wait_ready()
        assert not (up.manifest.state_dir / "events.db").exists()
        with EventLog(log.target) as other:  # another host's writer, straight to the server
            for i in range(12):
                other.emit("train.step", f"job{i % 2}", segment="lab" if i % 3 else "prod", n=i)

        def get(query: str) -> dict[str, object]:
            with urllib.request.urlopen(f"{up.api_url}/api/events?{query}", timeout=30) as r:
                doc: dict[str, object] = json.loads(r.read())
                return doc

        first = get("kind=train.*&subject=job0&segment=lab&limit=2")
        events = first["events"]
        assert isinstance(events, list)
        assert [e["data"]["n"] for e in events] == [10, 8]
        second = get(f"kind=train.*&subject=job0&segment=lab&limit=2&before={first['next']}")
        rest = second["events"]
        assert isinstance(rest, list)
        assert [e["data"]["n"] for e in rest] == [4, 2]
        assert second["next"] is None
        assert all(e["host"] for e in events)  # PostgreSQL rows name their host
        with EventLog(log.target) as other:
            after = other.query(kind="train.step")[6].id  # n=6
        with urllib.request.urlopen(
            f"{up.api_url}/api/events/stream?once=1&after={after}", timeout=30
        ) as resp:
            text = resp.read().decode()
        datas = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
        assert [d["data"]["n"] for d in datas if d["kind"] == "train.step"] == [7, 8, 9, 10, 11]
    finally:
        up.shutdown()


@PG_ONLY
def test_the_readiness_report_reads_a_postgresql_log(log: LogTarget, tmp_path: Path) -> None:
    """`bastion report` over a manifest whose ``events:`` is PostgreSQL: its evidence
    counts that database's events, and a drill recorded there (started, its fault, its
    end) is in the report with its timeline, read with the prefix matches PostgreSQL
    spells its own way (``starts_with``, not a collation-dependent range)."""
    from ruamel.yaml import YAML

    from bastion import event_kinds as ek
    from bastion.manifest import load
    from bastion.report import build_report

    path = tmp_path / "bastion.yaml"
    YAML().dump({"version": 1, "system": "pgreport", "events": log.target}, path)
    manifest = load(path)
    with EventLog(log.target) as events:
        events.emit(ek.DRILL_STARTED, "kill-a-replica", title="kill a replica")
        events.emit("drill.fault.injected", "kill-a-replica", fault="process.kill")
        events.emit("serve.backend.ejected", "chat", backend="r1")
        events.emit(
            ek.DRILL_FINISHED,
            "kill-a-replica",
            title="kill a replica",
            status="completed",
            exit_code=0,
        )
        emitted = events.last_id()
    doc = build_report(manifest)
    assert not (manifest.state_dir / "events.db").exists()
    assert doc["evidence"]["events"] == 4
    assert doc["evidence"]["last_event_id"] == emitted
    (drill,) = doc["drills"]
    assert drill["log"] == "postgresql"
    assert drill["verdict"] == "pass", drill
    kinds = [t["kind"] for t in drill["timeline"]]
    assert "drill.fault.injected" in kinds
    assert "serve.backend.ejected" in kinds  # the other events of the run, in the timeline
