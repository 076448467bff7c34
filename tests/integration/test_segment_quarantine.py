"""Quarantine one segment while the other keeps serving (issue 16).

A real ``bastion serve`` gateway process fronts two stand-in backends over HTTP, one in
``prod`` and one in ``staging``; a real vault server holds both segments' data. Under
continuous load, ``bastion.segment.quarantine(manifest, "staging")`` takes staging's
backend out of the gateway, refuses staging's tokens, freezes its protected directory
and stops its job (a real process, a real SIGTERM); prod answers every request.
``bastion segment release`` puts it back.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bastion.manifest import load
from bastion.segment import TokenError, TokenRefused, quarantine
from bastion.serve.standin import make_app
from bastion.vault import VaultClient, make_key
from bastion.vault._server import from_manifest
from tests.helpers import served

BASTION = [sys.executable, "-m", "bastion"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.loads(r.read())
    except OSError:
        return None


def _chat(base: str) -> tuple[int, str]:
    req = urllib.request.Request(
        f"{base}/v1/chat/completions",
        data=json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
            return r.status, r.headers.get("x-bastion-backend", "")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


class Load:
    """Requests back to back from a few threads; each: (started, ended, status, backend)."""

    def __init__(self, base: str, threads: int = 3) -> None:
        self.base = base
        self.rows: list[tuple[float, float, int, str]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            status, backend = _chat(self.base)
            with self._lock:
                self.rows.append((started, time.monotonic(), status, backend))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def wait_for(self, predicate: Any, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(list(self.rows)):
            assert time.monotonic() < deadline, f"never: {what}"
            time.sleep(0.05)


@pytest.fixture
def world(tmp_path: Path) -> Any:
    (tmp_path / "work" / "staging").mkdir(parents=True)
    (tmp_path / "work" / "staging" / "data.csv").write_text("a,b\n1,2\n")
    make_key(tmp_path / "keys" / "signing.key")
    make_key(tmp_path / "keys" / "admin.key")
    with served(make_app(name="prod")) as prod_url, served(make_app(name="staging")) as stg_url:
        port = _free_port()
        manifest_path = tmp_path / "bastion.yaml"
        manifest_path.write_text(
            f"""version: 1
system: segq
vault:
  replicas: [vault/a, vault/b]
  key: keys/signing.key
  admin_key: keys/admin.key
segments:
  prod: {{}}
  staging:
    protect: [work/staging]
jobs:
  etl:
    segment: staging
    command: [python, -c, "pass"]
services:
  api:
    listen: 127.0.0.1:{port}
    backends:
      - name: prod-a
        url: {prod_url}
        segment: prod
      - name: staging-a
        url: {stg_url}
        segment: staging
"""
        )
        proc = subprocess.Popen(
            [*BASTION, "serve", "api", "-f", str(manifest_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 40
            while not (_get(f"{base}/bastion/segments") or {}).get("upstreams"):
                assert proc.poll() is None, "bastion serve exited"
                assert time.monotonic() < deadline, "the gateway never listened"
                time.sleep(0.1)
            manifest = load(manifest_path)
            server = from_manifest(manifest)
            with served(server.app) as vault_url:
                yield manifest, manifest_path, base, vault_url
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _mint(path: Path, segment: str) -> str:
    out = subprocess.run(
        [*BASTION, "segment", "token", segment, "--ttl", "600", "-f", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_quarantine_one_segment_the_other_keeps_serving(world: Any) -> None:
    manifest, path, base, vault_url = world
    staging = VaultClient(vault_url, _mint(path, "staging"))
    prod = VaultClient(vault_url, _mint(path, "prod"))
    staging.commit("model/staging/m", {"w.bin": b"staging weights"})
    prod.commit("model/prod/m", {"w.bin": b"prod weights"})
    # the staging job's supervisor: a real process that must get a SIGTERM
    sup = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    job_dir = Path(manifest.state_dir) / "train" / "etl"
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "supervisor.json").write_text(
        json.dumps({"status": "running", "supervisor_pid": sup.pid})
    )
    try:
        with Load(base) as load_:
            load_.wait_for(
                lambda rows: {"prod-a", "staging-a"} <= {r[3] for r in rows},
                "both segments' backends answering",
            )
            report = quarantine(manifest, "staging")
            done = time.monotonic()
            n_at_done = len(load_.rows)
            load_.wait_for(lambda rows: len(rows) > n_at_done + 30, "30 more requests")
        rows = load_.rows
        failed = [r for r in rows if r[2] != 200]
        assert not failed, f"{len(failed)} of {len(rows)} requests failed: {failed[:3]}"
        after = [r for r in rows if r[0] > done]
        assert after
        assert all(r[3] == "prod-a" for r in after), {r[3] for r in after}
        assert report.backends == ["api/staging-a"]
        assert report.gateways == {"api": ["staging-a"]}
        assert report.jobs == {"etl": "stopped"}
        assert sup.wait(timeout=10) == -signal.SIGTERM
        frozen = Path(report.frozen[0])
        assert frozen.name == "staging"
        assert not (frozen / "data.csv").stat().st_mode & 0o222
        assert not frozen.stat().st_mode & 0o222
        # staging's tokens are refused, prod's still work
        with pytest.raises(TokenError, match="quarantined"):
            staging.read("model/staging/m", "w.bin")
        assert prod.read("model/prod/m", "w.bin") == b"prod weights"
        out = subprocess.run(
            [*BASTION, "segment", "token", "staging", "-f", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 2
        assert "quarantined" in out.stderr
        # release (the CLI): the backend rejoins, the directory thaws, old tokens stay out
        shown = subprocess.run(
            [*BASTION, "segment", "release", "staging", "--json", "-f", str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
        doc = json.loads(shown.stdout)
        assert doc["backends"] == ["api/staging-a"]
        assert doc["thawed"] == [str(frozen)]
        assert (frozen / "data.csv").stat().st_mode & 0o200
        with Load(base, threads=2) as load_:
            load_.wait_for(lambda rows: "staging-a" in {r[3] for r in rows}, "staging back")
        assert all(r[2] == 200 for r in load_.rows)
        with pytest.raises(TokenError, match="issued before"):
            staging.read("model/staging/m", "w.bin")
        fresh = VaultClient(vault_url, _mint(path, "staging"))
        assert fresh.read("model/staging/m", "w.bin") == b"staging weights"
        for c in (staging, prod, fresh):
            c.close()
    finally:
        if sup.poll() is None:
            sup.kill()
        sup.wait()


def test_quarantine_of_an_unknown_segment_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text("version: 1\nsystem: s\nsegments: [prod]\n")
    out = subprocess.run(
        [*BASTION, "segment", "quarantine", "nope", "-f", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert out.returncode == 2
    assert "segment 'nope' is not in" in out.stderr
    assert "segments: prod" in out.stderr


def test_bastion_vault_serve_and_the_token_commands(tmp_path: Path) -> None:
    from bastion.serve.runner import spawn_server, stop_server

    make_key(tmp_path / "keys" / "signing.key")
    make_key(tmp_path / "keys" / "admin.key")
    path = tmp_path / "bastion.yaml"
    path.write_text(
        "version: 1\nsystem: s\nvault:\n  replicas: [vault/a]\n  key: keys/signing.key\n"
        "  admin_key: keys/admin.key\nsegments: [prod, staging]\n"
    )
    proc, port = spawn_server(
        ["-m", "bastion", "vault", "serve", "--listen", "127.0.0.1:0", "-f", str(path)]
    )
    try:
        token = _mint(path, "staging")
        narrowed = subprocess.run(
            [*BASTION, "segment", "attenuate", "-", "--ops", "read"],
            input=token,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        shown = json.loads(
            subprocess.run(
                [*BASTION, "segment", "inspect", narrowed],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        assert [b["ops"] for b in shown["blocks"]] == [["read", "append"], ["read"]]
        url = f"http://127.0.0.1:{port}"
        with VaultClient(url, token) as writer, VaultClient(url, narrowed) as reader:
            snap = writer.commit("dataset/staging/d", {"rows.csv": b"a,b\n1,2\n"})
            assert snap["ref"] == "dataset/staging/d@1"
            assert reader.read("dataset/staging/d", "rows.csv") == b"a,b\n1,2\n"
            with pytest.raises(TokenRefused, match="not append"):
                reader.commit("dataset/staging/d", {"rows.csv": b"x"})
        out = subprocess.run(
            [*BASTION, "segment", "token", "staging", "--ops", "delete", "-f", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 2
        assert "deleting needs the vault admin key" in out.stderr
    finally:
        stop_server(proc)
