"""Every count `bastion vault` prints is what happened (issue 19, item 3).

Real processes, a real manifest, a real full filesystem (a small tmpfs filled with
``FillDisk``): a put that reached fewer replicas than configured, a repair that failed,
a replica that could not be checked, a missing or wrong admin pin, each is a non-zero
exit naming the replica and the fix; read-only ``verify`` changes nothing.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from bastion.drill.faults import DeleteFiles, FillDisk, Scope
from bastion.events import EventLog
from tests.helpers import run_bastion, small_tmpfs


def _bastion(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_bastion(*args, cwd=cwd, timeout=180)


def _data(root: Path, rng: random.Random) -> Path:
    data = root / "data"
    data.mkdir()
    for i in range(8):
        rows = "".join(f"{rng.random():.6f},{rng.randint(0, 9)}\n" for _ in range(3000))
        (data / f"part-{i}.csv").write_text(rows)
    (data / "blob.bin").write_bytes(rng.randbytes(300_000))
    return data


def _kinds(root: Path, kind: str, since_id: int = 0) -> int:
    with EventLog.in_state_dir(root / ".bastion") as log:
        return sum(1 for e in log.query(kind=kind) if e.id > since_id)


def _last_id(root: Path) -> int:
    with EventLog.in_state_dir(root / ".bastion") as log:
        events = log.query()
        return events[-1].id if events else 0


@pytest.fixture
def vault_dir(tmp_path: Path) -> Path:
    assert _bastion(tmp_path, "init").returncode == 0
    return tmp_path


def test_a_put_that_misses_a_full_replica_says_so_and_fails(
    vault_dir: Path, rng: random.Random
) -> None:
    data = _data(vault_dir, rng)
    b = vault_dir / ".bastion" / "vault" / "b"
    with small_tmpfs(b, "2m"):
        (b / "tmp").mkdir()
        fill = FillDisk(b, scope=Scope.of(paths=[b]), max_bytes=8 << 20)
        fill.inject()
        try:
            put = _bastion(vault_dir, "vault", "put", "dataset/d", str(data))
        finally:
            fill.revert()
        out = put.stdout + put.stderr
        assert put.returncode == 1, out
        assert "on 1/2 replicas" in put.stdout  # what its own event says, not 2/2
        assert str(b) in out
        assert "No space left on device" in out
        assert "bastion vault scrub" in out
        # the snapshot is there and reads back (on the replica that has it)
        got = _bastion(vault_dir, "vault", "get", "dataset/d", "part-3.csv")
        assert got.stdout == (data / "part-3.csv").read_text()
        # space is back: scrub copies what the replica lacks, and every count is true
        before = _last_id(vault_dir)
        scrub = _bastion(vault_dir, "vault", "scrub")
        assert scrub.returncode == 0, scrub.stdout + scrub.stderr
        repaired = _kinds(vault_dir, "vault.repaired", before)
        assert repaired > 0
        assert f"repaired {repaired}," in scrub.stdout
        assert "repairs failed 0" in scrub.stdout
        verify = _bastion(vault_dir, "vault", "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "bad copies 0" in verify.stdout


def test_failed_repairs_are_counted_as_failed_and_exit_non_zero(
    vault_dir: Path, rng: random.Random
) -> None:
    data = _data(vault_dir, rng)
    b = vault_dir / ".bastion" / "vault" / "b"
    with small_tmpfs(b, "4m"):
        (b / "tmp").mkdir()
        assert _bastion(vault_dir, "vault", "put", "dataset/d", str(data)).returncode == 0
        objects = sorted(p for p in (b / "objects").rglob("*") if p.is_file())
        assert len(objects) > 4
        DeleteFiles(objects, scope=Scope.of(paths=[b]), max_files=len(objects)).inject()
        fill = FillDisk(b, scope=Scope.of(paths=[b]), max_bytes=8 << 20)
        fill.inject()
        try:
            before = _last_id(vault_dir)
            scrub = _bastion(vault_dir, "vault", "scrub")
        finally:
            fill.revert()
        out = scrub.stdout + scrub.stderr
        failed = _kinds(vault_dir, "vault.repair_failed", before)
        repaired = _kinds(vault_dir, "vault.repaired", before)
        assert failed > 0
        assert scrub.returncode == 1, out
        assert f"repaired {repaired}," in scrub.stdout
        assert f"repairs failed {failed}," in scrub.stdout
        assert f"{failed} repairs failed ({failed} on {b}" in out
        assert "free space" in out
        # with space again the same scrub repairs everything
        again = _bastion(vault_dir, "vault", "scrub")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "repairs failed 0" in again.stdout


def test_verify_never_recreates_a_deleted_replica_and_says_it_was_not_checked(
    vault_dir: Path, rng: random.Random
) -> None:
    data = _data(vault_dir, rng)
    assert _bastion(vault_dir, "vault", "put", "dataset/d", str(data)).returncode == 0
    b = vault_dir / ".bastion" / "vault" / "b"
    shutil.rmtree(b)
    verify = _bastion(vault_dir, "vault", "verify")
    out = verify.stdout + verify.stderr
    assert verify.returncode == 1, out
    assert not b.exists(), "verify re-created a deleted replica directory"
    assert f"not checked: {b}" in out
    assert "on 1 of 2 replicas" in verify.stdout
    as_json = _bastion(vault_dir, "vault", "verify", "--json")
    assert as_json.returncode == 1
    assert not b.exists()
    # scrub rebuilds it: every object, every document, and the admin pin
    scrub = _bastion(vault_dir, "vault", "scrub")
    assert scrub.returncode == 0, scrub.stdout + scrub.stderr
    assert "admin pin written on 1" in scrub.stdout
    a = vault_dir / ".bastion" / "vault" / "a"
    assert (b / "config" / "admin.pub").read_bytes() == (a / "config" / "admin.pub").read_bytes()
    verify = _bastion(vault_dir, "vault", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_an_unreachable_replica_is_not_skipped_in_silence(vault_dir: Path) -> None:
    (vault_dir / "f.txt").write_text("x")
    assert _bastion(vault_dir, "vault", "put", "dataset/d", "f.txt").returncode == 0
    b = vault_dir / ".bastion" / "vault" / "b"
    shutil.rmtree(b)
    b.write_text("a file where the replica's directory was")  # cannot be re-created
    for command in ("scrub", "verify"):
        done = _bastion(vault_dir, "vault", command)
        out = done.stdout + done.stderr
        assert done.returncode == 1, (command, out)
        assert f"not checked: {b}" in out
    gc = _bastion(vault_dir, "vault", "gc", "--grace-s", "0")
    assert gc.returncode == 1, gc.stdout + gc.stderr
    assert f"gc did not reach {b}" in gc.stdout + gc.stderr


def test_a_damaged_admin_pin_is_found_by_verify_and_scrub_and_never_rewritten(
    vault_dir: Path,
) -> None:
    (vault_dir / "f.txt").write_text("x")
    assert _bastion(vault_dir, "vault", "put", "dataset/d", "f.txt").returncode == 0
    pin = vault_dir / ".bastion" / "vault" / "b" / "config" / "admin.pub"
    damaged = bytearray(pin.read_bytes())
    damaged[5] ^= 0x01
    pin.chmod(0o644)
    pin.write_bytes(bytes(damaged))
    for command in ("verify", "scrub"):
        done = _bastion(vault_dir, "vault", command)
        out = done.stdout + done.stderr
        assert done.returncode == 1, (command, out)
        assert f"admin key pin (config/admin.pub) on {pin.parents[1]}" in out
    assert pin.read_bytes() == bytes(damaged)
