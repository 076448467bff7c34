"""The Store contract, run on every backend (LocalStore on disk, MemoryStore), and the
MemoryStore's failure injection. A backend passing this is one the vault can use."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.errors import InvalidNameError, NotFoundError, UnavailableError, UsageError
from bastion.resilience import ManualClock
from bastion.store import (
    LocalStore,
    MemoryStore,
    Store,
    StoreStatistics,
    open_store,
    parse_replica_url,
)


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "local":
        yield LocalStore(tmp_path / "r")
    else:
        yield MemoryStore("r")


def test_every_backend_keeps_the_contract(store: Store) -> None:
    assert isinstance(store, Store)
    assert store.available()
    assert store.put("objects/ab/abc", [b"he", memoryview(b"llo")])
    assert not store.put("objects/ab/abc", [b"other"])  # write once
    assert store.get("objects/ab/abc") == b"hello"
    assert store.has("objects/ab/abc")
    assert not store.has("objects/ab/abd")
    assert store.size("objects/ab/abc") == 5
    assert 0 <= store.age("objects/ab/abc") < 60
    assert store.put("objects/ab/abc", [b"fixed"], replace=True)
    assert store.get("objects/ab/abc") == b"fixed"
    store.put("snapshots/x/_v/0000000001", [b"s"], durable=False)
    store.sync()
    store.put("objects/cd/cde", [b"few"], durable=False)
    store.sync(["objects/cd/cde", "objects/ab/abc"])  # just these
    with pytest.raises(NotFoundError):
        store.sync(["objects/ef/never-put"])  # a flush of what is not there is no flush
    assert store.delete("objects/cd/cde")
    assert list(store.list()) == ["objects/ab/abc", "snapshots/x/_v/0000000001"]
    assert list(store.list("snapshots/")) == ["snapshots/x/_v/0000000001"]
    assert list(store.list("nothing/")) == []
    with pytest.raises(InvalidNameError):
        list(store.list("snapshots"))
    for missing in (store.get, store.size, store.age):
        with pytest.raises(NotFoundError):
            missing("objects/zz/none")
    for bad in ("../x", "/abs", "a//b", "a/../b", ""):
        with pytest.raises(InvalidNameError):
            store.put(bad, [b"x"])
    assert store.delete("objects/ab/abc")
    assert not store.delete("objects/ab/abc")
    assert store.cleanup() == 0
    stats = store.statistics()
    assert isinstance(stats, StoreStatistics)
    assert (stats.puts, stats.put_existing, stats.deletes, stats.gets) == (4, 1, 2, 2)
    assert stats.url == store.url
    store.absorb_statistics(StoreStatistics(store.url, puts=2, put_bytes=10))
    after = store.statistics()
    assert after.since(stats) == StoreStatistics(store.url, puts=2, put_bytes=10)


def test_lock_is_exclusive(store: Store) -> None:
    inside: list[int] = []
    overlap: list[bool] = []

    def worker(i: int) -> None:
        for _ in range(20):
            with store.lock("vault"):
                inside.append(i)
                overlap.append(len(inside) > 1)
                inside.remove(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(overlap) == 80
    assert not any(overlap)


def test_worker_url_reaches_the_same_replica_or_is_none(store: Store) -> None:
    store.put("objects/ab/one", [b"1"])
    if store.worker_url is None:
        assert isinstance(store, MemoryStore)
        return
    other = open_store(store.worker_url, create=False)
    assert other.get("objects/ab/one") == b"1"


def test_memory_store_failures_on_demand() -> None:
    clock = ManualClock(start=1_000_000.0)
    store = MemoryStore("m", clock=clock, sleep=clock.advance)
    store.put("objects/ab/x", [b"payload"])
    clock.advance(90)
    assert store.age("objects/ab/x") == 90
    store.unavailable = True
    assert not store.available()
    for call in (lambda: store.get("objects/ab/x"), lambda: store.put("objects/ab/y", [b"y"])):
        with pytest.raises(UnavailableError, match="injected"):
            call()
    store.heal()
    store.full = True
    assert store.available()
    with pytest.raises(OSError, match="No space left"):
        store.put("objects/ab/y", [b"y"])
    assert store.get("objects/ab/x") == b"payload"  # reads still work on a full disk
    store.heal()
    store.corrupt_reads("objects/")
    assert store.get("objects/ab/x") != b"payload"
    store.heal()
    assert store.get("objects/ab/x") == b"payload"  # the stored value was never touched
    store.damage("objects/ab/x")
    assert store.get("objects/ab/x") != b"payload"
    store.delay_s = 2.5
    before = clock()
    store.has("objects/ab/x")
    assert clock() - before == 2.5
    assert store.calls["has"] == 1
    assert store.worker_url is None


@pytest.mark.parametrize(
    ("url", "scheme", "location", "local"),
    [
        (".bastion/vault/a", "file", ".bastion/vault/a", True),
        ("/mnt/b", "file", "/mnt/b", True),
        ("file:///mnt/b", "file", "/mnt/b", True),
        ("FILE:///mnt/b", "file", "/mnt/b", True),
        ("s3://bucket/prefix", "s3", "bucket/prefix", False),
    ],
)
def test_replica_urls_parse_without_io(url: str, scheme: str, location: str, local: bool) -> None:
    parsed = parse_replica_url(url)
    assert (parsed.scheme, parsed.location, parsed.is_local) == (scheme, location, local)
    assert (parsed.problem is None) == local


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "is empty"),
        ("s3://", "names no location"),
        ("1x://y", "neither a path nor a URL"),
        ("://x", "neither a path nor a URL"),
        ("file://", "names no location"),
    ],
)
def test_malformed_replica_urls_are_usage_errors(url: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_replica_url(url)


def test_an_unknown_scheme_suggests_the_fix(tmp_path: Path) -> None:
    problem = parse_replica_url("fle:///mnt/b").problem
    assert problem is not None
    assert "did you mean file://?" in problem
    with pytest.raises(UsageError, match=r"'fle:///mnt/b'.*did you mean file://"):
        open_store("fle:///mnt/b")
    assert not (tmp_path / "mnt").exists()
