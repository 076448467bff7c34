"""Ransomware simulation: files are really encrypted, renamed and noted; revert restores."""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bastion.drill.faults import Ransomware, Scope, restore_from_journal
from bastion.drill.faults.ransomware import NOTE_NAME, SUFFIX
from bastion.errors import UsageError


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _make(root: Path, rng: random.Random, n: int) -> None:
    (root / "nested").mkdir(parents=True)
    for i in range(n):
        where = root / "nested" if i % 3 == 0 else root
        (where / f"doc-{i:02d}.csv").write_bytes(rng.randbytes(rng.randint(10, 3000)))


def test_encrypts_in_place_and_reverts(tmp_path: Path, rng: random.Random) -> None:
    root = tmp_path / "data"
    _make(root, rng, 8)
    before = _digests(root)
    sizes = {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}
    fault = Ransomware(
        root, scope=Scope.of(paths=[root]), keyfile=tmp_path / "journal.jsonl", max_files=5
    )
    fault.inject()
    locked = sorted(root.rglob(f"*{SUFFIX}"))
    assert len(locked) == 5
    assert (root / NOTE_NAME).is_file()
    for path in locked:
        original = path.with_name(path.name.removesuffix(SUFFIX))
        key = str(original.relative_to(root))
        assert hashlib.sha256(path.read_bytes()).hexdigest() != before[key]
        assert path.stat().st_size == sizes[key]  # in place: CTR keeps the size
    assert (tmp_path / "journal.jsonl").stat().st_mode & 0o077 == 0
    fault.revert()
    assert _digests(root) == before


def test_journal_must_be_outside_target(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="outside"):
        Ransomware(tmp_path, scope=Scope.of(paths=[tmp_path]), keyfile=tmp_path / "k")


def test_separate_process_stopped_midway_is_still_revertible(
    tmp_path: Path, rng: random.Random
) -> None:
    """As a guard would: watch the attack from outside, SIGKILL it, then revert."""
    root = tmp_path / "data"
    _make(root, rng, 30)
    before = _digests(root)
    journal = tmp_path / "journal.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bastion.drill.faults.ransomware",
            "--root",
            str(root),
            "--keyfile",
            str(journal),
            "--rate",
            "20",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    locked = 0
    deadline = time.monotonic() + 30
    while locked < 3 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("locked /"):
            locked += 1
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert locked >= 3
    assert len(list(root.rglob(f"*{SUFFIX}"))) < 30  # stopped before it got everything
    restored = restore_from_journal(journal, scope=Scope.of(paths=[root]))
    assert restored >= locked
    assert _digests(root) == before


def test_cli_revert(tmp_path: Path, rng: random.Random) -> None:
    root = tmp_path / "data"
    _make(root, rng, 4)
    before = _digests(root)
    journal = tmp_path / "j.jsonl"
    run = [sys.executable, "-m", "bastion.drill.faults.ransomware", "--keyfile", str(journal)]
    subprocess.run([*run, "--root", str(root)], check=True, capture_output=True)
    assert len(list(root.rglob(f"*{SUFFIX}"))) == 4
    subprocess.run([*run, "--revert"], check=True, capture_output=True)
    assert _digests(root) == before


def test_ransomware_process_is_stopped_and_reverted(tmp_path: Path, rng: random.Random) -> None:
    from bastion.drill.faults import RansomwareProcess

    root = tmp_path / "data"
    _make(root, rng, 40)
    before = _digests(root)
    fault = RansomwareProcess(
        root, scope=Scope.of(paths=[root]), keyfile=tmp_path / "j.jsonl", files_per_s=20
    )
    fault.inject()
    deadline = time.monotonic() + 30
    while fault.files_locked() < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fault.proc is not None
    assert fault.proc.poll() is None  # still attacking: the revert has to stop it
    details = fault.revert()
    assert details["exit_code"] == -signal.SIGKILL
    assert 3 <= details["files_reached"] < 40
    assert _digests(root) == before
