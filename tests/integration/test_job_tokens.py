"""A supervised job checkpointing through a real ``bastion vault serve`` process with
the token its supervisor (a real ``bastion train run`` process) mints and refreshes: a
token living 3 s keeps the job writing across several refreshes; a revoked one stops
its writes with a clear error; no token ever reaches events.db or a log in the state
dir."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion import event_kinds as ek
from bastion.events import EventLog
from bastion.manifest import load
from bastion.segment import job_token_path, revoke_token
from bastion.serve.runner import stop_server
from bastion.vault import make_key

WORKER = """
import os, sys, time
from pathlib import Path
from bastion.errors import UsageError
from bastion.manifest import load
from bastion.train import open_store

store = open_store(load(os.environ["BASTION_MANIFEST"]), job="trainer")
step = 0
while not Path("stop").exists():
    step += 1
    try:
        ref = store.commit(
            f"ckpt/trainer/step-{step}", {"w.bin": os.urandom(4096)}, meta={"step": step},
            lineage=(),
        )
    except UsageError as exc:
        print(f"checkpoint {step} refused: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    with open("steps.txt", "a") as f:
        f.write(f"{step} {time.time():.3f}\\n")
    time.sleep(0.2)
"""


def _wait(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _setup(tmp_path: Path, ttl_s: float) -> tuple[Path, subprocess.Popen[bytes]]:
    port = _free_port()
    make_key(tmp_path / "keys" / "signing.key")
    make_key(tmp_path / "keys" / "admin.key")
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "worker.py").write_text(WORKER)
    path = tmp_path / "bastion.yaml"
    path.write_text(
        f"""version: 1
system: t
vault:
  replicas: [va, vb]
  key: keys/signing.key
  admin_key: keys/admin.key
  server: http://127.0.0.1:{port}
  token_ttl_s: {ttl_s}
segments:
  lab: {{}}
jobs:
  trainer:
    segment: lab
    command: [python, worker.py]
    workdir: job
    warm_standby: false
    restart: {{max: 0}}
"""
    )
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bastion",
            "vault",
            "serve",
            "-f",
            str(path),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    _wait(up, "the vault server to listen")
    return path, server


def _job(path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bastion", "train", "run", "trainer", "-f", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _steps(path: Path) -> list[int]:
    f = path.parent / "job" / "steps.txt"
    return [int(line.split()[0]) for line in f.read_text().splitlines()] if f.exists() else []


def _no_token_in(state_dir: Path, tokens: set[str]) -> None:
    assert tokens
    for f in state_dir.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            for token in tokens:
                # the whole token, and its signature alone (the part nothing else has)
                assert token.encode() not in data, f"a token leaked into {f}"
                assert token.rsplit(".", 1)[-1].encode() not in data, f"a token leaked into {f}"


@pytest.mark.slow
def test_a_job_keeps_checkpointing_across_refreshes_of_a_3s_token(tmp_path: Path) -> None:
    path, server = _setup(tmp_path, ttl_s=3)
    manifest = load(path)
    token_file = job_token_path(manifest.state_dir, "trainer")
    log = EventLog.in_state_dir(manifest.state_dir)
    job = _job(path)
    tokens: set[str] = set()
    try:

        def seen() -> None:
            if token_file.exists():
                tokens.add(token_file.read_text().strip())

        _wait(lambda: bool(_steps(path)), "the job's first checkpoint", timeout=120)
        first = log.count(ek.SEGMENT_TOKEN_MINTED)
        _wait(
            lambda: seen() or log.count(ek.SEGMENT_TOKEN_MINTED) >= first + 3,
            "three refreshes of the job's token while it checkpoints",
        )
        mark = len(_steps(path))
        _wait(lambda: len(_steps(path)) >= mark + 3, "checkpoints after the refreshes")
        (path.parent / "job" / "stop").touch()
        out, _ = job.communicate(timeout=60)
        assert job.returncode == 0, out.decode()
        steps = _steps(path)
        assert steps == list(range(1, len(steps) + 1)), steps
        # the job went on writing after the token it held at its first checkpoint had
        # expired (by the server's clock, which is this machine's)
        lines = (path.parent / "job" / "steps.txt").read_text().splitlines()
        minted = log.query(kind=ek.SEGMENT_TOKEN_MINTED)
        assert float(lines[-1].split()[1]) > float(minted[first - 1].data["expires"])
        assert len(tokens) >= 3, "the test saw fewer than 3 distinct tokens"
        assert not token_file.exists(), "the token file outlived the job"
        assert all(m.data["prefixes"] == ["ckpt/trainer/"] for m in minted)
        assert all(m.data["ops"] == ["read", "append"] for m in minted)
        _no_token_in(Path(manifest.state_dir), tokens)
        assert "bst1." not in out.decode()
    finally:
        if job.poll() is None:
            os.killpg(job.pid, 15)
            job.wait(timeout=30)
        stop_server(server)
        log.close()


@pytest.mark.slow
def test_a_revoked_job_token_stops_its_writes_with_a_clear_error(tmp_path: Path) -> None:
    path, server = _setup(tmp_path, ttl_s=3)
    manifest = load(path)
    token_file = job_token_path(manifest.state_dir, "trainer")
    log = EventLog.in_state_dir(manifest.state_dir)
    job = _job(path)
    try:
        _wait(lambda: len(_steps(path)) >= 2, "the job's first checkpoints", timeout=120)
        token = token_file.read_text().strip()
        revoke_token(manifest, token)
        out, _ = job.communicate(timeout=60)
        text = out.decode()
        assert job.returncode != 0, text
        job_log = (Path(manifest.state_dir) / "train" / "trainer" / "job.log").read_text()
        assert "refused: vault server: revoked token" in job_log, job_log
        stopped = log.query(kind=ek.SEGMENT_TOKEN_REFRESH_STOPPED)
        assert stopped, "the supervisor did not say it stopped refreshing"
        assert "revoked" in stopped[0].data["reason"], stopped
        # nothing was written after the revocation reached the server: the worker's last
        # step is the one before its refused commit
        refused = int(job_log.split("checkpoint ", 1)[1].split()[0])
        assert _steps(path)[-1] == refused - 1
        _no_token_in(Path(manifest.state_dir), {token})
        assert token not in text
    finally:
        if job.poll() is None:
            os.killpg(job.pid, 15)
            job.wait(timeout=30)
        stop_server(server)
        log.close()
