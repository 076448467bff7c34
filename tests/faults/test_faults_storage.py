"""Storage faults damage real files and revert them exactly (same bytes, same mtime)."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest

from bastion.drill.faults import (
    DeleteFiles,
    FillDisk,
    FlipBytes,
    MakeReadOnly,
    Scope,
    SlowReads,
    TruncateFile,
)
from bastion.errors import UsageError
from bastion.events import EventLog
from tests.helpers import small_tmpfs


def _tree_digest(root: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def data_dir(tmp_path: Path, seed: int) -> Path:
    import random

    rng = random.Random(seed)
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    for i in range(4):
        (root / f"f{i}.bin").write_bytes(rng.randbytes(rng.randint(100, 5000)))
    (root / "sub" / "g.bin").write_bytes(rng.randbytes(777))
    return root


def test_flip_bytes_injects_and_reverts(data_dir: Path, seed: int, tmp_path: Path) -> None:
    before = _tree_digest(data_dir)
    mtime = (data_dir / "f0.bin").stat().st_mtime_ns
    log = EventLog(tmp_path / "events.db")
    fault = FlipBytes(
        data_dir / "f0.bin", scope=Scope.of(paths=[data_dir]), count=5, seed=seed, events=log
    )
    fault.inject()
    after = _tree_digest(data_dir)
    assert after["f0.bin"] != before["f0.bin"]
    assert {k: v for k, v in after.items() if k != "f0.bin"} == {
        k: v for k, v in before.items() if k != "f0.bin"
    }
    fault.revert()
    assert _tree_digest(data_dir) == before
    assert (data_dir / "f0.bin").stat().st_mtime_ns == mtime
    kinds = [e.kind for e in log.query(kind="drill.fault.*")]
    assert kinds == ["drill.fault.injected", "drill.fault.reverted"]
    log.close()


def test_flip_bytes_blast_radius(data_dir: Path) -> None:
    with pytest.raises(UsageError, match="blast radius"):
        FlipBytes(data_dir, scope=Scope.of(paths=[data_dir]), max_files=2)


def test_truncate_injects_and_reverts(data_dir: Path) -> None:
    before = _tree_digest(data_dir)
    size = (data_dir / "f1.bin").stat().st_size
    with TruncateFile(data_dir / "f1.bin", scope=Scope.of(paths=[data_dir]), keep_fraction=0.25):
        assert (data_dir / "f1.bin").stat().st_size == int(size * 0.25)
    assert _tree_digest(data_dir) == before


def test_delete_file_and_directory_revert(data_dir: Path) -> None:
    before = _tree_digest(data_dir)
    scope = Scope.of(paths=[data_dir])
    with DeleteFiles([data_dir / "f2.bin", data_dir / "sub"], scope=scope, max_files=2):
        assert not (data_dir / "f2.bin").exists()
        assert not (data_dir / "sub").exists()
    assert _tree_digest(data_dir) == before
    assert not list(data_dir.parent.glob(".bastion-deleted-*"))


def test_read_only_blocks_writes_and_reverts(data_dir: Path) -> None:
    before = _tree_digest(data_dir)
    target = data_dir / "f3.bin"
    fault = MakeReadOnly(target, scope=Scope.of(paths=[data_dir]))
    fault.inject()
    try:
        assert target.stat().st_mode & 0o222 == 0
        if fault.enforced:
            with pytest.raises(PermissionError):
                target.write_bytes(b"overwritten")
    finally:
        fault.revert()
    assert _tree_digest(data_dir) == before
    target.write_bytes(b"writable again")


def test_fill_disk_causes_enospc_and_reverts(tmp_path: Path) -> None:
    (tmp_path / "small").mkdir()
    with small_tmpfs(tmp_path / "small", "4m") as small:
        (small / "keep.txt").write_text("kept")
        fault = FillDisk(small, scope=Scope.of(paths=[small]), leave_bytes=0)
        fault.inject()
        try:
            with pytest.raises(OSError) as err:
                (small / "more.bin").write_bytes(b"x" * 200_000)
            assert err.value.errno == 28  # ENOSPC
        finally:
            fault.revert()
        (small / "more.bin").write_bytes(b"x" * 200_000)
        assert (small / "keep.txt").read_text() == "kept"
        assert not (small / ".bastion-ballast").exists()


def test_fill_disk_refuses_a_big_filesystem(tmp_path: Path) -> None:
    fault = FillDisk(tmp_path, scope=Scope.of(paths=[tmp_path]), max_bytes=1024)
    with pytest.raises(UsageError, match="blast radius"):
        fault.inject()
    assert not (tmp_path / ".bastion-ballast").exists()


def test_slow_reads_are_slow_and_revert(tmp_path: Path, seed: int) -> None:
    import random

    data = random.Random(seed).randbytes(40_000)
    target = tmp_path / "shard.csv"
    target.write_bytes(data)
    fault = SlowReads(target, scope=Scope.of(paths=[tmp_path]), bytes_per_s=100_000)
    fault.inject()
    got: list[bytes] = []
    try:
        reader = threading.Thread(target=lambda: got.append(target.read_bytes()))
        started = time.monotonic()
        reader.start()
        reader.join(timeout=30)
        elapsed = time.monotonic() - started
        assert got == [data]
        # 40 kB at 100 kB/s: about 0.4 s. Generous bound: clearly slower than a disk read.
        assert elapsed > 0.2
    finally:
        fault.revert()
    assert target.is_file()
    assert target.read_bytes() == data
