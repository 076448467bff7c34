"""What is fsynced, and in what order, before a snapshot becomes visible.

A power loss cannot be staged here, so these tests watch the flushes themselves: every
``os.fsync`` (the path its descriptor names, through /proc) and every ``syncfs`` the
replicas call, and the order of each replica's puts. They run on ``LocalStore``
directories on the real disk; the fsyncs are real (the spy records, then calls them).

- ``make_dirs`` reports the directories it made; a durable put fsyncs its key's
  directory and the parent of each directory made for it, and no other directory.
- ``sync(keys)`` fsyncs those values and every directory up to the root, never the
  whole filesystem; ``sync()`` is one ``syncfs``.
- A commit naming few objects flushes exactly those (written now or found in place),
  a bigger one flushes each replica with ``syncfs``; the objects are flushed before the
  snapshot document is put, and the document is durable on every replica before a
  label record is put anywhere.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Collection, Sequence
from pathlib import Path

import pytest

from bastion.events import EventLog
from bastion.store import Buffer, LocalStore, make_dirs
from bastion.store import _local as local
from bastion.vault import Vault, make_key
from bastion.vault._objects import object_key
from bastion.vault._vault import FSYNC_OBJECTS


class _Flushes:
    """Every fsync (by path) and syncfs made while installed."""

    def __init__(self) -> None:
        self.fsynced: list[str] = []
        self.syncfs = 0


@pytest.fixture
def flushes(monkeypatch: pytest.MonkeyPatch) -> _Flushes:
    seen = _Flushes()
    real_fsync, real_syncfs = os.fsync, local._syncfs
    lock = threading.Lock()

    def fsync(fd: int) -> None:
        where = str(Path(f"/proc/self/fd/{fd}").readlink())
        with lock:
            seen.fsynced.append(where)
        real_fsync(fd)

    def syncfs(fd: int) -> None:
        with lock:
            seen.syncfs += 1
        real_syncfs(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(local, "_syncfs", syncfs)
    return seen


def _dirs(flushes: _Flushes) -> set[str]:
    return {p for p in flushes.fsynced if Path(p).is_dir()}


def test_make_dirs_reports_only_what_it_made(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    made = make_dirs(tmp_path / "a" / "b" / "c", 0o700)
    assert made == [str(tmp_path / "a" / "b"), str(tmp_path / "a" / "b" / "c")]
    assert all(Path(d).stat().st_mode & 0o777 == 0o700 for d in made)
    assert make_dirs(tmp_path / "a" / "b" / "c", 0o700) == []  # there already
    assert make_dirs(tmp_path / "a" / "b" / "d", 0o700) == [str(tmp_path / "a" / "b" / "d")]


@pytest.mark.parametrize("unnamed", [True, False], ids=["O_TMPFILE", "tmp-dir-and-link"])
def test_a_durable_put_fsyncs_the_parent_of_each_directory_it_made(
    tmp_path: Path, flushes: _Flushes, unnamed: bool
) -> None:
    root = tmp_path / "r"
    store = LocalStore(root)
    store._tmpfile = store._tmpfile and unnamed
    flushes.fsynced.clear()
    store.put("snapshots/m/x/_v/0000000001", [b"doc"], durable=True)
    v = root / "snapshots" / "m" / "x" / "_v"
    # the key's directory, and the parent of each directory made for it: here every
    # one from snapshots/ down, so up to the root
    assert _dirs(flushes) == {str(p) for p in (v, v.parent, v.parent.parent, v.parents[2], root)}
    flushes.fsynced.clear()
    store.put("snapshots/m/x/_v/0000000002", [b"doc"], durable=True)
    assert _dirs(flushes) == {str(v)}  # nothing made: its own directory alone
    flushes.fsynced.clear()
    store.put("snapshots/m/x/_l/latest/0000000001", [b"label"], durable=True)
    latest = root / "snapshots" / "m" / "x" / "_l" / "latest"
    assert _dirs(flushes) == {str(latest), str(latest.parent), str(latest.parent.parent)}
    assert flushes.syncfs == 0


def test_sync_of_keys_fsyncs_them_and_their_directories_not_the_filesystem(
    tmp_path: Path, flushes: _Flushes
) -> None:
    root = tmp_path / "r"
    store = LocalStore(root)
    # a new replica: the names of the directories it made are durable at once
    assert _dirs(flushes) == {str(tmp_path), str(root)}
    flushes.fsynced.clear()
    for key in ("objects/ab/ab1", "objects/cd/cd1", "objects/cd/cd2", "objects/cd/cd3"):
        store.put(key, [b"x", key.encode()], durable=False)
    assert flushes.fsynced == []  # not durable yet
    store.sync(["objects/ab/ab1", "objects/cd/cd1"])
    assert flushes.syncfs == 0
    files = [p for p in flushes.fsynced if not Path(p).is_dir()]
    assert sorted(files) == [str(root / "objects/ab/ab1"), str(root / "objects/cd/cd1")]
    # each key's directory, and every one above it up to the root
    assert _dirs(flushes) == {
        str(root / "objects/ab"),
        str(root / "objects/cd"),
        str(root / "objects"),
        str(root),
    }
    flushes.fsynced.clear()
    # the buckets' names are durable now: a flush of more in them climbs no higher
    store.sync(["objects/cd/cd2"])
    assert sorted(flushes.fsynced) == [str(root / "objects/cd"), str(root / "objects/cd/cd2")]
    flushes.fsynced.clear()
    store.put("objects/ef/ef1", [b"x"], durable=False)
    store.sync(["objects/ef/ef1"])  # a new bucket: its name is in objects/
    assert _dirs(flushes) == {str(root / "objects/ef"), str(root / "objects")}
    store.sync()
    assert flushes.syncfs == 1


class _Recording(LocalStore):
    """A LocalStore that notes, in one list shared by every replica, when each put
    begins and ends and what each flush covered."""

    def __init__(self, root: Path, log: list[tuple[str, str, str]], lock: threading.Lock) -> None:
        super().__init__(root)
        self.log, self.log_lock = log, lock
        self.syncs: list[list[str] | None] = []

    def _note(self, what: str, key: str) -> None:
        with self.log_lock:
            self.log.append((what, self.url, key))

    def put(
        self, key: str, parts: Sequence[Buffer], *, replace: bool = False, durable: bool = True
    ) -> bool:
        self._note("begin", key)
        try:
            return super().put(key, parts, replace=replace, durable=durable)
        finally:
            self._note("end", key)

    def sync(self, keys: Collection[str] | None = None) -> None:
        self._note("sync", ",".join(keys) if keys is not None else "*")
        with self.log_lock:
            self.syncs.append(None if keys is None else sorted(keys))
        super().sync(keys)
        self._note("synced", "")


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Vault, list[_Recording], list[tuple[str, str, str]]]:
    key, admin = tmp_path / "keys" / "signing.key", tmp_path / "keys" / "admin.key"
    make_key(key)
    make_key(admin)
    log: list[tuple[str, str, str]] = []
    lock = threading.Lock()
    stores = [_Recording(tmp_path / name, log, lock) for name in ("a", "b")]
    vault = Vault(
        stores,
        key_path=key,
        admin_key_path=admin,
        state_dir=tmp_path / "state",
        events=EventLog.in_state_dir(tmp_path / "state"),
    )
    return vault, stores, log


def test_a_small_commit_flushes_exactly_the_objects_it_names(
    recorded: tuple[Vault, list[_Recording], list[tuple[str, str, str]]],
) -> None:
    vault, stores, _ = recorded
    first = vault.commit("dataset/d", {"a.txt": b"alpha", "b.txt": b"beta"})
    named = sorted(object_key(c.id) for e in first.files.values() for c in e.chunks)
    assert [s.syncs for s in stores] == [[named], [named]]
    # a commit that writes nothing new still flushes what it names: the objects it
    # found may be another writer's, not flushed yet
    again = vault.commit("dataset/e", {"a.txt": b"alpha"})
    found = [object_key(c.id) for e in again.files.values() for c in e.chunks]
    assert [s.syncs[-1] for s in stores] == [found, found]


def test_a_big_commit_flushes_each_replica_once_whole(
    recorded: tuple[Vault, list[_Recording], list[tuple[str, str, str]]],
) -> None:
    vault, stores, _ = recorded
    files = {f"f{i:03d}": f"file {i}".encode() for i in range(FSYNC_OBJECTS + 1)}
    vault.commit("dataset/many", files)
    assert [s.syncs for s in stores] == [[None], [None]]


def test_objects_then_document_then_labels_each_durable_before_the_next_begins(
    recorded: tuple[Vault, list[_Recording], list[tuple[str, str, str]]],
) -> None:
    vault, stores, log = recorded
    log.clear()
    snap = vault.commit("dataset/d", {"a.txt": b"alpha"}, labels=("latest", "k1"))
    doc = f"snapshots/dataset/d/_v/{snap.version:010d}"

    def at(what: str, pick: str) -> list[int]:
        return [i for i, (w, _, key) in enumerate(log) if w == what and pick in key]

    flushed = [i for i, (w, _, _) in enumerate(log) if w == "synced"]
    assert len(flushed) == len(stores)
    assert len(at("begin", doc)) == len(stores)
    assert max(flushed) < min(at("begin", doc))  # objects durable before the document
    labels = at("begin", "/_l/")
    assert len(labels) == 2 * len(stores)
    assert max(at("end", doc)) < min(labels)  # the document durable everywhere first
    assert vault.snapshot("dataset/d@k1").id == snap.id
