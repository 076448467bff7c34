"""``--json`` on the listing commands (issue 12, item 3): ``vault ls|log|verify|scrub``,
``check`` and ``serve status`` each print one JSON document with the keys
docs/cli-json.md lists, whose content matches what was done; piped, no progress bar or
table leaks into it. Real ``bastion`` processes on a real vault."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers import run_bastion

BASTION = [sys.executable, "-m", "bastion"]


def _json(cwd: Path, *args: str, code: int = 0) -> dict[str, Any]:
    done = run_bastion(*args, "--json", cwd=cwd)
    assert done.returncode == code, done.stdout + done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)  # the whole of stdout is one document
    return doc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_vault_listings_as_json(tmp_path: Path) -> None:
    assert run_bastion("init", cwd=tmp_path).returncode == 0
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("x,y\n1,2\n" * 500)
    (data / "b.bin").write_bytes(bytes(range(256)) * 100)
    long_name = "ckpt/a-rather-long-training-job-name/step-000001200"
    for name in ("dataset/d", "dataset/d", long_name):
        put = run_bastion("vault", "put", name, "data", cwd=tmp_path)
        assert put.returncode == 0, put.stderr
        assert put.stderr == ""  # piped: no progress bar, not even on stderr
    listed = _json(tmp_path, "vault", "ls")
    assert listed["degraded"] == []
    by_name = {a["name"]: a for a in listed["artifacts"]}
    assert set(by_name) == {"dataset/d", long_name}  # whole, never cut to a width
    d = by_name["dataset/d"]
    assert (d["version"], d["ref"], d["files"], d["labels"]) == (2, "dataset/d@2", 2, {"latest": 2})
    assert d["bytes"] == 8 * 500 + 256 * 100
    assert len(d["id"]) == 64
    assert set(d) == {
        "name",
        "version",
        "ref",
        "id",
        "created",
        "files",
        "bytes",
        "lineage",
        "labels",
    }

    log = _json(tmp_path, "vault", "log", "dataset/d")
    assert log["name"] == "dataset/d"
    assert [v["version"] for v in log["versions"]] == [1, 2]
    assert all(v["files"] == 2 and v["lineage"] == [] for v in log["versions"])

    for verb in ("verify", "scrub"):
        done = run_bastion("vault", verb, "--json", cwd=tmp_path)
        assert done.stderr == "", done.stderr
        report = json.loads(done.stdout)
        assert report["ok"] is True
        assert report["replicas"] == 2
        assert report["objects"] > 0
        assert report["copies_checked"] == 2 * report["objects"]
        assert report["bad_copies"] == 0


def test_check_as_json_counts_and_warns_of_an_unset_key(tmp_path: Path) -> None:
    manifest = tmp_path / "bastion.yaml"
    manifest.write_text(
        "version: 1\nsystem: keyed\nservices:\n  chat:\n    listen: 127.0.0.1:1\n"
        "    backends:\n      - name: vendor\n        url: http://127.0.0.1:2\n"
        "        api_key_env: BASTION_TEST_UNSET_KEY\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "BASTION_TEST_UNSET_KEY"}
    done = run_bastion("check", "-f", str(manifest), "--json", env=env)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert (doc["ok"], doc["system"], doc["services"], doc["jobs"]) == (True, "keyed", 1, 0)
    assert doc["problems"] == []
    assert len(doc["warnings"]) == 1
    assert "BASTION_TEST_UNSET_KEY" in doc["warnings"][0]
    # As text, the warning goes to stderr and the check still passes; set, no warning.
    text = run_bastion("check", "-f", str(manifest), env=env)
    assert text.returncode == 0
    assert "warning:" in text.stderr
    assert "BASTION_TEST_UNSET_KEY" in text.stderr
    secret = "value-that-must-not-print-123"
    quiet = run_bastion("check", "-f", str(manifest), env={**env, "BASTION_TEST_UNSET_KEY": secret})
    assert quiet.returncode == 0
    assert "warning" not in quiet.stderr
    assert secret not in quiet.stdout + quiet.stderr

    manifest.write_text("version: 1\nsystem: [\n")
    bad = run_bastion("check", "-f", str(manifest), "--json")
    assert bad.returncode == 2
    broken = json.loads(bad.stdout)
    assert broken["ok"] is False
    assert broken["problems"][0]["line"] >= 2
    assert set(broken["problems"][0]) == {"file", "line", "column", "path", "message"}


def test_serve_status_as_json_running_and_not(tmp_path: Path) -> None:
    port = _free_port()
    manifest = tmp_path / "bastion.yaml"
    manifest.write_text(
        f"version: 1\nsystem: s\nservices:\n  chat:\n    listen: 127.0.0.1:{port}\n"
        f"    backends:\n      - name: far\n        url: http://127.0.0.1:{_free_port()}\n"
        "        api_key_env: BASTION_TEST_UNSET_KEY\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "BASTION_TEST_UNSET_KEY"}
    text = run_bastion("serve", "status", cwd=tmp_path)
    assert text.returncode == 1
    assert "urlopen" not in text.stdout + text.stderr
    assert (
        f"no gateway is running for service chat at 127.0.0.1:{port} (connection refused); "
        "start it with `bastion serve chat`"
    ) in text.stderr
    down = _json(tmp_path, "serve", "status", code=1)
    assert down["services"] == [
        {
            "service": "chat",
            "listen": f"127.0.0.1:{port}",
            "running": False,
            "reason": "connection refused",
        }
    ]
    proc = subprocess.Popen(
        [*BASTION, "serve", "-f", str(manifest)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/bastion/status", timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "the gateway never listened"
                time.sleep(0.05)
        up = _json(tmp_path, "serve", "status")
        (chat,) = up["services"]
        assert (chat["service"], chat["running"]) == ("chat", True)
        assert [u["name"] for u in chat["status"]["pool"]["upstreams"]] == ["far"]
        assert chat["status"]["listen"].endswith(f":{port}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        said = proc.stdout.read() if proc.stdout is not None else ""
        if proc.stdout is not None:
            proc.stdout.close()
    # the unset key was named at start, before the gateway said it was serving
    warned = said.index("api_key_env BASTION_TEST_UNSET_KEY is not set")
    assert warned < said.index(f"serving chat on http://127.0.0.1:{port}")


def _on_a_terminal(cwd: Path, *args: str) -> tuple[int, str]:
    """Run ``bastion ARGS`` with a pseudo-terminal as stdin, stdout and stderr."""
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [*BASTION, *args],
        cwd=cwd,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
    )
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal closed with the process
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    return proc.wait(60), seen.decode(errors="replace")


def test_twin_up_status_down_as_json(tmp_path: Path) -> None:
    assert run_bastion("init", cwd=tmp_path).returncode == 0
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("x,y\n1,2\n" * 500)
    assert run_bastion("vault", "put", "dataset/d", "data", cwd=tmp_path).returncode == 0
    up = _json(tmp_path, "twin", "up")
    assert set(up) == {
        "name",
        "production",
        "manifest",
        "root",
        "state_dir",
        "ports",
        "replicas",
        "created",
        "seconds",
    }
    assert up["name"] == "twin"
    assert up["production"] == str((tmp_path / "bastion.yaml").resolve())
    for replica in up["replicas"]:
        assert set(replica) == {
            "production",
            "twin",
            "reflinked",
            "linked",
            "resigned",
            "shared_bytes",
        }
        assert replica["linked"] + replica["reflinked"] >= 1
        assert replica["resigned"] == 2  # the snapshot document and its label
    # the twin manifest works with every command: the twin's vault lists production's
    listed = _json(tmp_path, "vault", "ls", "-f", up["manifest"])
    assert [a["ref"] for a in listed["artifacts"]] == ["dataset/d@1"]
    status = _json(tmp_path, "twin", "status")
    assert set(status) == {"name", "root", "exists", "twin", "listening", "pids"}
    assert status["exists"] is True
    assert status["twin"] == up
    down = _json(tmp_path, "twin", "down")
    assert down == {"name": "twin", "removed": [up["root"], str(Path(up["root"]).parent)]}
    assert _json(tmp_path, "twin", "status")["exists"] is False


def test_progress_bars_are_drawn_on_a_terminal(tmp_path: Path) -> None:
    assert run_bastion("init", cwd=tmp_path).returncode == 0
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.bin").write_bytes(os.urandom(300_000))
    code, shown = _on_a_terminal(tmp_path, "vault", "put", "dataset/t", "data")
    assert code == 0, shown
    assert "put dataset/t: 1 files" in shown
    assert "━" in shown  # the bar
    code, shown = _on_a_terminal(tmp_path, "vault", "scrub")
    assert code == 0, shown
    assert "scrub: objects checked" in shown
    code, shown = _on_a_terminal(tmp_path, "vault", "verify")
    assert code == 0, shown
    assert "verify: objects checked" in shown
