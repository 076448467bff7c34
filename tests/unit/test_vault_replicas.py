"""The replica set on in-memory replicas with failures injected: which replica serves a
read, what gets repaired, when a write has its quorum and when it is only degraded, and
retention on an injected clock (no wall time)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bastion.errors import IntegrityError, UnavailableError, UsageError
from bastion.events import EventLog
from bastion.resilience import ManualClock
from bastion.store import MemoryStore
from bastion.vault import ReplicaSet, Vault, make_key
from bastion.vault._objects import object_key

DAY = 86400.0


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "signing.key"
    make_key(path)
    make_key(tmp_path / "keys" / "admin.key")
    return path


@pytest.fixture
def events(tmp_path: Path) -> EventLog:
    return EventLog.in_state_dir(tmp_path / "state")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def stores(clock: ManualClock) -> list[MemoryStore]:
    # A slow replica's delay advances the same clock the replica set measures with.
    return [MemoryStore("a", sleep=clock.advance), MemoryStore("b", sleep=clock.advance)]


def _vault(
    stores: list[MemoryStore],
    key: Path,
    events: EventLog,
    clock: ManualClock,
    *,
    quorum: int | None = None,
) -> Vault:
    replicas = ReplicaSet(stores, quorum=quorum, clock=clock)
    return Vault(
        replicas,
        key_path=key,
        admin_key_path=key.with_name("admin.key"),
        state_dir=key.parent.parent / "state",
        events=events,
    )


def _chunk_key(vault: Vault, ref: str, path: str) -> str:
    return object_key(vault.snapshot(ref).files[path].chunks[0].id)


def test_a_read_is_served_by_the_second_replica_when_the_first_stops_answering(
    stores: list[MemoryStore], key: Path, events: EventLog, clock: ManualClock
) -> None:
    a = stores[0]
    vault = _vault(stores, key, events, clock)
    vault.commit("dataset/d", {"f": b"payload" * 100})
    vault.replicas.available()  # both reachable a moment ago (the cached answer)
    a.unavailable = True
    assert vault.read("dataset/d", "f") == b"payload" * 100
    # the first replica failed the first thing asked of it, so it is read last from
    # then on: everything was served by the second
    stats = vault.statistics().replicas
    assert stats.replicas[0].failures >= 1
    assert stats.replicas[0].demoted
    assert stats.replicas[0].reads_served == 0
    assert stats.replicas[1].reads_served >= 2  # a document and the chunk
    # once the set looks again, a down replica is not tried at all
    clock.advance(2)
    gets = a.calls.get("get", 0)
    assert vault.read("dataset/d", "f") == b"payload" * 100
    assert a.calls.get("get", 0) == gets
    assert vault.degraded() == ["memory://a"]


def test_corrupt_reads_are_served_from_the_good_replica_and_it_is_read_first_after(
    stores: list[MemoryStore], key: Path, events: EventLog, clock: ManualClock
) -> None:
    a = stores[0]
    vault = _vault(stores, key, events, clock)
    vault.commit("dataset/d", {"f": b"payload" * 100})
    chunk = _chunk_key(vault, "dataset/d", "f")
    a.corrupt_reads("objects/")  # the disk is fine, reads through this controller are not
    assert vault.read("dataset/d", "f") == b"payload" * 100
    (failed,) = events.query(kind="vault.integrity.failed")
    assert (failed.data["replica"], failed.data["key"]) == ("memory://a", chunk)
    # a failed: for the cooldown it is read after b, so it is not asked while b answers
    gets = a.calls["get"]
    for _ in range(3):
        assert vault.read("dataset/d", "f") == b"payload" * 100
    assert a.calls["get"] == gets
    assert vault.statistics().replicas.replicas[0].demoted
    # after the cooldown the manifest's order is back, and a healed a serves again
    a.heal()
    clock.advance(vault.replicas.cooldown_s + 1)
    assert vault.read("dataset/d", "f") == b"payload" * 100
    assert a.calls["get"] > gets
    assert not vault.statistics().replicas.replicas[0].demoted


def test_a_repair_that_cannot_be_written_is_said_not_hidden(
    stores: list[MemoryStore], key: Path, events: EventLog, clock: ManualClock
) -> None:
    a = stores[0]
    vault = _vault(stores, key, events, clock)
    vault.commit("dataset/d", {"f": b"payload" * 100})
    chunk = _chunk_key(vault, "dataset/d", "f")
    a.damage(chunk)
    a.full = True
    assert vault.read("dataset/d", "f") == b"payload" * 100
    (failed,) = events.query(kind="vault.repair_failed")
    assert (failed.data["replica"], failed.data["key"]) == ("memory://a", chunk)
    assert "No space left" in failed.data["error"]
    assert not events.query(kind="vault.repaired")
    assert vault.statistics().replicas.repair_failures == 1
    report = vault.scrub(repair=True)
    assert report.ok  # no data is lost ...
    assert report.repaired == 0
    (failed_repair,) = report.repair_failed  # ... but the bad copy stays, and scrub says so
    assert failed_repair.startswith(f"memory://a: object {chunk.rsplit('/', 1)[-1][:16]}")


def test_a_damaged_copy_is_repaired_from_the_good_one(
    stores: list[MemoryStore], key: Path, events: EventLog, clock: ManualClock
) -> None:
    a, b = stores
    vault = _vault(stores, key, events, clock)
    vault.commit("dataset/d", {"f": b"payload" * 100})
    chunk = _chunk_key(vault, "dataset/d", "f")
    a.damage(chunk)
    assert vault.read("dataset/d", "f") == b"payload" * 100
    assert a.get(chunk) == b.get(chunk)
    (repaired,) = events.query(kind="vault.repaired")
    assert (repaired.data["replica"], repaired.data["key"]) == ("memory://a", chunk)
    stats = vault.statistics().replicas
    assert (stats.repairs, stats.replicas[0].repairs, stats.integrity_failures) == (1, 1, 1)
    # damaged on both: never served, and said so
    b.damage(chunk)
    a.damage(chunk)
    with pytest.raises(IntegrityError, match="no good copy on any replica"):
        vault.read("dataset/d", "f")
    assert events.query(kind="vault.unrecoverable")
    assert vault.statistics().replicas.unrecoverable == 1


def test_a_missing_copy_is_repaired_by_the_read_that_finds_it(
    stores: list[MemoryStore], key: Path, events: EventLog, clock: ManualClock
) -> None:
    a, b = stores
    vault = _vault(stores, key, events, clock)
    vault.commit("dataset/d", {"f": b"payload" * 100})
    chunk = _chunk_key(vault, "dataset/d", "f")
    a.delete(chunk)
    assert vault.read("dataset/d", "f") == b"payload" * 100
    assert a.get(chunk) == b.get(chunk)


def test_a_slow_replica_is_read_after_the_others_for_a_while(
    stores: list[MemoryStore], key: Path, events: EventLog, clock: ManualClock
) -> None:
    a, b = stores
    vault = _vault(stores, key, events, clock)
    vault.commit("dataset/d", {"f": b"payload" * 100})
    a.delay_s = vault.replicas.slow_s * 2
    assert vault.read("dataset/d", "f") == b"payload" * 100  # served, slowly
    gets_a, gets_b = a.calls["get"], b.calls.get("get", 0)
    assert vault.read("dataset/d", "f") == b"payload" * 100
    assert a.calls["get"] == gets_a
    assert b.calls["get"] > gets_b
    assert "slow" in vault.statistics().replicas.replicas[0].last_error


def test_no_replica_reachable_is_unavailable_not_integrity(
    stores: list[MemoryStore], key: Path, events: EventLog, clock: ManualClock
) -> None:
    vault = _vault(stores, key, events, clock)
    snap = vault.commit("dataset/d", {"f": b"x"})
    for store in stores:
        store.unavailable = True
    clock.advance(2)
    with pytest.raises(UnavailableError, match="no replica reachable"):
        vault.fetch(snap.files["f"].chunks[0].id)
    with pytest.raises(UnavailableError, match="no replica reachable"):
        vault.snapshot("dataset/d")  # not "no snapshot named dataset/d"
    with pytest.raises(UnavailableError, match="no replica reachable"):
        vault.scrub(repair=False)


def test_quorum_not_reachable_writes_nothing_and_names_the_replica(
    stores: list[MemoryStore], key: Path, events: EventLog, clock: ManualClock
) -> None:
    a, b = stores
    b.unavailable = True
    vault = _vault(stores, key, events, clock, quorum=2)
    with pytest.raises(UnavailableError, match=r"1 of 2 replicas reachable, 2 needed.*memory://b"):
        vault.commit("dataset/d", {"f": b"x"})
    assert a.stored_keys() == []


def test_quorum_lost_during_a_commit_publishes_nothing(
    stores: list[MemoryStore], key: Path, events: EventLog, clock: ManualClock
) -> None:
    a, b = stores
    b.full = True  # reachable, but every write fails
    vault = _vault(stores, key, events, clock, quorum=2)
    with pytest.raises(UnavailableError, match=r"on 1 replicas, 2 needed: memory://b: .*No space"):
        vault.commit("dataset/d", {"f": b"x" * 5000})
    assert not [k for k in a.stored_keys() if k.startswith("snapshots/")]
    assert vault.versions("dataset/d") == []


def test_degraded_mode_commits_on_the_quorum_and_scrub_fills_the_gap(
    stores: list[MemoryStore], key: Path, events: EventLog, clock: ManualClock
) -> None:
    a, b = stores
    b.full = True
    vault = _vault(stores, key, events, clock)  # quorum 1
    snap = vault.commit("dataset/d", {"f": b"x" * 5000, "g": b"y" * 5000})
    (degraded,) = events.query(kind="vault.degraded")
    assert degraded.data["down"] == ["memory://b"]
    assert "No space left" in degraded.data["reasons"]["memory://b"]
    (put,) = events.query(kind="vault.put")
    assert put.data["replicas"] == 1
    assert not b.stored_keys()
    assert vault.read(snap, "f") == b"x" * 5000
    # the replica comes back: scrub copies everything it lacks from the good one
    b.heal()
    report = vault.scrub(repair=True)
    assert report.ok
    assert report.repaired == report.bad_copies > 0
    assert report.pins_written == ["memory://b"]  # the rebuilt replica gets its pin
    assert sorted(b.stored_keys()) == sorted(a.stored_keys())
    again = vault.scrub(repair=False)
    assert (again.bad_copies, again.pins_missing) == (0, [])


def test_a_replica_lost_in_the_middle_of_a_label_write_is_degraded(
    stores: list[MemoryStore], key: Path, events: EventLog, clock: ManualClock
) -> None:
    b = stores[1]
    vault = _vault(stores, key, events, clock)
    vault.commit("model/m", {"f": b"1"})
    vault.commit("model/m", {"f": b"2"})
    b.full = True
    vault.label("model/m", 1, "prod")
    assert vault.labels("model/m") == {"latest": 2, "prod": 1}
    assert [e.data["what"] for e in events.query(kind="vault.degraded")] == ["label model/m@prod"]


def test_without_a_state_dir_the_publish_lock_is_the_replicas(
    stores: list[MemoryStore], key: Path
) -> None:
    vault = Vault(stores, key_path=key)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            vault.commit("ckpt/j", {"f": str(i).encode() * 100})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [s.version for s in vault.versions("ckpt/j")] == [1, 2, 3, 4, 5, 6]
    assert stores[0].calls["lock"] == 6
    assert "lock" not in stores[1].calls


def test_a_quorum_the_replicas_cannot_meet_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="quorum 3 cannot be met by 2 replicas"):
        ReplicaSet([MemoryStore("a"), MemoryStore("b")], quorum=3)
    with pytest.raises(UsageError, match="at least one replica"):
        ReplicaSet([])


def test_retention_by_age_follows_the_injected_clock(tmp_path: Path, key: Path) -> None:
    """keep_within_days on a clock the test moves: no wall time, no sleeping."""
    wall = ManualClock(start=1_750_000_000.0)
    stores = [MemoryStore("a", clock=wall), MemoryStore("b", clock=wall)]
    vault = Vault(
        stores,
        key_path=key,
        admin_key_path=key.with_name("admin.key"),
        state_dir=tmp_path / "state",
        clock=wall,
    )
    vault.commit("dataset/d", {"x": b"day 0, first"})
    vault.commit("dataset/d", {"x": b"day 0, second"})
    wall.advance(10 * DAY)
    vault.commit("dataset/d", {"x": b"day 10"})
    assert vault.snapshot("dataset/d@3").created.timestamp() == wall()
    # all three are younger than 30 days: nothing goes
    assert vault.gc(keep_within_days=30, grace_s=0)["snapshots_deleted"] == 0
    # @1 and @2 are 10 days old, @3 (also @latest) is new
    result = vault.gc(keep_within_days=7, grace_s=0)
    assert result["snapshots_deleted"] == 2
    assert [s.version for s in vault.versions("dataset/d")] == [3]
    assert result["objects_deleted"] == 2 * 2  # two unneeded objects, on two replicas
    # 20 more days: @3 is old too, but @latest is kept whatever the rules
    wall.advance(20 * DAY)
    assert vault.gc(keep_within_days=7, grace_s=0)["snapshots_deleted"] == 0
    # an object no snapshot names is spared while it may belong to a commit in flight
    stores[0].put("objects/ab/" + "ab" * 32, [b"\x00in flight"])
    assert vault.gc(grace_s=3600)["objects_deleted"] == 0
    wall.advance(3601)
    assert vault.gc(grace_s=3600)["objects_deleted"] == 1


def test_a_commit_landing_while_scrub_lists_is_not_reported_unrecoverable(
    stores: list[MemoryStore],
    key: Path,
    events: EventLog,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Scrub lists each replica's objects, then reads the snapshot documents. A commit
    in between (its objects first, then its document) names objects the listing never
    saw: they must be read, not called lost (the drill suite's disk-full flake)."""
    from bastion.vault import _scrub

    vault = _vault(stores, key, events, clock)
    vault.commit("run/writes", {"f": b"first" * 1000})
    real = _scrub._check_snapshots
    late: list[str] = []

    def commit_between(*args: object, **kwargs: object) -> set[str]:
        if not late:  # once: the commit a background writer makes at that moment
            late.append(vault.commit("run/writes", {"f": b"second" * 1000}).id)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_scrub, "_check_snapshots", commit_between)
    report = vault.scrub(repair=False)
    assert late
    assert report.unrecoverable == []
    assert report.ok
    assert report.bad_copies == 0
    assert events.query(kind="vault.unrecoverable") == []
