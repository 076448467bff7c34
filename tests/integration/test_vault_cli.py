"""``bastion vault`` end to end, as a user runs it: real processes, a real manifest."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.helpers import run_bastion


def _bastion(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_bastion(*args, cwd=cwd, timeout=120)


def test_vault_cli_put_ls_get_verify_restore_lineage(tmp_path: Path) -> None:
    assert _bastion(tmp_path, "init").returncode == 0
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("x,y\n1,2\n" * 1000)
    (data / "b.bin").write_bytes(bytes(range(256)) * 4000)
    put = _bastion(tmp_path, "vault", "put", "dataset/d", "data")
    assert put.returncode == 0, put.stderr
    assert "dataset/d@1" in put.stdout
    run = _bastion(tmp_path, "vault", "put", "model/m", "data/a.csv", "--lineage", "dataset/d@1")
    assert run.returncode == 0, run.stderr
    ls = _bastion(tmp_path, "vault", "ls")
    assert "dataset/d" in ls.stdout
    assert "model/m" in ls.stdout
    got = _bastion(tmp_path, "vault", "get", "dataset/d@1", "a.csv")
    assert got.stdout == (data / "a.csv").read_text()
    verify = _bastion(tmp_path, "vault", "verify", "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["ok"] is True
    deep = _bastion(tmp_path, "vault", "verify", "--deep", "--json")
    assert deep.returncode == 0, deep.stdout + deep.stderr
    report = json.loads(deep.stdout)
    assert report["deep"] is True
    assert report["ok"] is True
    lineage = _bastion(tmp_path, "vault", "lineage", "model/m", "--json")
    graph = json.loads(lineage.stdout)
    assert ["model/m@1", "dataset/d@1"] in graph["edges"]
    restored = _bastion(tmp_path, "vault", "restore", "dataset/d", "out")
    assert restored.returncode == 0, restored.stderr
    assert (tmp_path / "out" / "b.bin").read_bytes() == (data / "b.bin").read_bytes()
    log = _bastion(tmp_path, "vault", "log", "dataset/d")
    assert log.returncode == 0


def test_vault_cli_bad_names_exit_2(tmp_path: Path) -> None:
    assert _bastion(tmp_path, "init").returncode == 0
    (tmp_path / "f.txt").write_text("x")
    for name in ("dataset/../etc", "/etc/passwd", "dataset/a\\b"):
        result = _bastion(tmp_path, "vault", "put", name, "f.txt")
        assert result.returncode == 2, (name, result.stdout, result.stderr)
        assert "name" in (result.stdout + result.stderr).lower()
    result = _bastion(tmp_path, "vault", "get", "dataset/none@3", "x")
    assert result.returncode == 2


def test_vault_cli_gc_needs_the_admin_key(tmp_path: Path) -> None:
    assert _bastion(tmp_path, "init").returncode == 0
    (tmp_path / "f.txt").write_text("x")
    for _ in range(3):
        assert _bastion(tmp_path, "vault", "put", "dataset/d", "f.txt").returncode == 0
    admin = tmp_path / ".bastion" / "keys" / "admin.key"
    admin.rename(tmp_path / "offline-admin.key")
    denied = _bastion(tmp_path, "vault", "gc", "--keep-last", "1", "--grace-s", "0")
    assert denied.returncode == 2, denied.stdout + denied.stderr
    (tmp_path / "offline-admin.key").rename(admin)
    done = _bastion(tmp_path, "vault", "gc", "--keep-last", "1", "--grace-s", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "snapshots deleted 2" in done.stdout  # versions 1 and 2; 3 (@latest) stays
    log = _bastion(tmp_path, "vault", "log", "dataset/d")
    assert "3" in log.stdout
