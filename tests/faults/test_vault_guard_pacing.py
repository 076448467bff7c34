"""The guard cannot be outpaced (issue 19 item 4): attacks paced around its timing windows
(generated from the printed seed: inter-write delays around ``settle_s`` and
``window_s``, writes landing while the guard restores and right after it did), on real
files, against the real guard.

- With ``restore``: whatever the pacing, the tree ends bit-identical to its snapshot and
  the guard is still watching (a write after its restore is put back too).
- Without: every tampered file is named in a ``vault.guard.tampered`` event, however
  slowly the attack goes.
- A change inotify cannot report (a write through a hard link from outside the tree)
  and a change made before the guard started are found by its sweeps.
- A file it cannot put back is named, exactly, in ``vault.guard.restore_failed``.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bastion.events import EventLog
from bastion.store import MemoryStore
from bastion.vault import CANARY, Guard, Vault, make_key, protect

SETTLE_S = 0.3
WINDOW_S = 1.0
FILES = 12


def _until(condition: Callable[[], bool], deadline_s: float, what: str) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < end, f"not within {deadline_s} s: {what}"
        time.sleep(0.01)


def _vault(tmp_path: Path, stores: list[MemoryStore] | None = None) -> Vault:
    key = tmp_path / "keys" / "signing.key"
    make_key(key)
    replicas = stores if stores is not None else [tmp_path / "a", tmp_path / "b"]
    return Vault(
        replicas,  # type: ignore[arg-type]
        key_path=key,
        state_dir=tmp_path / "state",
        events=EventLog.in_state_dir(tmp_path / "state"),
    )


def _dataset(root: Path, rng: random.Random) -> dict[str, bytes]:
    (root / "shards").mkdir(parents=True)
    files = {}
    for i in range(FILES):
        rel = f"shards/part-{i:02d}.csv" if i % 2 else f"part-{i:02d}.csv"
        body = "".join(f"{rng.random():.5f},{rng.randint(0, 9)}\n" for _ in range(150)).encode()
        (root / rel).write_bytes(body)
        files[rel] = body
    return files


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.name != CANARY
    }


def _reported(events: EventLog) -> set[str]:
    return {f for e in events.query(kind="vault.guard.tampered") for f in e.data["files"]}


def _partial_encrypt(path: Path, rng: random.Random) -> None:
    """Entropy-evasive: 48 random bytes in the middle of a text file (no signal fires)."""
    data = bytearray(path.read_bytes())
    at = rng.randrange(0, max(1, len(data) - 48))
    data[at : at + 48] = rng.randbytes(48)
    path.write_bytes(bytes(data))


def _delay(rng: random.Random) -> float:
    """An inter-write delay spanning the guard's windows: back to back, just under and
    just over ``settle_s``, and around ``window_s``."""
    return rng.choice(
        [
            0.0,
            rng.uniform(0.0, 0.05),
            rng.uniform(0.5, 0.95) * SETTLE_S,
            rng.uniform(1.0, 1.3) * SETTLE_S,
            rng.uniform(1.5, 2.5) * SETTLE_S,
            rng.uniform(0.8, 1.2) * WINDOW_S,
        ]
    )


@contextlib.contextmanager
def _guard(vault: Vault, **options: float | bool) -> Iterator[Guard]:
    guard = Guard(vault, settle_s=SETTLE_S, window_s=WINDOW_S, rescan_s=0.5, **options)  # type: ignore[arg-type]
    guard.start()
    try:
        yield guard
    finally:
        guard.stop()


def _caught_up(guard: Guard, since_scans: int) -> bool:
    """The guard swept every tree at least twice since ``since_scans`` (so a sweep began
    after the attack's last write) and has nothing left to do."""
    stats = guard.statistics()
    return stats.scans >= since_scans + 2 and stats.pending == 0


def test_a_slow_attack_has_every_tampered_file_reported(tmp_path: Path, rng: random.Random) -> None:
    vault = _vault(tmp_path)
    events = EventLog.in_state_dir(tmp_path / "state")
    data = tmp_path / "data"
    files = _dataset(data, rng)
    protect(vault, data, "dataset/slow")
    victims = rng.sample(sorted(files), FILES)
    attacked: set[str] = set()
    with _guard(vault, restore=False) as guard:
        for rel in victims:
            time.sleep(_delay(rng))  # the attack's pacing (it is the attacker that waits)
            try:
                _partial_encrypt(data / rel, rng)
            except OSError:
                continue  # frozen after a burst: the attack is stopped there
            attacked.add(rel)
        # what the attack changed, as the disk has it (a write cut short by the freeze
        # may still have emptied its file: that is tampering too)
        changed = {rel for rel, body in files.items() if (data / rel).read_bytes() != body}
        assert changed >= attacked
        _until(lambda: _reported(events) >= changed, 20, f"every one of {sorted(changed)}")
        assert guard.statistics().tampered == len(changed)
    print(f"{len(attacked)} files attacked, {len(_reported(events))} reported")
    assert len(attacked) >= 5
    assert _reported(events) == changed


def test_an_attack_paced_around_the_guards_restore_is_put_back(
    tmp_path: Path, rng: random.Random
) -> None:
    stores = [MemoryStore("a"), MemoryStore("b")]
    vault = _vault(tmp_path, stores)
    events = EventLog.in_state_dir(tmp_path / "state")
    data = tmp_path / "data"
    original = _dataset(data, rng)
    protect(vault, data, "dataset/paced")
    steps = [
        (
            rng.choice(["delay", "delay", "during-restore", "after-restore"]),
            rng.choice(["partial", "partial", "encrypt", "delete", "add", "lock"]),
            rng.choice(sorted(original)),
        )
        for _ in range(10)
    ]
    steps.insert(3, ("during-restore", "partial", sorted(original)[0]))
    steps.append(("after-restore", "partial", sorted(original)[-1]))
    print("pacing:", steps)
    done: list[tuple[str, str, str]] = []
    with _guard(vault, restore=True) as guard:
        for store in stores:
            store.delay_s = 0.02  # a restore takes a while: writes land inside it
        last: Path | None = None
        for when, action, rel in steps:
            target = data / rel
            if when == "delay":
                time.sleep(_delay(rng))
            elif (
                when == "during-restore"
                and last is not None
                and last.name in {p.name for p in data.rglob("*")}
            ):
                # the moment the guard has put the last victim back, strike again
                previous = last
                with contextlib.suppress(AssertionError):
                    _until(
                        lambda p=previous: (
                            p.exists()
                            and p.read_bytes() == original.get(p.relative_to(data).as_posix())
                        ),
                        5,
                        "the guard's restore",
                    )
            elif when == "after-restore":
                seen = len(events.query(kind="vault.guard.restored"))
                with contextlib.suppress(AssertionError):
                    _until(
                        lambda n=seen: len(events.query(kind="vault.guard.restored")) > n,
                        5,
                        "a restore",
                    )
            try:
                if action == "partial":
                    _partial_encrypt(target, rng)
                elif action == "encrypt":
                    target.write_bytes(os.urandom(len(original[rel])))
                elif action == "delete":
                    target.unlink()
                elif action == "add":
                    (data / f"extra-{len(done)}.bin").write_bytes(rng.randbytes(500))
                elif action == "lock":
                    target.rename(target.with_name(target.name + ".locked"))
            except OSError:
                continue  # frozen, or the file is not there just now
            done.append((when, action, rel))
            last = target
        scans = guard.statistics().scans
        _until(
            lambda: _caught_up(guard, scans) and _tree(data) == original,
            30,
            "the tree put back whole with nothing pending",
        )
        stats = guard.statistics()
    print(f"{len(done)} writes landed; {stats.restores} restore rounds")
    assert _tree(data) == original
    assert stats.tampered == 0
    assert stats.unrestored == 0
    assert (data / CANARY).exists()
    restored = events.query(kind="vault.guard.restored")
    assert restored
    assert restored[-1].data["bit_identical"] is True
    assert not events.query(kind="vault.guard.restore_failed")


def test_a_write_inotify_cannot_see_is_found_by_the_sweep(
    tmp_path: Path, rng: random.Random
) -> None:
    vault = _vault(tmp_path)
    events = EventLog.in_state_dir(tmp_path / "state")
    data = tmp_path / "data"
    files = _dataset(data, rng)
    protect(vault, data, "dataset/linked")
    victim = rng.choice(sorted(files))
    outside = tmp_path / "outside-link"
    os.link(data / victim, outside)  # same inode, a name the watch never sees
    with _guard(vault, restore=True):
        with outside.open("r+b") as fh:
            fh.seek(10)
            fh.write(b"XXXX")
        _until(lambda: victim in _reported(events), 10, f"{victim} reported")
        _until(lambda: (data / victim).read_bytes() == files[victim], 10, f"{victim} put back")


def test_a_change_made_while_the_guard_was_down_is_found_at_start(
    tmp_path: Path, rng: random.Random
) -> None:
    vault = _vault(tmp_path)
    events = EventLog.in_state_dir(tmp_path / "state")
    data = tmp_path / "data"
    files = _dataset(data, rng)
    protect(vault, data, "dataset/down")
    victims = rng.sample(sorted(files), 3)
    for rel in victims:
        _partial_encrypt(data / rel, rng)
    with _guard(vault, restore=True) as guard:
        assert _reported(events) == set(victims)  # by the time start() returns
        scans = guard.statistics().scans
        _until(lambda: _caught_up(guard, scans) and _tree(data) == files, 10, "put back")


def _immutable(path: Path, on: bool) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, 0x80086601, flags, True)
        flags[0] = flags[0] | 0x10 if on else flags[0] & ~0x10
        fcntl.ioctl(fd, 0x40086602, flags, True)
    finally:
        os.close(fd)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can make a file immutable")
def test_a_file_it_cannot_put_back_is_named_exactly(tmp_path: Path, rng: random.Random) -> None:
    vault = _vault(tmp_path)
    events = EventLog.in_state_dir(tmp_path / "state")
    data = tmp_path / "data"
    files = _dataset(data, rng)
    protect(vault, data, "dataset/stuck")
    stuck, fine = rng.sample(sorted(files), 2)
    _partial_encrypt(data / stuck, rng)
    try:
        _immutable(data / stuck, True)  # the attacker's own lock: the guard never set it
    except OSError:
        pytest.skip("this filesystem has no immutable flag")
    try:
        with _guard(vault, restore=True, max_rounds=3) as guard:
            _partial_encrypt(data / fine, rng)
            _until(lambda: bool(events.query(kind="vault.guard.restore_failed")), 15, "failure")
            failed = events.query(kind="vault.guard.restore_failed")[-1].data
            assert failed["files"] == [stuck]
            assert failed["rounds"] == 3
            assert guard.statistics().unrestored == 1
            outcome = events.query(kind="vault.guard.restored")[-1].data
            assert outcome["bit_identical"] is False
            assert outcome["files_not_restored"] == [stuck]
            assert (data / fine).read_bytes() == files[fine]
    finally:
        _immutable(data / stuck, False)
