"""The vault's library API: commit, snapshot, read, versions, labels, restore, repair.

The vault's logic runs on in-memory replicas (``MemoryStore``); what depends on the disk
(read-only files, worker processes, the aligned O_DIRECT form) runs on ``LocalStore``
directories (the ``disk_vault`` fixture)."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

import pytest

from bastion.errors import (
    IntegrityError,
    InvalidNameError,
    NotFoundError,
    UnavailableError,
    UsageError,
)
from bastion.events import EventLog
from bastion.store import MemoryStore
from bastion.vault import Snapshot, Vault, make_key
from bastion.vault._objects import object_key


def _keys(tmp_path: Path) -> tuple[Path, Path]:
    key = tmp_path / "keys" / "signing.key"
    admin = tmp_path / "keys" / "admin.key"
    make_key(key)
    make_key(admin)
    return key, admin


@pytest.fixture
def stores() -> list[MemoryStore]:
    return [MemoryStore("a"), MemoryStore("b")]


@pytest.fixture
def vault(tmp_path: Path, stores: list[MemoryStore]) -> Vault:
    key, admin = _keys(tmp_path)
    return Vault(
        stores,
        key_path=key,
        admin_key_path=admin,
        state_dir=tmp_path / "state",
        events=EventLog.in_state_dir(tmp_path / "state"),
    )


@pytest.fixture
def disk_vault(tmp_path: Path) -> Vault:
    key, admin = _keys(tmp_path)
    return Vault(
        [tmp_path / "a", tmp_path / "b"],
        key_path=key,
        admin_key_path=admin,
        state_dir=tmp_path / "state",
        events=EventLog.in_state_dir(tmp_path / "state"),
    )


def test_commit_read_roundtrip_and_versions(vault: Vault, tmp_path: Path) -> None:
    big = os.urandom(3 << 20) + b"x" * (2 << 20)
    src = tmp_path / "weights.bin"
    src.write_bytes(big)
    one = vault.commit("model/digits", {"model.json": b'{"a": 1}', "w.bin": src}, meta={"acc": 0.9})
    assert isinstance(one, Snapshot)
    assert (one.name, one.version) == ("model/digits", 1)
    assert one.files["w.bin"].size == len(big)
    assert len(one.files["w.bin"].chunks) >= 2
    two = vault.commit("model/digits", {"model.json": b'{"a": 2}', "w.bin": memoryview(big)})
    assert two.version == 2
    assert two.parents == (one.id,)
    assert vault.read("model/digits@1", "model.json") == b'{"a": 1}'
    assert vault.read("model/digits", "model.json") == b'{"a": 2}'
    assert vault.read("model/digits@latest", "w.bin") == big
    assert vault.read(two, "w.bin") == big
    assert [s.version for s in vault.versions("model/digits")] == [1, 2]
    assert vault.names() == ["model/digits"]
    assert vault.names("dataset/") == []
    assert vault.snapshot("model/digits@1").meta == {"acc": 0.9}
    assert vault.snapshot("model/digits@1").id == one.id
    # the second commit wrote no new big chunks: every chunk of w.bin deduplicated
    assert vault.statistics().chunks_dedup >= len(two.files["w.bin"].chunks)
    events = vault.events.query(kind="vault.put") if vault.events else []
    assert [e.data["version"] for e in events] == [1, 2]


def test_labels_move_and_latest_follows_commits(vault: Vault) -> None:
    vault.commit("model/m", {"f": b"1"})
    vault.commit("model/m", {"f": b"2"})
    vault.label("model/m", 1, "prod")
    assert vault.read("model/m@prod", "f") == b"1"
    vault.label("model/m", 2, "prod")
    assert vault.read("model/m@prod", "f") == b"2"
    assert vault.labels("model/m") == {"latest": 2, "prod": 2}
    vault.commit("ckpt/job/step-000400", {"f": b"c"}, labels=())
    assert vault.snapshot("ckpt/job/step-000400").version == 1
    with pytest.raises(NotFoundError):
        vault.snapshot("model/m@staging")
    with pytest.raises(NotFoundError):
        vault.snapshot("model/none")
    with pytest.raises(NotFoundError):
        vault.read("model/m", "missing.bin")


@pytest.mark.parametrize(
    "name", ["model/../x", "/abs/model", "model/a\x00b", "model\\x", "nokind/x", "model"]
)
def test_bad_names_rejected(vault: Vault, name: str) -> None:
    with pytest.raises(InvalidNameError):
        vault.commit(name, {"f": b"1"})


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../x", "a\x00b", "", "a//b"])
def test_bad_file_paths_rejected(vault: Vault, path: str) -> None:
    with pytest.raises(InvalidNameError):
        vault.commit("dataset/d", {path: b"1"})
    assert vault.names() == []


def test_concurrent_commits_get_dense_versions(vault: Vault) -> None:
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            vault.commit("ckpt/j", {"f": str(i).encode() * 1000})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [s.version for s in vault.versions("ckpt/j")] == [1, 2, 3, 4, 5, 6]


def test_read_repairs_a_damaged_replica(vault: Vault, stores: list[MemoryStore]) -> None:
    a, b = stores
    data = os.urandom(300_000)
    snap = vault.commit("dataset/d", {"x.bin": data})
    key = object_key(snap.files["x.bin"].chunks[0].id)
    a.damage(key, 1000)
    assert vault.read("dataset/d", "x.bin") == data
    assert vault.events.query(kind="vault.repaired")
    assert a.get(key) == b.get(key)
    # damaged everywhere: never served
    for store in stores:
        store.put(key, [b"\x00garbage"], replace=True)
    with pytest.raises(IntegrityError):
        vault.read("dataset/d", "x.bin")
    assert vault.events.query(kind="vault.unrecoverable")


def test_forged_snapshot_rejected(vault: Vault, stores: list[MemoryStore]) -> None:
    vault.commit("model/m", {"f": b"good"})
    key = "snapshots/model/m/_v/0000000001"
    for store in stores:
        forged = store.get(key).replace(b'"meta":{}', b'"meta":{"x":1}')
        store.put(key, [forged], replace=True)
    with pytest.raises(IntegrityError):
        vault.snapshot("model/m@1")
    with pytest.raises((IntegrityError, NotFoundError)):
        vault.read("model/m", "f")


def test_forged_snapshot_on_one_replica_is_repaired(
    vault: Vault, stores: list[MemoryStore]
) -> None:
    a, b = stores
    vault.commit("model/m", {"f": b"good"})
    key = "snapshots/model/m/_v/0000000001"
    a.put(key, [a.get(key)[:-3]], replace=True)
    assert vault.read("model/m@1", "f") == b"good"
    assert a.get(key) == b.get(key)


def test_restore_is_bit_identical(vault: Vault, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.csv").write_text("1,2,3\n" * 5000)
    (src / "sub" / "b.bin").write_bytes(os.urandom(2_500_000))
    files = {p.relative_to(src).as_posix(): p for p in src.rglob("*") if p.is_file()}
    vault.commit("dataset/d", files)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "README-ransom.txt").write_text("pay")
    vault.restore("dataset/d", dest, clean=True)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "a.csv",
        "sub/b.bin",
    ]
    for rel, original in files.items():
        assert (dest / rel).read_bytes() == original.read_bytes()


def test_replica_down_is_degraded_not_fatal(tmp_path: Path) -> None:
    key = tmp_path / "signing.key"
    make_key(key)
    up, down = MemoryStore("a"), MemoryStore("b")
    down.unavailable = True
    events = EventLog.in_state_dir(tmp_path / "state")
    vault = Vault([up, down], key_path=key, events=events)
    snap = vault.commit("dataset/d", {"f": b"data"})
    assert vault.read(snap, "f") == b"data"
    assert vault.degraded() == ["memory://b"]
    (degraded,) = events.query(kind="vault.degraded")
    assert degraded.data["down"] == ["memory://b"]
    assert down.stored_keys() == []
    only_down = Vault([down], key_path=key)
    with pytest.raises(UnavailableError):
        only_down.commit("dataset/d", {"f": b"data"})


def test_objects_are_read_only_and_content_addressed(disk_vault: Vault, tmp_path: Path) -> None:
    snap = disk_vault.commit("dataset/d", {"t.txt": b"hello " * 1000})
    digest = snap.files["t.txt"].chunks[0].id
    for replica in ("a", "b"):
        path = tmp_path / replica / object_key(digest)
        assert path.stat().st_mode & 0o777 == 0o400  # private
        assert path.read_bytes()[:1] == b"\x02"  # compressible: sealed zstd


def _tree(root: Path, count: int) -> dict[str, Path]:
    files = {}
    for i in range(count):
        path = root / f"d{i % 7}" / f"f{i}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        # compressible and incompressible files, some of them duplicates
        body = (f"{i % 50},row\n" * (200 + 37 * i)).encode() if i % 3 else os.urandom(5000 + i)
        path.write_bytes(body)
        files[path.relative_to(root).as_posix()] = path
    return files


def test_whole_files_in_worker_processes_store_what_threads_store(
    disk_vault: Vault, tmp_path: Path
) -> None:
    vault = disk_vault
    files = _tree(tmp_path / "src", 150)
    vault.ingest_processes = False
    by_threads = vault.commit("dataset/t", files)
    other = Vault(
        [tmp_path / "c", tmp_path / "d"],
        key_path=tmp_path / "keys" / "signing.key",
        admin_key_path=tmp_path / "keys" / "admin.key",
    )
    other.ingest_processes = True
    by_processes = other.commit("dataset/t", files)
    assert by_processes.files == by_threads.files
    for path, source in files.items():
        assert other.read("dataset/t@latest", path) == source.read_bytes()
    assert other.scrub(repair=False).ok
    # the workers' writes are counted on the parent's replicas, as threads' writes are
    assert [r.store.puts for r in other.statistics().replicas.replicas] == [
        r.store.puts for r in vault.statistics().replicas.replicas
    ]
    assert other.statistics().chunks_new == vault.statistics().chunks_new > 0
    # a second commit of the same files dedups in the workers too: no object written
    written = other.statistics().bytes_written
    again = other.commit("dataset/t", files)
    assert again.files == by_threads.files
    assert other.statistics().bytes_written == written


def test_buffers_in_worker_processes_store_what_threads_store(
    disk_vault: Vault, tmp_path: Path
) -> None:
    """Small buffers (what the vault server received) go to worker processes through
    their pipe when processes are asked for, and become what threads make of them."""
    rng = random.Random(11)
    files: dict[str, bytes | bytearray | memoryview] = {}
    for i in range(90):
        body = rng.randbytes(3000 + 97 * i) if i % 2 else (f"{i},x\n" * (50 + i)).encode()
        kind = i % 3
        files[f"d{i % 4}/f{i:03d}"] = (
            body if kind == 0 else bytearray(body) if kind == 1 else memoryview(body)
        )
    by_threads = disk_vault.commit("dataset/b", files, processes=False)
    other = Vault(
        [tmp_path / "c", tmp_path / "d"],
        key_path=tmp_path / "keys" / "signing.key",
        admin_key_path=tmp_path / "keys" / "admin.key",
    )
    by_processes = other.commit("dataset/b", files, processes=True)
    assert by_processes.files == by_threads.files
    assert {e.mode for e in by_processes.files.values()} == {0o600}
    for path, source in files.items():
        assert other.read("dataset/b@latest", path) == bytes(source)
    assert other.scrub(repair=False).ok
    assert other.statistics().chunks_new == disk_vault.statistics().chunks_new > 0


def test_worker_processes_missing_file_is_a_clear_error(disk_vault: Vault, tmp_path: Path) -> None:
    vault = disk_vault
    files = _tree(tmp_path / "src", 20)
    gone = files["d3/f3.csv"]
    gone.unlink()
    vault.ingest_processes = True
    with pytest.raises(NotFoundError, match=r"f3\.csv: no such file"):
        vault.commit("dataset/m", files)
    assert vault.versions("dataset/m") == []


def test_dead_ingest_workers_fail_jobs_instead_of_hanging(
    disk_vault: Vault, tmp_path: Path
) -> None:
    import signal

    from bastion.vault._ingest import IngestWorkers

    files = _tree(tmp_path / "src", 4)
    with IngestWorkers(disk_vault.stores, seal_key=b"k" * 32, compress=True, count=2) as workers:
        ok = workers.submit([str(p) for p in files.values()]).result()
        assert [size for size, _, _ in ok] == [p.stat().st_size for p in files.values()]
        for proc in workers._procs:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        first = workers.submit([str(p) for p in files.values()])
        with pytest.raises(UnavailableError, match="died"):
            first.result()
        second = workers.submit([str(p) for p in files.values()])
        with pytest.raises(UnavailableError, match="died"):
            second.result()


def test_fixed_chunks_of_an_aligned_buffer_are_stored_aligned_and_verified(
    disk_vault: Vault, tmp_path: Path
) -> None:
    """Checkpoints: fixed 1 MiB chunks of a page-aligned buffer are stored in the aligned
    form (header byte 03, payload after a 4 KiB block), read back verified, and damage
    to one is found and repaired like any object."""
    import mmap

    from bastion.drill.faults import FlipBytes, Scope

    vault = disk_vault
    size = (5 << 20) + 3000
    mapped = mmap.mmap(-1, size)
    mapped[:] = os.urandom(size)
    view = memoryview(mapped)
    snap = vault.commit("ckpt/j/step-000001", {"state": view}, compress=False, chunk_size=1 << 20)
    chunks = snap.files["state"].chunks
    assert [c.size for c in chunks] == [1 << 20] * 5 + [3000]
    heads = {(tmp_path / "a" / object_key(c.id)).read_bytes()[:1] for c in chunks[:5]}
    assert heads == {b"\x03"}
    assert (tmp_path / "a" / object_key(chunks[0].id)).stat().st_size == 4096 + (1 << 20)
    assert (tmp_path / "a" / object_key(chunks[5].id)).read_bytes()[:1] == b"\x00"  # small
    assert vault.read(snap, "state") == bytes(view)
    victim = tmp_path / "b" / object_key(chunks[2].id)
    victim.chmod(0o644)
    FlipBytes(victim, scope=Scope.of(paths=[victim]), count=3, seed=7).inject()
    report = vault.scrub(repair=True)
    assert report.ok
    assert report.repaired == 1
    assert vault.scrub(repair=False).bad_copies == 0
    # the same bytes again dedup at the same offsets; an unaligned copy stores nothing new
    again = vault.commit("ckpt/j/step-000002", {"state": bytes(view)}, chunk_size=1 << 20)
    assert again.files == snap.files
    with pytest.raises(UsageError, match="chunk_size"):
        vault.commit("ckpt/j/step-000003", {"state": b"x"}, chunk_size=100)


def test_gc_keeps_labels_recent_versions_and_the_lineage_of_what_stays(vault: Vault) -> None:
    """Retention drops a version only when every rule lets it go, never a labelled one,
    and never a snapshot a kept model names in its lineage (so it can be rebuilt)."""
    for i in range(4):
        vault.commit("dataset/d", {"x.csv": f"rows {i}\n".encode()})
    vault.commit("model/m", {"w.bin": b"weights"}, lineage=["dataset/d@2"])
    vault.label("dataset/d", 1, "prod")
    with pytest.raises(UsageError, match="keep_last"):
        vault.gc(keep_last=0, grace_s=0)
    # keep_within_days alone: everything here is minutes old, so nothing goes
    assert vault.gc(keep_within_days=1, grace_s=0)["snapshots_deleted"] == 0
    # keep_last 1: @4 (latest) stays, @1 (prod) stays, @2 (lineage of model/m) stays
    result = vault.gc(keep_last=1, grace_s=0)
    assert [s.version for s in vault.versions("dataset/d")] == [1, 2, 4]
    assert result["snapshots_deleted"] == 1
    assert vault.read("dataset/d@2", "x.csv") == b"rows 1\n"
    assert vault.read("model/m@latest", "w.bin") == b"weights"
    assert vault.scrub(repair=False).ok
    # no rule at all: no version goes
    assert vault.gc(grace_s=0)["snapshots_deleted"] == 0


def test_retention_in_the_manifest_is_checked(tmp_path: Path) -> None:
    from bastion.errors import ManifestError
    from bastion.manifest import load

    path = tmp_path / "bastion.yaml"
    path.write_text(
        "version: 1\nsystem: r\nvault:\n  replicas: [a, b]\n  retention: {keep_lst: 3}\n"
    )
    with pytest.raises(ManifestError, match=r"keep_lst.*keep_last"):
        load(path)
    path.write_text(
        "version: 1\nsystem: r\nvault:\n  replicas: [a, b]\n"
        "  retention: {keep_last: 3, keep_within_days: 7}\n"
    )
    config = load(path).vault
    assert config is not None
    assert config.retention.keep_last == 3
    assert config.retention.keep_within_days == 7


def test_no_worker_processes_means_threads_do_the_work(
    disk_vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bastion.vault import _ingest

    vault = disk_vault

    def refuse(*args: object, **kwargs: object) -> None:
        raise BlockingIOError(11, "Resource temporarily unavailable (fork refused)")

    monkeypatch.setattr(_ingest.subprocess, "Popen", refuse)
    files = _tree(tmp_path / "src", 10)
    vault.ingest_processes = True
    snap = vault.commit("dataset/nofork", files)
    for path, source in files.items():
        assert vault.read(snap, path) == source.read_bytes()
    assert vault.events is not None
    assert vault.events.query(kind="vault.ingest.threads")


def test_a_commit_leaves_the_callers_memoryview_usable(vault: Vault) -> None:
    # a checkpoint commits a view of its staging buffer, then reads its size and reuses
    # it: the commit (inline for a small one) must release only views of its own
    buffer = bytearray(b"x" * 5000)
    view = memoryview(buffer)
    snap = vault.commit("ckpt/job", {"state": view})
    assert view.nbytes == 5000
    view[0] = ord("y")  # still writable, still the caller's
    assert vault.read(snap, "state") == b"x" * 5000
    assert vault.unchanged("ckpt/job", {"state": b"x" * 5000}) == snap
    assert vault.unchanged("ckpt/job", {"state": bytes(buffer)}) is None  # one byte differs
