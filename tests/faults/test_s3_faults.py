"""S3 replica faults on real S3 servers on loopback (SeaweedFS and moto's server mode):
the server stopped mid-put (SIGSTOP: a hung host; SIGKILL: a crash) leaves the snapshot
published degraded on the local replica, and a scrub after the server is back completes
the S3 copy; a server down before a commit costs the commit no more than the fast
availability probe. Seeded (the seed is printed; replay with BASTION_SEED)."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import pytest

from bastion.events import EventLog
from bastion.store import LocalStore, S3Store, open_store
from bastion.vault import Snapshot, Vault, make_key
from bastion.vault._objects import object_key
from tests.helpers import wait_for
from tests.s3_servers import (  # noqa: F401 (the *_fixture names are fixtures)
    S3Server,
    bucket_name,
    own_s3_server_fixture,
    s3_env_fixture,
)

pytestmark = pytest.mark.usefixtures("s3_env")


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "signing.key"
    make_key(path)
    make_key(path.with_name("admin.key"))
    return path


def _vault(stores: list[Any], keys: Path, state: Path) -> Vault:
    return Vault(
        stores,
        key_path=keys,
        admin_key_path=keys.with_name("admin.key"),
        state_dir=state,
        events=EventLog.in_state_dir(state),
    )


def _objects(raw: Any, bucket: str) -> int:
    listed = raw.list_objects_v2(Bucket=bucket, Prefix="vault/objects/")
    return int(listed.get("KeyCount", 0))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigstop", "sigkill"])
def test_s3_stopped_mid_put_publishes_degraded_then_catches_up(
    own_s3_server: S3Server, how: str, keys: Path, tmp_path: Path, rng: random.Random
) -> None:
    bucket = bucket_name("midput")
    # short timeouts and two attempts, so a hung server is given up on in seconds
    s3 = S3Store(
        own_s3_server.url(bucket, connect_timeout=1, read_timeout=0.5),
        max_attempts=2,
        recheck_s=0.2,
    )
    local = LocalStore(tmp_path / "a")
    vault = _vault([local, s3], keys, tmp_path / "state")
    vault.commit("model/warm", {"w": b"warm" * 1000})  # the bucket exists, both answer
    raw = own_s3_server.client()
    before = _objects(raw, bucket)
    files = {f"shard-{i:02d}.bin": rng.randbytes(4 << 20) for i in range(8)}  # 32 MiB
    done: dict[str, Any] = {}

    def commit() -> None:
        try:
            done["snap"] = vault.commit("model/m", files, compress=False)
        except BaseException as exc:  # the test reads it below
            done["error"] = exc

    writer = threading.Thread(target=commit)
    writer.start()
    try:
        # the first chunk of this commit is in the bucket: the put is under way
        wait_for(lambda: _objects(raw, bucket) > before or not writer.is_alive(), "a first put")
        assert writer.is_alive(), "the commit ended before the server could be stopped"
        if how == "sigstop":
            own_s3_server.pause()
        else:
            own_s3_server.kill()
    finally:
        writer.join(timeout=120)
    assert not writer.is_alive()
    assert "error" not in done, done.get("error")
    snap: Snapshot = done["snap"]
    events = vault.events
    assert isinstance(events, EventLog)
    # the commit's write, and each write after it while S3 is down (the label move)
    degraded = events.query(kind="vault.degraded")
    assert degraded
    assert {e.data["what"].split()[0] for e in degraded} <= {"commit", "label"}, degraded
    for event in degraded:
        assert event.data["down"] == [s3.url]
        assert event.data["replicas_ok"] == 1
    assert vault.read(snap.ref, "shard-07.bin") == files["shard-07.bin"]  # from the local one
    assert not s3.available()

    # the server comes back (the same one after SIGCONT; after SIGKILL a new process:
    # SeaweedFS with its data, moto empty), and a scrub catches the S3 replica up
    if how == "sigstop":
        own_s3_server.resume()
    else:
        own_s3_server.start()
    # the vault's own view (cached for a second), not just the store's: a scrub while
    # the vault still counts S3 down checks the local replica alone, and says ok
    wait_for(lambda: s3 in vault.available_stores(), "the vault to see the S3 replica again")
    report = vault.scrub(repair=True)
    assert report.ok, report
    assert report.unreachable == []
    assert report.repaired > 0
    assert report.repaired == report.bad_copies
    assert vault.scrub(repair=False).bad_copies == 0
    # the bucket alone now holds every version whole
    alone = _vault([open_store(s3.url)], keys, tmp_path / "alone")
    for path, data in files.items():
        assert alone.read(snap.ref, path) == data
    assert alone.read("model/warm@1", "w") == b"warm" * 1000


def test_a_server_down_before_the_commit_is_left_out_at_once(
    own_s3_server: S3Server, keys: Path, tmp_path: Path, rng: random.Random
) -> None:
    bucket = bucket_name("down")
    s3 = S3Store(
        own_s3_server.url(bucket, connect_timeout=1, read_timeout=0.5),
        max_attempts=2,
        recheck_s=0.2,
    )
    vault = _vault([LocalStore(tmp_path / "a"), s3], keys, tmp_path / "state")
    data = rng.randbytes(1 << 20)
    own_s3_server.pause()
    try:
        assert not s3.available()  # one HEAD, one attempt: never the retries
        snap = vault.commit("model/m", {"f": data})
        events = vault.events
        assert isinstance(events, EventLog)
        (degraded,) = events.query(kind="vault.degraded")
        assert degraded.data["reasons"] == {s3.url: "unreachable when the write began"}
        assert s3.statistics().puts == 0  # the commit never waited on the hung server
        assert vault.read(snap.ref, "f") == data
    finally:
        own_s3_server.resume()
    wait_for(lambda: s3 in vault.available_stores(), "the vault to see the S3 replica again")
    report = vault.scrub(repair=True)
    assert report.ok, report
    assert report.unreachable == []
    assert report.repaired > 0
    assert report.repaired == report.bad_copies
    assert open_store(s3.url).has(object_key(snap.files["f"].chunks[0].id))
