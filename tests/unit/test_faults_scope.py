"""Scope: a fault pointed outside the experiment's scope refuses, naming target and scope."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.drill.faults import (
    DeleteFiles,
    FlipBytes,
    HangProcess,
    KillProcess,
    Ransomware,
    Scope,
    TruncateFile,
)
from bastion.errors import ScopeError


def test_path_outside_scope_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    inside = tmp_path / "inside"
    outside = tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    victim = outside / "precious.bin"
    victim.write_bytes(b"precious bytes")
    scope = Scope.of(paths=[inside], name="t")
    for make in (
        lambda: FlipBytes(victim, scope=scope),
        lambda: TruncateFile(victim, scope=scope),
        lambda: DeleteFiles(victim, scope=scope),
        lambda: Ransomware(outside, scope=scope, keyfile=tmp_path / "k"),
    ):
        with pytest.raises(ScopeError) as err:
            make()
        message = str(err.value)
        assert str(victim.parent) in message  # names the target
        assert "scope 't'" in message  # and the scope
        assert str(inside) in message
    assert victim.read_bytes() == b"precious bytes"


def test_symlink_and_dotdot_escapes_are_refused(tmp_path: Path) -> None:
    inside = tmp_path / "inside"
    inside.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    (inside / "link").symlink_to(secret)
    scope = Scope.of(paths=[inside])
    with pytest.raises(ScopeError):
        FlipBytes(inside / "link", scope=scope)
    with pytest.raises(ScopeError):
        FlipBytes(inside / ".." / "secret.txt", scope=scope)


def test_root_and_init_cannot_be_in_scope() -> None:
    with pytest.raises(ScopeError):
        Scope.of(paths=["/"])
    with pytest.raises(ScopeError):
        Scope.of(pids=[1])


def test_pid_outside_scope_is_refused_and_the_process_lives(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        scope = Scope.of(pids=[], paths=[tmp_path], name="no-procs")
        with pytest.raises(ScopeError) as err:
            KillProcess(proc.pid, scope=scope)
        assert f"pid {proc.pid}" in str(err.value)
        assert "no-procs" in str(err.value)
        with pytest.raises(ScopeError):
            HangProcess(os.getpid(), scope=scope.with_pids(proc.pid))
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_descendant_of_a_scoped_process_is_in_scope() -> None:
    code = (
        "import subprocess,sys,time; "
        "p=subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)']); "
        "print(p.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        scope = Scope.of(pids=[parent.pid])
        assert scope.contains_pid(child)
        assert not scope.contains_pid(os.getppid())
    finally:
        import psutil

        for p in psutil.Process(parent.pid).children(recursive=True):
            p.kill()
        parent.kill()
        parent.wait()
        assert parent.stdout is not None
        parent.stdout.close()


def test_port_scope() -> None:
    scope = Scope.of(ports=[8801])
    assert scope.check_port(8801) == 8801
    with pytest.raises(ScopeError, match="port 22"):
        scope.check_port(22)
