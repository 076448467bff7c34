"""LocalStore: write once, atomic, read-only objects, safe keys."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.errors import InvalidNameError, NotFoundError, UnavailableError
from bastion.store import LocalStore, Store, open_store


@pytest.mark.parametrize("unnamed", [True, False], ids=["O_TMPFILE", "tmp-dir-and-link"])
def test_put_get_has_list_delete(tmp_path: Path, unnamed: bool) -> None:
    store = LocalStore(tmp_path / "r")
    # Both write paths: unnamed O_TMPFILE + linkat, and the tmp/ + link fallback.
    store._tmpfile = store._tmpfile and unnamed
    assert isinstance(store, Store)
    assert store.available()
    assert store.put("objects/ab/abc", [b"he", memoryview(b"llo")])
    assert not store.put("objects/ab/abc", [b"other"])  # write once
    assert store.get("objects/ab/abc") == b"hello"
    assert store.size("objects/ab/abc") == 5
    assert store.has("objects/ab/abc")
    assert (tmp_path / "r/objects/ab/abc").stat().st_mode & 0o777 == 0o400  # private
    assert store.put("objects/ab/abc", [b"fixed"], replace=True)
    assert store.get("objects/ab/abc") == b"fixed"
    store.put("snapshots/x/_v/0000000001", [b"s"], durable=False)
    store.sync()
    assert list(store.list()) == ["objects/ab/abc", "snapshots/x/_v/0000000001"]
    assert list(store.list("snapshots/")) == ["snapshots/x/_v/0000000001"]
    assert store.delete("objects/ab/abc")
    assert not store.delete("objects/ab/abc")
    with pytest.raises(NotFoundError):
        store.get("objects/ab/abc")
    assert list((tmp_path / "r" / "tmp").iterdir()) == []
    assert store.statistics().puts == 3


@pytest.mark.parametrize("size", [1 << 20, (3 << 20) + 12_345], ids=["aligned", "unaligned"])
@pytest.mark.parametrize("durable", [True, False])
def test_big_values_written_direct_read_back_whole(
    tmp_path: Path, size: int, durable: bool, rng: random.Random
) -> None:
    """Big values take the O_DIRECT path (page cache where the fs refuses it): the
    padded tail is cut off, the parts land in order, and the key stays write-once."""
    store = LocalStore(tmp_path / "r")
    payload = rng.randbytes(size)
    assert store.put("objects/cd/big", [b"\x00", memoryview(payload)], durable=durable)
    store.sync()
    assert store.size("objects/cd/big") == size + 1
    assert store.get("objects/cd/big") == b"\x00" + payload
    assert (tmp_path / "r/objects/cd/big").stat().st_mode & 0o777 == 0o400  # private
    assert not store.put("objects/cd/big", [b"\x01", memoryview(payload)])
    assert store.get("objects/cd/big")[:1] == b"\x00"
    assert store.statistics().put_bytes == size + 1


def _aligned(data: bytes) -> memoryview:
    """``data`` in page-aligned, writable memory (an anonymous map), as a view."""
    import mmap

    mapped = mmap.mmap(-1, max(len(data), 1))
    mapped[: len(data)] = data
    return memoryview(mapped)[: len(data)]


@pytest.mark.parametrize(
    "shape",
    [
        "block-header+aligned",
        "block-header+aligned-short-tail",
        "byte-header+aligned",
        "aligned-offset-part",
        "many-parts",
    ],
)
def test_direct_writes_from_aligned_memory_land_byte_exact(
    tmp_path: Path, shape: str, rng: random.Random
) -> None:
    """Parts that start page-aligned at a block-aligned file offset are written straight
    from memory; everything else goes through the copy buffer. Whatever the mix, the
    value reads back byte for byte and its size is exact (the padding is cut off)."""
    from bastion.store import buffer_address

    size = rng.randint(1 << 20, 5 << 20)
    payload = rng.randbytes(size)
    if shape == "block-header+aligned":
        parts: list[bytes | memoryview] = [b"\x03" + bytes(4095), _aligned(payload)]
    elif shape == "block-header+aligned-short-tail":
        parts = [b"\x03" + bytes(4095), _aligned(payload[: 4096 * 300 + 7])]
    elif shape == "byte-header+aligned":
        parts = [b"\x00", _aligned(payload)]  # staged 1 byte: the aligned part is copied
    elif shape == "aligned-offset-part":
        view = _aligned(payload)
        parts = [view[:4096], view[4096 + 17 :]]  # the second starts unaligned in memory
    else:
        cuts = sorted(rng.sample(range(1, size), 20))
        view = _aligned(payload)
        parts = [view[a:b] for a, b in zip([0, *cuts], [*cuts, size], strict=True)]
    first = memoryview(parts[-1]) if shape.startswith("block") else None
    if first is not None:
        address = buffer_address(first)
        assert address is not None
        assert address % 4096 == 0
    expected = b"".join(bytes(p) for p in parts)
    store = LocalStore(tmp_path / "r")
    assert store.put("objects/ef/v", parts, durable=rng.random() < 0.5)
    store.sync()
    assert store.size("objects/ef/v") == len(expected)
    assert store.get("objects/ef/v") == expected


def test_a_killed_writer_leaves_no_partial_value(tmp_path: Path) -> None:
    """A value whose write fails midway is not visible and leaves nothing behind."""
    store = LocalStore(tmp_path / "r")

    class Boom(Exception):
        pass

    class Parts(list[bytes]):
        def __iter__(self) -> Iterator[bytes]:
            yield b"half"
            raise Boom

    with pytest.raises(Boom):
        store.put("objects/ab/abd", Parts())
    assert not store.has("objects/ab/abd")
    assert list((tmp_path / "r" / "objects" / "ab").iterdir()) == []
    assert list((tmp_path / "r" / "tmp").iterdir()) == []


@pytest.mark.parametrize("key", ["../x", "/abs", "a/../b", "a\x00b", "tmp/x", "a//b", ""])
def test_unsafe_keys_rejected(tmp_path: Path, key: str) -> None:
    store = LocalStore(tmp_path / "r")
    with pytest.raises(InvalidNameError):
        store.put(key, [b"x"])


def test_missing_replica_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    store = open_store(str(tmp_path / "file" / "r"))
    assert not store.available()
    with pytest.raises(UnavailableError):
        store.put("objects/aa/x", [b"x"])


def test_local_and_s3_urls_open_and_others_are_refused(tmp_path: Path) -> None:
    from bastion.errors import UsageError
    from bastion.store import S3Store

    with pytest.raises(UsageError, match=r"Google Cloud Storage replicas are not supported; use"):
        open_store("gs://bucket/prefix")
    assert isinstance(open_store(f"file://{tmp_path}"), LocalStore)
    assert isinstance(open_store("s3://bucket/prefix"), S3Store)  # no I/O until it is used


def test_cleanup_removes_only_dead_writers_leftovers_never_locks(tmp_path: Path) -> None:
    """``cleanup`` takes what a killed writer left in tmp/, never a live writer's value in
    progress, and never a lock file another process may hold."""
    import os
    import subprocess
    import sys

    store = LocalStore(tmp_path / "r")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    tmp = tmp_path / "r" / "tmp"
    (tmp / f"{dead.stdout.strip()}-0123456789abcdef.tmp").write_bytes(b"half")
    (tmp / f"{dead.stdout.strip()}-0123456789abcdef.tmp.swap").write_bytes(b"half")
    mine = tmp / f"{os.getpid()}-fedcba9876543210.tmp"
    mine.write_bytes(b"in progress")
    with store.lock("vault"):
        assert store.cleanup() == 2
    assert sorted(p.name for p in tmp.iterdir()) == sorted([mine.name, "vault.lock"])


def test_lock_excludes_another_process(tmp_path: Path) -> None:
    import subprocess
    import sys

    store = LocalStore(tmp_path / "r")
    probe = (
        "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR);"
        "\ntry: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)"
        "\nexcept BlockingIOError: print('held')\nelse: print('free')"
    )
    with store.lock("vault"):
        held = subprocess.run(
            [sys.executable, "-c", probe, str(tmp_path / "r/tmp/vault.lock")],
            capture_output=True,
            text=True,
            check=True,
        )
    free = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "r/tmp/vault.lock")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert (held.stdout.strip(), free.stdout.strip()) == ("held", "free")
    with pytest.raises(InvalidNameError):
        store.lock("../x").__enter__()


def test_a_missing_replica_is_never_recreated_by_a_lock(tmp_path: Path) -> None:
    import shutil

    store = LocalStore(tmp_path / "r")
    shutil.rmtree(tmp_path / "r")
    with pytest.raises(UnavailableError, match="is the disk mounted"), store.lock("vault"):
        pass
    assert not (tmp_path / "r").exists()
    assert store.cleanup() == 0
