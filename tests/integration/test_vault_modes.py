"""Vault replicas and the vault's state files are private by default (issue 12 item 17).

Real replicas on a real disk, under the most permissive umask (0), so nothing here
depends on the umask taking bits away: every directory the vault makes is 0700, every
value (object, snapshot document, label record, admin pin) 0400, every lock and state
file 0600, after a put (threads and worker processes), a repair by a read, a scrub, a
budgeted scrub's cursor, the guard's list and its freeze and restore. A restore (and
``vault get -o``) gives each file the mode it had in the snapshot. ``vault.mode: group``
opens the same to the owner's group (2770 / 0440 / 0660), never to others.
"""

from __future__ import annotations

import contextlib
import os
import random
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.events import EventLog
from bastion.manifest import load
from bastion.store import open_store, parse_replica_url
from bastion.vault import Guard, Vault, make_key, protect
from bastion.vault._objects import object_key
from tests.helpers import run_bastion

# What a put records: the modes the files had, whatever they were.
SOURCE_MODES = {"shadow": 0o640, "secret.key": 0o600, "notes.txt": 0o644, "open.csv": 0o666}


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    """umask 0: the vault must set every bit itself (worker processes inherit it)."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _modes(root: Path) -> dict[str, set[int]]:
    """Every mode under a replica root, by what it is."""
    found: dict[str, set[int]] = {"dirs": {_mode(root)}, "values": set(), "locks": set()}
    for path in root.rglob("*"):
        if path.is_dir():
            found["dirs"].add(_mode(path))
        elif path.parent.name == "tmp" and path.parent.parent == root:
            found["locks"].add(_mode(path))
        else:
            found["values"].add(_mode(path))
    return found


def _source(tmp_path: Path, rng: random.Random, count: int = 0) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for name, mode in SOURCE_MODES.items():
        path = src / name
        path.write_bytes(rng.randbytes(rng.randint(10, 5000)))
        path.chmod(mode)
    for i in range(count):
        (src / "sub" / f"f{i}.csv").write_text(f"{i},{rng.random()}\n" * rng.randint(1, 50))
    return src


def _tree(src: Path) -> dict[str, Path]:
    return {p.relative_to(src).as_posix(): p for p in sorted(src.rglob("*")) if p.is_file()}


def _vault(tmp_path: Path, **kwargs: object) -> Vault:
    key, admin = tmp_path / "keys" / "signing.key", tmp_path / "keys" / "admin.key"
    make_key(key)
    make_key(admin)
    return Vault(
        [tmp_path / "a", tmp_path / "b"],
        key_path=key,
        admin_key_path=admin,
        state_dir=tmp_path / "state",
        events=EventLog.in_state_dir(tmp_path / "state"),
        **kwargs,  # type: ignore[arg-type]
    )


def _assert_private(tmp_path: Path) -> None:
    for replica in ("a", "b"):
        modes = _modes(tmp_path / replica)
        assert modes["dirs"] == {0o700}, (replica, modes)
        assert modes["values"] == {0o400}, (replica, modes)
        assert modes["locks"] <= {0o600}, (replica, modes)


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "worker-processes"])
def test_replicas_and_state_files_are_private_after_put_repair_and_scrub(
    tmp_path: Path, rng: random.Random, processes: bool
) -> None:
    vault = _vault(tmp_path)
    vault.ingest_processes = processes
    src = _source(tmp_path, rng, count=40)
    snap = vault.put("dataset/private", _tree(src)).snapshot
    vault.commit("model/m", {"w.bin": rng.randbytes(3000)}, lineage=[snap.ref])
    vault.label("dataset/private", 1, "prod")
    _assert_private(tmp_path)
    assert (tmp_path / "a" / "config" / "admin.pub").exists()
    state = tmp_path / "state"
    assert _mode(state) == 0o700
    assert _mode(state / "vault.lock") == 0o600

    # a read repairs a copy lost with its directory on the replica read first: both
    # come back private (the store stays open, its directory cache stale, as in a long run)
    digest = snap.files["shadow"].chunks[0].id
    lost = tmp_path / "a" / object_key(digest)
    for path in lost.parent.iterdir():
        path.unlink()
    lost.parent.rmdir()
    assert vault.read(snap, "shadow") == (src / "shadow").read_bytes()
    assert lost.exists()
    _assert_private(tmp_path)

    # scrub rewrites a damaged copy: private too
    other = snap.files["secret.key"].chunks[0].id
    damaged = tmp_path / "a" / object_key(other)
    damaged.chmod(0o600)
    raw = bytearray(damaged.read_bytes())
    raw[-1] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    report = vault.scrub()
    assert report.repaired >= 1, report
    _assert_private(tmp_path)

    # a budgeted scrub keeps its cursor in the state dir, private
    vault.scrub(max_seconds=0.0)
    assert _mode(state / "scrub-cursor.json") == 0o600
    assert {_mode(p) for p in state.iterdir() if p.name != "events.db-wal"} <= {0o600, 0o700}


def test_restore_and_get_give_each_file_its_snapshot_mode(
    tmp_path: Path, rng: random.Random
) -> None:
    vault = _vault(tmp_path)
    src = _source(tmp_path, rng)
    snap = vault.commit("dataset/modes", _tree(src))
    assert {p: snap.files[p].mode for p in SOURCE_MODES} == SOURCE_MODES
    # bytes from memory have no mode of their own: private
    assert vault.commit("ckpt/j/step-000001", {"state": b"weights"}).files["state"].mode == 0o600

    fresh = tmp_path / "fresh"
    vault.restore(snap, fresh)
    assert {p: _mode(fresh / p) for p in SOURCE_MODES} == SOURCE_MODES

    # over existing files (whatever their modes), and after a clean
    over = tmp_path / "over"
    over.mkdir()
    for name in SOURCE_MODES:
        (over / name).write_text("old")
        (over / name).chmod(0o666)
    vault.restore(snap, over, clean=True)
    assert {p: _mode(over / p) for p in SOURCE_MODES} == SOURCE_MODES
    assert (over / "shadow").read_bytes() == (src / "shadow").read_bytes()


def test_vault_get_writes_a_new_file_with_its_snapshot_mode(tmp_path: Path) -> None:
    assert run_bastion("init", cwd=tmp_path).returncode == 0
    secret = tmp_path / "secret.key"
    secret.write_text("hunter2\n")
    secret.chmod(0o600)
    put = run_bastion("vault", "put", "dataset/s", "secret.key", cwd=tmp_path)
    assert put.returncode == 0, put.stdout + put.stderr
    got = run_bastion("vault", "get", "dataset/s", "secret.key", "-o", "out.key", cwd=tmp_path)
    assert got.returncode == 0, got.stdout + got.stderr
    assert (tmp_path / "out.key").read_text() == "hunter2\n"
    assert _mode(tmp_path / "out.key") == 0o600
    # the replicas bastion init made, and what the put wrote in them: the owner's alone
    for replica in ("a", "b"):
        modes = _modes(tmp_path / ".bastion" / "vault" / replica)
        assert modes["dirs"] == {0o700}, modes
        assert modes["values"] == {0o400}, modes


def test_a_replica_made_before_modes_is_closed_when_opened(tmp_path: Path) -> None:
    old = tmp_path / "old"
    (old / "tmp").mkdir(parents=True)
    old.chmod(0o755)
    (old / "tmp").chmod(0o755)
    open_store(str(old))
    assert _mode(old) == 0o700
    assert _mode(old / "tmp") == 0o700
    # a read-only check changes nothing
    old.chmod(0o755)
    open_store(str(old), create=False)
    assert _mode(old) == 0o755


def _wait(events: EventLog, kind: str, deadline_s: float = 30) -> None:
    end = time.monotonic() + deadline_s
    while not events.query(kind=kind):
        assert time.monotonic() < end, f"no {kind} within {deadline_s} s"
        time.sleep(0.05)


def test_the_guard_keeps_private_files_private(tmp_path: Path, rng: random.Random) -> None:
    vault = _vault(tmp_path)
    assert vault.events is not None
    events = EventLog.in_state_dir(tmp_path / "state")
    data = _source(tmp_path, rng)
    protect(vault, data, "dataset/guarded")
    assert _mode(tmp_path / "state" / "guard.json") == 0o600

    # a freeze takes write bits away and nothing else: 0600 becomes 0400, never 0444
    with Guard(vault, restore=False):
        (data / "README-DECRYPT.txt").write_text("pay up")
        _wait(events, "vault.guard.ransomware")
        frozen = {p: _mode(data / p) for p in SOURCE_MODES}
    assert frozen == {p: m & ~0o222 for p, m in SOURCE_MODES.items()}
    assert {p: _mode(data / p) for p in SOURCE_MODES} == SOURCE_MODES  # stop unfreezes

    # the guard's restore puts each file back with its snapshot mode
    (data / "README-DECRYPT.txt").unlink()
    with Guard(vault, restore=True, settle_s=0.2):
        victim = data / "secret.key"
        victim.chmod(0o666)
        victim.write_bytes(os.urandom(8000))
        # the guard may see the encrypted file first and freeze the directory: as designed
        with contextlib.suppress(PermissionError):
            (data / "HOW_TO_RECOVER.txt").write_text("pay up")
        _wait(events, "vault.guard.restored")
    assert {p: _mode(data / p) for p in SOURCE_MODES} == SOURCE_MODES
    assert not (data / "HOW_TO_RECOVER.txt").exists()


def test_group_mode_opens_the_vault_to_the_group_and_never_to_others(
    tmp_path: Path, rng: random.Random
) -> None:
    vault = _vault(tmp_path, mode="group")
    vault.ingest_processes = True  # the worker processes get the mode through worker_url
    snap = vault.commit("dataset/shared", _tree(_source(tmp_path, rng, count=20)))
    vault.scrub(max_seconds=0.0)
    for replica in ("a", "b"):
        modes = _modes(tmp_path / replica)
        assert modes["dirs"] == {0o2770}, modes
        assert modes["values"] == {0o440}, modes
        assert modes["locks"] <= {0o660}, modes
    assert _mode(tmp_path / "state" / "scrub-cursor.json") == 0o660
    assert vault.read(snap, "shadow") == (tmp_path / "src" / "shadow").read_bytes()
    url = vault.stores[0].worker_url
    assert url is not None
    assert parse_replica_url(url).mode == "group"

    # from the manifest, as a user writes it
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "bastion.yaml").write_text(
        "version: 1\nsystem: g\nvault:\n  replicas: [r/a, r/b]\n  mode: group\n"
    )
    manifest = load(tmp_path / "m" / "bastion.yaml")
    Vault.from_manifest(manifest)
    assert _mode(tmp_path / "m" / "r" / "a") == 0o2770
    (tmp_path / "m" / "bastion.yaml").write_text(
        "version: 1\nsystem: g\nvault:\n  replicas: [r/a]\n  mode: world\n"
    )
    checked = run_bastion("check", cwd=tmp_path / "m")
    assert checked.returncode == 2
    assert "mode" in checked.stdout + checked.stderr
