"""The Store contract, run on every backend (LocalStore on disk, MemoryStore, S3Store on
two real S3 servers on loopback: SeaweedFS and moto's server), and the MemoryStore's
failure injection. A backend passing this is one the vault can use."""

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
    S3Store,
    Store,
    StoreStatistics,
    open_store,
    parse_replica_url,
)
from tests.s3_servers import bucket_name, s3_env_fixture  # noqa: F401 (a fixture)


@pytest.fixture(params=["local", "memory", "s3-weed", "s3-moto"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "local":
        yield LocalStore(tmp_path / "r")
    elif request.param == "memory":
        yield MemoryStore("r")
    else:
        request.getfixturevalue("s3_env")
        server = request.getfixturevalue(f"{request.param[3:]}_server")
        yield S3Store(server.url(bucket_name("contract")))


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
        assert isinstance(store, MemoryStore | S3Store)
        if isinstance(store, S3Store):  # any process can still open its URL
            assert open_store(store.url, create=False).get("objects/ab/one") == b"1"
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
        (
            "s3://bucket/a/b?endpoint=http://127.0.0.1:8333&region=eu-west-1",
            "s3",
            "bucket/a/b",
            False,
        ),
    ],
)
def test_replica_urls_parse_without_io(url: str, scheme: str, location: str, local: bool) -> None:
    parsed = parse_replica_url(url)
    assert (parsed.scheme, parsed.location, parsed.is_local) == (scheme, location, local)
    assert parsed.problem is None


def test_s3_urls_name_their_bucket_prefix_and_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    parsed = parse_replica_url("s3://bkt/vault/a/?endpoint=http://10.0.0.5:8333&region=x")
    assert (parsed.bucket, parsed.prefix, parsed.endpoint_host) == (
        "bkt",
        "vault/a",
        "10.0.0.5:8333",
    )
    assert parse_replica_url("s3://bkt").endpoint_host == "s3.us-east-1.amazonaws.com"
    assert (
        parse_replica_url("s3://bkt?region=eu-west-3").endpoint_host == "s3.eu-west-3.amazonaws.com"
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://minio.lan:9000")
    assert parse_replica_url("s3://bkt").endpoint_host == "minio.lan:9000"
    assert parse_replica_url("/mnt/x").endpoint_host is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://Bad_Bucket/x", "is not an S3 bucket name"),
        ("s3://bkt/a/../b", "not a safe key segment"),
        ("s3://bkt/x?secret_access_key=abc", "credentials never go in bastion.yaml"),
        ("s3://bkt/x?endpiont=http://h", "did you mean endpoint"),
        ("s3://bkt/x?endpoint=ftp://h", "not an http"),
        ("s3://bkt/x?object_lock=governance&retain_days=1", "the one mode is compliance"),
        ("s3://bkt/x?object_lock=compliance", "needs retain_days"),
        ("s3://bkt/x?retain_days=3", "needs object_lock"),
        ("s3://bkt/x?write_once=maybe", "one of conditional, head"),
        ("s3://bkt/x?read_timeout=-1", "seconds between"),
    ],
)
def test_bad_s3_urls_say_what_to_write(url: str, message: str) -> None:
    problem = parse_replica_url(url).problem
    assert problem is not None
    assert message in problem
    with pytest.raises(UsageError, match=message):
        open_store(url)


def test_an_endpoint_with_a_password_is_refused_without_echoing_it() -> None:
    problem = parse_replica_url("s3://bkt/x?endpoint=http://me:hunter2@h:1").problem
    assert problem is not None
    assert "credentials never go in the URL" in problem
    assert "hunter2" not in problem


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
