"""A vault with a local replica and an S3 replica, on real S3 servers on loopback
(SeaweedFS and moto's server mode, one of each per test session, each test in buckets
of its own): commits reach both (big
chunks in multipart uploads), read-repair and scrub cross between the two, a copy
damaged in the bucket behind Bastion's back is restored, Object Lock makes the S3
replica append-only where the server enforces it, and all copies damaged is
unrecoverable, never served."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

from bastion.errors import IntegrityError
from bastion.events import EventLog
from bastion.store import LocalStore, S3Store, open_store
from bastion.vault import Vault, make_key
from bastion.vault._objects import object_key
from tests.s3_servers import (  # noqa: F401 (the *_fixture names are fixtures)
    S3Server,
    bucket_name,
    enforces_object_lock,
    s3_env_fixture,
    s3_server_fixture,
)

pytestmark = pytest.mark.usefixtures("s3_env")


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "signing.key"
    make_key(path)
    make_key(path.with_name("admin.key"))
    return path


def _vault(stores: list[Any], keys: Path, tmp_path: Path, events: EventLog | None = None) -> Vault:
    return Vault(
        stores,
        key_path=keys,
        admin_key_path=keys.with_name("admin.key"),
        state_dir=tmp_path / "state",
        events=events or EventLog.in_state_dir(tmp_path / "state"),
    )


def _files(rng: random.Random) -> dict[str, bytes]:
    return {
        "weights.bin": rng.randbytes(3 << 20),
        "notes.txt": b"epoch loss\n" * 20_000,
        "small.json": b'{"ok": true}',
    }


def test_a_commit_reaches_both_replicas_and_the_s3_copy_alone_restores_it(
    s3_server: S3Server, keys: Path, tmp_path: Path, rng: random.Random
) -> None:
    s3 = S3Store(s3_server.url(bucket_name("vault")))
    local = LocalStore(tmp_path / "a")
    vault = _vault([local, s3], keys, tmp_path)
    files = _files(rng)
    big = rng.randbytes(12 << 20)  # one 12 MiB chunk: a multipart upload
    snap = vault.commit("model/m", files)
    snap_big = vault.commit("model/big", {"big.bin": big}, compress=False, chunk_size=12 << 20)
    stats = s3.statistics()
    assert stats.puts > 0
    assert stats.errors == 0
    assert sorted(s3.list("objects/")) == sorted(local.list("objects/"))
    # a second vault on the S3 replica alone (as after the local disk is lost)
    alone = _vault([open_store(s3.url)], keys, tmp_path / "alone")
    for path, data in files.items():
        assert alone.read(snap.ref, path) == data
    assert alone.read(snap_big.ref, "big.bin") == big
    report = alone.scrub(repair=False)
    assert report.ok
    assert report.bad_copies == 0


def test_a_copy_overwritten_in_the_bucket_is_restored_by_read_repair(
    s3_server: S3Server, keys: Path, tmp_path: Path, rng: random.Random
) -> None:
    bucket = bucket_name("repair")
    s3 = S3Store(s3_server.url(bucket))
    events = EventLog.in_state_dir(tmp_path / "state")
    vault = _vault([s3, LocalStore(tmp_path / "a")], keys, tmp_path, events)  # S3 read first
    files = _files(rng)
    snap = vault.commit("model/m", files)
    # a chunk of the random file: stored raw, so every byte of it is content (a byte of
    # a compressed object's seal may be damaged with its content still intact)
    path = "weights.bin"
    key = object_key(rng.choice(snap.files[path].chunks).id)
    raw = s3_server.client()
    full = f"vault/{key}"
    good = raw.get_object(Bucket=bucket, Key=full)["Body"].read()
    damaged = bytearray(good)
    damaged[rng.randrange(len(damaged))] ^= 0xFF
    # behind Bastion's back, through the server's own API: new bytes, new checksums
    raw.put_object(Bucket=bucket, Key=full, Body=bytes(damaged))
    assert vault.read(snap.ref, path) == files[path]
    (failed,) = events.query(kind="vault.integrity.failed")
    assert failed.data["replica"] == s3.url
    (repaired,) = events.query(kind="vault.repaired")
    assert repaired.data["replica"] == s3.url
    assert raw.get_object(Bucket=bucket, Key=full)["Body"].read() == good


def test_bytes_that_fail_their_blake3_are_refused_by_the_store_and_repaired(
    s3_server: S3Server, keys: Path, tmp_path: Path, rng: random.Random
) -> None:
    """Damage that keeps the object's metadata (its recorded BLAKE3): the store itself
    refuses the bytes (IntegrityError), and the vault repairs it like any bad copy."""
    bucket = bucket_name("meta")
    s3 = S3Store(s3_server.url(bucket))
    vault = _vault([s3, LocalStore(tmp_path / "a")], keys, tmp_path)
    files = _files(rng)
    snap = vault.commit("model/m", files)
    key = object_key(snap.files["notes.txt"].chunks[0].id)
    raw = s3_server.client()
    full = f"vault/{key}"
    got = raw.get_object(Bucket=bucket, Key=full)
    good = got["Body"].read()
    raw.put_object(Bucket=bucket, Key=full, Body=good[:-1] + b"\x00", Metadata=got["Metadata"])
    with pytest.raises(IntegrityError, match="its metadata records"):
        s3.get(key)
    assert vault.read(snap.ref, "notes.txt") == files["notes.txt"]
    assert s3.get(key) == good


def test_scrub_crosses_both_ways(
    s3_server: S3Server, keys: Path, tmp_path: Path, rng: random.Random
) -> None:
    bucket = bucket_name("scrub")
    s3 = S3Store(s3_server.url(bucket))
    local = LocalStore(tmp_path / "a")
    vault = _vault([local, s3], keys, tmp_path)
    files = _files(rng)
    snap = vault.commit("model/m", files)
    chunks = sorted({c.id for e in snap.files.values() for c in e.chunks})
    on_disk, in_bucket = rng.sample(chunks, 2)
    # a local copy rotted on disk, an S3 copy gone from the bucket
    path = local.root / object_key(on_disk)
    path.chmod(0o600)
    data = bytearray(path.read_bytes())
    data[rng.randrange(len(data))] ^= 0x01
    path.write_bytes(bytes(data))
    s3_server.client().delete_object(Bucket=bucket, Key=f"vault/{object_key(in_bucket)}")
    report = vault.scrub(repair=True)
    assert report.ok
    assert report.bad_copies == report.repaired == 2
    assert s3.has(object_key(in_bucket))
    again = vault.scrub(repair=False)
    assert again.bad_copies == 0
    for name, content in files.items():
        assert vault.read(snap.ref, name) == content


def test_every_copy_damaged_is_unrecoverable_and_never_served(
    s3_server: S3Server, keys: Path, tmp_path: Path, rng: random.Random
) -> None:
    bucket = bucket_name("lost")
    s3 = S3Store(s3_server.url(bucket))
    local = LocalStore(tmp_path / "a")
    events = EventLog.in_state_dir(tmp_path / "state")
    vault = _vault([local, s3], keys, tmp_path, events)
    files = _files(rng)
    snap = vault.commit("model/m", files)
    key = object_key(snap.files["weights.bin"].chunks[0].id)
    path = local.root / key
    path.chmod(0o600)
    good = path.read_bytes()
    at = rng.randrange(len(good))
    bad = good[:at] + bytes([good[at] ^ 0x10]) + good[at + 1 :]
    path.write_bytes(bad)
    s3_server.client().put_object(Bucket=bucket, Key=f"vault/{key}", Body=bad)
    with pytest.raises(IntegrityError, match="no good copy on any replica"):
        vault.read(snap.ref, "weights.bin")
    (lost,) = events.query(kind="vault.unrecoverable")
    assert set(lost.data["replicas"]) == {local.url, s3.url}
    assert not events.query(kind="vault.repaired")  # nothing "repaired" from a bad copy
    report = vault.scrub(repair=True)
    assert not report.ok
    assert report.unrecoverable
    dest = tmp_path / "out"
    with pytest.raises(IntegrityError):
        vault.restore(snap.ref, dest)
    assert not (dest / "weights.bin").exists()  # never served, not even in part


def test_object_lock_makes_the_s3_replica_append_only(
    s3_server: S3Server, keys: Path, tmp_path: Path
) -> None:
    why = enforces_object_lock(s3_server, bucket_name("probe"))
    if why is not None:
        pytest.skip(f"{why}: its Object Lock would prove nothing")
    bucket = bucket_name("locked")
    s3 = S3Store(s3_server.url(bucket, object_lock="compliance", retain_days=1))
    vault = _vault([LocalStore(tmp_path / "a"), s3], keys, tmp_path)
    snap = vault.commit("model/m", {"w.bin": os.urandom(1 << 20)})
    key = object_key(snap.files["w.bin"].chunks[0].id)
    head = s3_server.client().head_object(Bucket=bucket, Key=f"vault/{key}")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    # the store says so before it asks
    with pytest.raises(PermissionError, match=r"under S3 Object Lock .* append-only"):
        s3.delete(key)
    # and the server refuses anyone who asks anyway, one by one or in a batch
    raw = s3_server.client()
    version = head["VersionId"]
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="AccessDenied"):
        raw.delete_object(Bucket=bucket, Key=f"vault/{key}", VersionId=version)
    batch = raw.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": f"vault/{key}", "VersionId": version}]}
    )
    assert batch["Errors"]
    assert s3.get(key)
    # gc through the vault: the S3 replica is reported as refusing, the local one swept
    removed, failed = vault.replicas.sweep("objects/", lambda _k: False, min_age_s=0)
    assert failed == [s3.url]
    assert s3.has(key)
    assert removed >= 1


def test_an_object_lock_replica_on_a_bucket_without_it_is_refused_clearly(
    s3_server: S3Server, keys: Path, tmp_path: Path
) -> None:
    bucket = bucket_name("plain")
    s3_server.client().create_bucket(Bucket=bucket)
    s3 = S3Store(s3_server.url(bucket, object_lock="compliance", retain_days=1))
    vault = _vault([LocalStore(tmp_path / "a"), s3], keys, tmp_path)
    events = vault.events
    assert isinstance(events, EventLog)
    vault.commit("model/m", {"x": b"x" * 1000})
    (degraded,) = events.query(kind="vault.degraded")
    assert "has no Object Lock" in degraded.data["reasons"][s3.url]


def test_the_endpoint_can_come_from_the_standard_aws_configuration(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint)
    url = f"s3://{bucket_name('env')}/vault"  # no ?endpoint=: botocore finds it
    store = open_store(url)
    assert isinstance(store, S3Store)
    assert store.parsed.endpoint_host == f"127.0.0.1:{s3_server.port}"
    assert store.put("objects/ab/x", [b"from the environment"])
    assert open_store(url).get("objects/ab/x") == b"from the environment"
    assert "bastion-test-secret" not in repr(store) + store.url


def test_the_lease_lock_excludes_other_stores_and_outlives_a_dead_holder(
    s3_server: S3Server,
) -> None:
    import threading

    bucket = bucket_name("lease")
    url = s3_server.url(bucket)
    # two stores on one bucket, as two processes or hosts would have: only the lease
    # object keeps them apart (each store's own thread lock does not)
    stores = [S3Store(url, lease_s=5), S3Store(url, lease_s=5)]
    inside: list[int] = []
    overlap: list[bool] = []

    def worker(i: int) -> None:
        for _ in range(8):
            with stores[i].lock("vault"):
                inside.append(i)
                overlap.append(len(inside) > 1)
                inside.remove(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(overlap) == 16
    assert not any(overlap)
    # a holder that died: its lease object stays, never renewed; after lease_s (on the
    # server's clock) the next taker takes it over
    raw = s3_server.client()
    raw.put_object(Bucket=bucket, Key="vault/tmp/vault.lock", Body=b'{"pid": 1}')
    store = S3Store(url, lease_s=1)
    with store.lock("vault"):
        held = raw.get_object(Bucket=bucket, Key="vault/tmp/vault.lock")["Body"].read()
        assert b'"pid": 1}' not in held
    assert store.leases_lost == 0
    assert "tmp/vault.lock" not in " ".join(store.list())  # locks are not keys


def test_a_shared_server_refuses_to_be_failed(s3_server: S3Server) -> None:
    """The session's servers serve every test after this one: a test that would stop one
    is told to take a server of its own, and the server goes on answering."""
    for fail in (s3_server.pause, s3_server.kill):
        with pytest.raises(RuntimeError, match="own_s3_server"):
            fail()
    s3_server.check()
    store = S3Store(s3_server.url(bucket_name("shared")))
    assert store.put("objects/ab/x", [b"still here"])
    assert store.get("objects/ab/x") == b"still here"
