"""Playbooks against real parts: runner processes and threads on one real SQLite log (and,
for exactly-once, on a real PostgreSQL server's log), a real aiohttp webhook receiver on
127.0.0.1 that checks the HMAC, the real CLI."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bastion import event_kinds as ek
from bastion.aio import LoopThread, serve_app
from bastion.errors import UnavailableError
from bastion.events import EventLog
from bastion.manifest import Manifest, load
from bastion.playbooks import SIGNATURE_HEADER, Ledger, Runner
from tests.pg_server import PASSWORD, LogTarget

SECRET = "s3cr3t-hook-key-for-tests"


class Receiver:
    """A webhook receiver: checks each POST's HMAC-SHA256 signature, counts deliveries
    per idempotency key, answers 401 to a bad signature."""

    def __init__(self) -> None:
        self.keys: Counter[str] = Counter()
        self.bad = 0
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._loop = LoopThread("webhook")
        self.port = 0

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        want = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get(SIGNATURE_HEADER, ""), want):
            with self._lock:
                self.bad += 1
            return web.Response(status=401, text="bad signature")
        doc = json.loads(body)
        with self._lock:
            self.keys[doc["key"]] += 1
            self.bodies.append(doc)
        return web.Response(text="ok")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner, self.port = await serve_app(app)

    def __enter__(self) -> Receiver:
        self._loop.start(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.stop(self._runner.cleanup())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture(autouse=True)
def _hook_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", SECRET)


def _manifest(tmp_path: Path, rules: str, limits: str = "", events: str | None = None) -> Path:
    path = tmp_path / "bastion.yaml"
    path.write_text(
        "version: 1\nsystem: t\nsegments: [prod, staging]\n"
        + (f"events: {events}\n" if events else "")
        + "playbooks:\n"
        + (f"  limits: {limits}\n" if limits else "")
        + "  rules:\n"
        + rules
    )
    return path


def _events_url(
    backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> str | None:
    """``events:`` for a manifest on ``backend``: a new database of the tests' PostgreSQL
    server, or None (SQLite)."""
    if backend == "sqlite":
        return None
    monkeypatch.setenv("BASTION_EVENTS_URLS", "{}")  # restored after the test
    return str(request.getfixturevalue("pg_server").create_database())


def _wait(condition: Callable[[], bool], what: str, timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _cli(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kw,
    )


# PostgreSQL: fewer incidents (its every decision is a round trip), the same runners
@pytest.mark.parametrize(("backend", "count"), [("sqlite", 200), ("postgresql", 30)])
def test_1000_concurrent_and_replayed_triggers_cause_no_duplicate_action(
    tmp_path: Path,
    receiver: Receiver,
    rng: random.Random,
    backend: str,
    count: int,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """200 incidents (30 on PostgreSQL), each triggered five times (1,000 events, shuffled
    by the seed),
    appended by 8 threads while 3 runner processes and 2 runner threads follow the same
    log; then a runner replays the whole log from its start. Every incident's two
    actions happen exactly once: one webhook delivery per key, one ledger row per key.
    On PostgreSQL (``events:`` in the manifest) the log and the ledger are the server's,
    as for runners on several hosts."""
    events = _events_url(backend, request, monkeypatch)
    path = _manifest(
        tmp_path,
        f"""    oom:
      on: train.exited
      when: {{data.oom: true}}
      incident: "{{subject}}/{{data.incident}}"
      actions:
        - do: notify
          url: {receiver.url}
          hmac_key_env: HOOK_SECRET
        - do: run
          command: [sh, -c, "echo {{data.incident}} >> ran.txt"]
""",
        limits="{rate_burst: 10000, rate_per_minute: 100000}",
        events=events,
    )
    manifest = load(path)
    with Ledger.in_state_dir(manifest.state_dir) as opened:
        assert opened.backend == backend
    incidents = [f"i{n:03d}" for n in range(count)]
    triggers = [i for i in incidents for _ in range(5)]
    rng.shuffle(triggers)
    EventLog.in_state_dir(manifest.state_dir).close()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bastion",
                "playbook",
                "run",
                "-f",
                str(path),
                "--name",
                f"p{k}",
                "--from-start",
                "--poll-ms",
                "5",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for k in range(3)
    ]
    threads_runners = [Runner(load(path), name=f"t{k}", poll_s=0.005) for k in range(2)]
    followers = [threading.Thread(target=r.run, kwargs={"after_id": 0}) for r in threads_runners]
    for t in followers:
        t.start()
    try:
        chunks = [triggers[k::8] for k in range(8)]

        def append(chunk: list[str]) -> None:
            with EventLog.in_state_dir(manifest.state_dir) as log:
                for inc in chunk:
                    log.emit(ek.TRAIN_EXITED, "train-digits", oom=True, incident=inc)

        writers = [threading.Thread(target=append, args=(c,)) for c in chunks]
        for w in writers:
            w.start()
        for w in writers:
            w.join()
        with EventLog.in_state_dir(manifest.state_dir) as log:
            _wait(
                lambda: log.count(ek.PLAYBOOK_RESOLVED) + log.count(ek.PLAYBOOK_ESCALATED) >= count,
                f"{count} incidents handled",
            )
            last = log.query(kind=ek.TRAIN_EXITED)[-1].id
        with Ledger.in_state_dir(manifest.state_dir) as ledger:
            _wait(
                lambda: all(
                    (ledger.cursor(n) or 0) >= last for n in ("p0", "p1", "p2", "t0", "t1")
                ),
                "every runner to read every trigger",
            )
    finally:
        for r in threads_runners:
            r.stop.set()
        for t in followers:
            t.join(timeout=60)
        for r in threads_runners:
            r.close()
        for p in procs:
            p.terminate()
        for p in procs:
            _, err = p.communicate(timeout=60)
            assert p.returncode in (0, -15), err.decode()
    # replay: a fresh runner reads all 1,000 triggers again
    replay = Runner(load(path), name="replay")
    try:
        for event in replay.log.query(kind=ek.TRAIN_EXITED):
            replay.handle(event)
        replay.drain(timeout=60)
    finally:
        replay.close()

    with EventLog.in_state_dir(manifest.state_dir) as log:
        assert log.count(ek.TRAIN_EXITED) == 5 * count
        started = [e.data["key"] for e in log.query(kind=ek.PLAYBOOK_ACTION_STARTED)]
        assert log.count(ek.PLAYBOOK_ESCALATED) == 0
    assert len(started) == 2 * count
    assert len(set(started)) == 2 * count
    assert receiver.bad == 0
    assert len(receiver.keys) == count
    assert set(receiver.keys.values()) == {1}
    ran = (tmp_path / "ran.txt").read_text().split()
    assert sorted(ran) == incidents  # each incident's command ran once
    with Ledger.in_state_dir(manifest.state_dir) as ledger:
        rows = ledger.actions()
    assert len(rows) == 2 * count
    assert {r["state"] for r in rows} == {"succeeded"}


def _events(state: Path, kind: str) -> list[Any]:
    with EventLog.in_state_dir(state) as log:
        return log.query(kind=kind)


def test_the_dry_run_prints_the_plan_the_real_run_executes(
    tmp_path: Path, receiver: Receiver
) -> None:
    path = _manifest(
        tmp_path,
        f"""    slo-page:
      on: slo.burn.page
      when: {{data.service: digits}}
      incident: "{{subject}}/{{day}}"
      strategy: alternatives
      actions:
        - do: run
          command: [sh, -c, "exit 1"]
        - do: notify
          url: {receiver.url}
          hmac_key_env: HOOK_SECRET
""",
    )
    event = {
        "kind": "slo.burn.page",
        "subject": "digits-availability",
        "segment": "prod",
        "data": {"service": "digits", "long_burn": 20.0},
    }
    manifest = load(path)
    with EventLog.in_state_dir(manifest.state_dir) as log:
        appended = log.emit(event["kind"], event["subject"], segment="prod", **event["data"])
    (tmp_path / "event.json").write_text(json.dumps(appended.to_json()))
    dry = _cli("playbook", "test", str(tmp_path / "event.json"), "-f", str(path), "--json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)["rules"]
    assert [r["rule"] for r in planned] == ["slo-page"]
    assert not (tmp_path / "ran").exists()
    with EventLog.in_state_dir(manifest.state_dir) as log:
        assert log.count("playbook.*") == 0  # the dry run did nothing

    runner = Runner(manifest)
    try:
        for found in runner.log.query(kind="slo.*"):
            runner.handle(found)
        runner.drain(timeout=60)
    finally:
        runner.close()
    recorded = _events(manifest.state_dir, ek.PLAYBOOK_PLANNED)
    assert [e.data["plan"] for e in recorded] == planned
    keys = [a["key"] for a in planned[0]["actions"]]
    assert [e.data["key"] for e in _events(manifest.state_dir, ek.PLAYBOOK_ACTION_STARTED)] == keys
    assert [e.data["index"] for e in _events(manifest.state_dir, ek.PLAYBOOK_ACTION_FAILED)] == [0]
    assert len(_events(manifest.state_dir, ek.PLAYBOOK_RESOLVED)) == 1
    assert list(receiver.keys) == [keys[1]]


def test_an_approval_that_times_out_denies_the_action(tmp_path: Path) -> None:
    path = _manifest(
        tmp_path,
        """    ransomware:
      on: vault.guard.ransomware
      max_failures: 1
      actions:
        - do: run
          approve: true
          approve_timeout_s: 0.5
          command: [sh, -c, "echo ran >> ran.txt"]
""",
    )
    manifest = load(path)
    runner = Runner(manifest)
    try:
        with EventLog.in_state_dir(manifest.state_dir) as log:
            runner.handle(log.emit(ek.VAULT_GUARD_RANSOMWARE, "/data", signals=["entropy"]))
        runner.drain(timeout=60)
    finally:
        runner.close()
    denied = _events(manifest.state_dir, ek.PLAYBOOK_APPROVAL_DENIED)
    assert [e.data["reason"] for e in denied] == ["timeout"]
    assert len(_events(manifest.state_dir, ek.PLAYBOOK_ESCALATED)) == 1
    assert _events(manifest.state_dir, ek.PLAYBOOK_ACTION_STARTED) == []
    assert not (tmp_path / "ran.txt").exists()
    # too late: approving now is refused (exit 2), and still nothing ran
    late = _cli("playbook", "approve", denied[0].data["id"], "-f", str(path))
    assert late.returncode == 2
    assert "denied" in late.stderr + late.stdout
    assert not (tmp_path / "ran.txt").exists()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_approved_action_runs_once_after_bastion_playbook_approve(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the approval goes from another process through the server's ledger,
    as from another host."""
    path = _manifest(
        tmp_path,
        """    ransomware:
      on: vault.guard.ransomware
      actions:
        - do: run
          approve: true
          approve_timeout_s: 60
          command: [sh, -c, "echo ran >> ran.txt"]
""",
        events=_events_url(backend, request, monkeypatch),
    )
    manifest = load(path)
    runner = Runner(manifest)
    assert runner.ledger.backend == backend
    try:
        with EventLog.in_state_dir(manifest.state_dir) as log:
            (future,) = runner.handle(log.emit(ek.VAULT_GUARD_RANSOMWARE, "/data"))
        _wait(
            lambda: bool(_events(manifest.state_dir, ek.PLAYBOOK_APPROVAL_REQUESTED)), "a request"
        )
        assert not (tmp_path / "ran.txt").exists()
        ident = _events(manifest.state_dir, ek.PLAYBOOK_APPROVAL_REQUESTED)[0].data["id"]
        done = _cli("playbook", "approve", ident, "-f", str(path), "--by", "ops")
        assert done.returncode == 0, done.stderr
        assert future.result(timeout=60) == "resolved"
    finally:
        runner.close()
    assert (tmp_path / "ran.txt").read_text() == "ran\n"
    assert len(_events(manifest.state_dir, ek.PLAYBOOK_APPROVAL_GRANTED)) == 1


def test_a_webhook_with_a_wrong_secret_is_refused_by_the_receiver(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _manifest(
        tmp_path,
        f"""    page:
      on: slo.burn.page
      actions:
        - do: notify
          url: {receiver.url}
          hmac_key_env: HOOK_SECRET
""",
    )
    manifest = load(path)
    monkeypatch.setenv("HOOK_SECRET", "not-the-receivers-key")
    runner = Runner(manifest)
    try:
        with EventLog.in_state_dir(manifest.state_dir) as log:
            (future,) = runner.handle(log.emit(ek.SLO_BURN_PAGE, "x", service="digits"))
        assert future.result(timeout=60) == "escalated"
    finally:
        runner.close()
    assert receiver.bad == 1
    assert not receiver.keys
    failed = _events(manifest.state_dir, ek.PLAYBOOK_ACTION_FAILED)
    assert "401" in failed[0].data["error"]
    text = (manifest.state_dir / "events.db").read_bytes()
    assert b"not-the-receivers-key" not in text
    assert SECRET.encode() not in text


def test_quarantine_without_segments_fails_plainly_and_escalates(tmp_path: Path) -> None:
    path = _manifest(
        tmp_path,
        """    breach:
      on: vault.guard.ransomware
      actions:
        - do: quarantine
          segment: "{segment}"
""",
    )
    manifest: Manifest = load(path)
    runner = Runner(manifest)
    try:
        with EventLog.in_state_dir(manifest.state_dir) as log:
            (future,) = runner.handle(log.emit(ek.VAULT_GUARD_RANSOMWARE, "/d", segment="staging"))
        outcome = future.result(timeout=60)
    finally:
        runner.close()
    try:
        import bastion.segment as segment
    except ImportError:
        segment = None
    if getattr(segment, "quarantine", None) is None:
        assert outcome == "escalated"
        (failed,) = _events(manifest.state_dir, ek.PLAYBOOK_ACTION_FAILED)
        assert failed.data["error"].startswith("segments not available")


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            "      on: train.exitted\n      actions: [{do: run, command: ['true']}]\n",
            "unknown event kind 'train.exitted' (did you mean 'train.exited'?)",
        ),
        ("      on: train.exited\n      actions: [{do: reboot}]\n", "'reboot' is not one of"),
        (
            "      on: train.exited\n      actions: [{do: scale, service: x}]\n",
            "do: scale needs backend, replicas",
        ),
        (
            "      on: train.exited\n      when: {data.x: {gt: high}}\n"
            "      actions: [{do: run, command: ['true']}]\n",
            "gt: needs a number",
        ),
    ],
)
def test_a_bad_playbook_is_a_located_error_exit_2(tmp_path: Path, rule: str, message: str) -> None:
    path = _manifest(tmp_path, "    r:\n" + rule)
    done = _cli("check", "-f", str(path))
    assert done.returncode == 2, done.stdout
    out = done.stdout + done.stderr
    assert message in out, out
    assert "bastion.yaml:" in out, out


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json", "not JSON"),
        ('{"kind": "train.exitted"}', "is not an event kind"),
        ('{"kind": "train.exited", "colour": 1}', "unknown key(s) colour"),
        ("[1]", "an event is a JSON object"),
    ],
)
def test_a_bad_event_file_is_exit_2(tmp_path: Path, body: str, message: str) -> None:
    path = _manifest(
        tmp_path, "    r:\n      on: train.exited\n      actions: [{do: run, command: ['true']}]\n"
    )
    (tmp_path / "e.json").write_text(body)
    done = _cli("playbook", "test", str(tmp_path / "e.json"), "-f", str(path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stdout + done.stderr, done.stdout + done.stderr
    unknown = _cli("playbook", "approve", "nope", "-f", str(path))
    assert unknown.returncode == 2
    assert "no approval 'nope'" in unknown.stdout + unknown.stderr


@pytest.mark.parametrize("log", ["postgresql"], indirect=True)
def test_the_postgresql_ledger_reconnects_across_a_restart_and_names_a_stopped_server(
    log: LogTarget,
) -> None:
    """A runner's ledger outlives a restart of the server (the next decision reconnects,
    and what was claimed stays claimed); a server that stays down is an
    ``UnavailableError`` naming it, without the password."""
    server = log.server
    assert server is not None
    with Ledger(log.target) as ledger:
        assert ledger.claim_incident("r", "i1", 1, "me")
        server.restart("fast")
        assert ledger.claim_incident("r", "i2", 2, "me")
        assert not ledger.claim_incident("r", "i1", 3, "other")
        assert [row[1] for row in ledger.running_incidents()] == ["i1", "i2"]
    with Ledger(log.target, retry_s=0.5) as ledger:
        server.stop("fast")
        try:
            with pytest.raises(UnavailableError, match="playbook ledger's PostgreSQL server") as e:
                ledger.cursor("default")
        finally:
            server.start()
        assert f"127.0.0.1:{server.port}" in str(e.value)
        assert PASSWORD not in str(e.value)
        ledger.set_cursor("default", 7)  # back: the next decision reconnects
        assert ledger.cursor("default") == 7
