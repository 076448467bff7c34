"""Storage faults against the vault: damage on one replica is repaired; everywhere is
unrecoverable and never served; a SIGKILLed put leaves no partial snapshot.

The damage is done with ``bastion.drill.faults`` (FlipBytes, TruncateFile, DeleteFiles).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bastion.drill.faults import DeleteFiles, FlipBytes, Scope, TruncateFile
from bastion.errors import IntegrityError
from bastion.events import EventLog
from bastion.vault import Vault, make_key
from bastion.vault._objects import object_key


def _vault(tmp_path: Path) -> Vault:
    key = tmp_path / "keys" / "signing.key"
    make_key(key)
    make_key(tmp_path / "keys" / "admin.key")
    return Vault(
        [tmp_path / "a", tmp_path / "b"],
        key_path=key,
        admin_key_path=tmp_path / "keys" / "admin.key",
        state_dir=tmp_path / "state",
        events=EventLog.in_state_dir(tmp_path / "state"),
    )


def _dataset(rng: random.Random) -> dict[str, bytes]:
    files = {}
    for i in range(12):
        if i % 3 == 0:
            files[f"bin/{i}.bin"] = rng.randbytes(rng.randint(1, 600_000))
        else:
            files[f"csv/{i}.csv"] = "".join(
                f"{rng.random():.6f},{rng.randint(0, 9)}\n" for _ in range(rng.randint(1, 20000))
            ).encode()
    return files


def test_damage_on_one_replica_is_repaired_by_reads_and_scrub(
    tmp_path: Path, rng: random.Random
) -> None:
    vault = _vault(tmp_path)
    files = _dataset(rng)
    snap = vault.commit("dataset/d", files)
    objects = sorted({c.id for f in snap.files.values() for c in f.chunks})
    victims = rng.sample(objects, min(6, len(objects)))
    replica = tmp_path / rng.choice(["a", "b"])
    scope = Scope.of(paths=[replica])
    paths = [replica / object_key(d) for d in victims]
    for p in paths:
        p.chmod(0o644)
    FlipBytes(paths[0:2], scope=scope, count=3, seed=rng.randint(0, 2**31), max_files=2).inject()
    TruncateFile(paths[2:4], scope=scope, keep_fraction=0.3, max_files=2).inject()
    DeleteFiles(paths[4:6], scope=scope, max_files=2).inject()
    # reads serve good bytes (repairing what they touch on the first replica they try)
    for path, data in files.items():
        assert vault.read("dataset/d", path) == data
    # scrub repairs whatever reads did not reach; afterwards nothing is bad anywhere
    report = vault.scrub(repair=True)
    assert report.ok, report
    assert vault.events is not None
    assert len(vault.events.query(kind="vault.repaired")) >= len(victims)
    assert vault.scrub(repair=False).bad_copies == 0
    # fresh damage found by scrub alone (no read first)
    victim = replica / object_key(victims[0])
    victim.chmod(0o644)
    FlipBytes(victim, scope=scope, count=5, seed=rng.randint(0, 2**31)).inject()
    missing = replica / object_key(victims[1])
    DeleteFiles(missing, scope=scope).inject()
    report = vault.scrub(repair=True)
    assert report.ok
    assert report.repaired >= 2
    assert vault.scrub(repair=False).bad_copies == 0
    for path, data in files.items():
        assert vault.read("dataset/d", path) == data


def test_damage_on_every_replica_is_unrecoverable_and_not_served(
    tmp_path: Path, rng: random.Random
) -> None:
    vault = _vault(tmp_path)
    files = _dataset(rng)
    snap = vault.commit("dataset/d", files)
    path = rng.choice(sorted(snap.files))
    digest = snap.files[path].chunks[0].id
    for replica in ("a", "b"):
        target = tmp_path / replica / object_key(digest)
        target.chmod(0o644)
        FlipBytes(target, scope=Scope.of(paths=[target]), count=2, seed=rng.randint(0, 99)).inject()
    with pytest.raises(IntegrityError):
        vault.read("dataset/d", path)
    report = vault.scrub(repair=True)
    assert not report.ok
    assert digest in report.unrecoverable
    assert vault.events is not None
    assert vault.events.query(kind="vault.unrecoverable")


def test_budgeted_scrub_resumes_and_covers_everything(tmp_path: Path, rng: random.Random) -> None:
    vault = _vault(tmp_path)
    vault.commit("dataset/d", _dataset(rng))
    first = vault.scrub(repair=False, max_seconds=0.0)
    assert not first.complete
    seen = first.objects
    for _ in range(200):
        more = vault.scrub(repair=False, max_seconds=0.0)
        seen += more.objects
        if more.complete:
            break
    full = vault.scrub(repair=False)
    assert full.complete
    assert seen >= full.objects


def test_scrub_read_ahead_split_batches_cover_every_object(
    tmp_path: Path, rng: random.Random, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads run ahead in batches that stop at a byte limit; every object is still checked
    once, in order, and damage anywhere in a split batch is found and repaired."""
    from bastion.vault import _scrub

    monkeypatch.setattr(_scrub, "_BATCH", 3)
    monkeypatch.setattr(_scrub, "_BATCH_BYTES", 1)  # every batch stops after one object
    vault = _vault(tmp_path)
    snap = vault.commit("dataset/d", _dataset(rng))
    objects = sorted({c.id for f in snap.files.values() for c in f.chunks})
    victims = rng.sample(objects, min(4, len(objects)))
    replica = tmp_path / rng.choice(["a", "b"])
    for digest in victims:
        path = replica / object_key(digest)
        path.chmod(0o644)
        FlipBytes(path, scope=Scope.of(paths=[path]), count=2, seed=rng.randint(0, 99)).inject()
    seen: list[int] = []
    report = vault.scrub(repair=True, progress=seen.append)
    assert report.ok
    assert report.objects == len(objects) == len(seen)
    assert report.copies_checked == 2 * len(objects)
    assert report.repaired == len(victims)
    assert report.cursor == objects[-1]
    assert vault.scrub(repair=False).bad_copies == 0


_PUT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from bastion.vault import Vault
    sys.stdin.readline()  # "go": started ahead, it waits here with its imports done
    root = Path(sys.argv[1])
    vault = Vault([root / "a", root / "b"], key_path=root / "keys" / "signing.key",
                  state_dir=root / "state")
    data = {f"f{i}.bin": os.urandom(200_000 + i) for i in range(12)}
    print("ready", flush=True)
    vault.commit("dataset/k", data)
    print("done", flush=True)
    """
)


# The same through the ingest worker processes: files on disk, many of them.
_PUT_FILES = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from bastion.vault import Vault
    sys.stdin.readline()  # "go": started ahead, it waits here with its imports done
    root = Path(sys.argv[1])
    vault = Vault([root / "a", root / "b"], key_path=root / "keys" / "signing.key",
                  state_dir=root / "state")
    vault.ingest_processes = True
    src = root / "src"
    data = {p.name: p for p in sorted(src.iterdir())}
    print("ready", flush=True)
    vault.commit("dataset/k", data)
    print("done", flush=True)
    """
)


@pytest.mark.parametrize(("script_text", "trials"), [(_PUT, 50), (_PUT_FILES, 15)])
def test_put_killed_at_random_points_leaves_a_consistent_vault(
    tmp_path: Path, rng: random.Random, script_text: str, trials: int
) -> None:
    import psutil

    vault = _vault(tmp_path)
    vault.commit("dataset/k", {"seed.bin": b"seed"})
    script = tmp_path / "put.py"
    script.write_text(script_text)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        (src / f"f{i}.bin").write_bytes(rng.randbytes(200_000 + i))
    tag = f"bastion-put-kill-{os.getpid()}-{rng.random()}"
    env = {**os.environ, "BASTION_TEST_TAG": tag}

    def spawn() -> subprocess.Popen[str]:
        """A put process, started ahead: it pays its interpreter start and imports
        (~0.2 s, 65 times in this test) while the test checks the vault after the
        previous kill, then waits for "go" before it touches the vault."""
        return subprocess.Popen(
            [sys.executable, str(script), str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def go(proc: subprocess.Popen[str]) -> subprocess.Popen[str]:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write("go\n")
        proc.stdin.close()
        assert proc.stdout.readline().strip() == "ready"
        return proc

    # One put left to finish says how long a put takes here; the kills then fall
    # uniformly over 1.2x that, so most land inside the put, not after it.
    proc = go(spawn())
    began = time.perf_counter()
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "done"
    took = time.perf_counter() - began
    proc.wait()
    proc.stdout.close()
    ahead = spawn()
    for trial in range(trials):
        proc = go(ahead)
        assert proc.stdout is not None
        time.sleep(rng.uniform(0, 1.2 * took))  # the kill point is the random variable here
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        if trial + 1 < trials:
            ahead = spawn()  # after the kill, so it never competes with the put
        for snap in vault.versions("dataset/k"):
            if snap.version > 1:
                assert len(snap.files) == 12, "a partial snapshot became visible"
    # every visible snapshot reads back fully verified; versions are dense
    versions = vault.versions("dataset/k")
    assert [s.version for s in versions] == list(range(1, len(versions) + 1))
    for snap in versions:
        for path in snap.files:
            assert len(vault.read(snap, path)) == snap.files[path].size
    report = vault.scrub(repair=False)
    assert report.ok, report
    # ingest workers left by a killed parent see their pipe close and exit
    left = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if p.environ().get("BASTION_TEST_TAG") == tag:
                left.append(p)
    _, alive = psutil.wait_procs(left, timeout=60)
    assert not alive, f"ingest workers still running after their parent died: {alive}"
    print(
        f"{trials} kills over 1.2 x {took:.3f} s, "
        f"{len(versions) - 2} puts had completed before their kill"
    )
