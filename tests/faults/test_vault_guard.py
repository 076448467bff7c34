"""A simulated ransomware run (bastion.drill.faults.ransomware, its own process: AES in
place, ``.locked``, a ransom note) on a protected directory: detected within 2 s, further
damage stopped, restored bit-identical."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bastion.events import EventLog
from bastion.vault import Vault, make_key
from bastion.vault._guard import CANARY, Guard, protect


def _wait(events: EventLog, kind: str, deadline_s: float) -> list[object]:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        found = events.query(kind=kind)
        if found:
            return list(found)
        time.sleep(0.05)
    return []


@pytest.mark.parametrize(
    ("pattern", "note"),
    [("**/*", True), ("shards/*", False)],
    ids=["canary-and-note-hit", "data-files-only"],
)
def test_ransomware_detected_stopped_and_restored(
    tmp_path: Path, rng: random.Random, pattern: str, note: bool
) -> None:
    make_key(tmp_path / "signing.key")
    events = EventLog.in_state_dir(tmp_path / "state")
    vault = Vault(
        [tmp_path / "a", tmp_path / "b"],
        key_path=tmp_path / "signing.key",
        state_dir=tmp_path / "state",
        events=events,
    )
    data = tmp_path / "data"
    (data / "shards").mkdir(parents=True)
    original = {}
    for i in range(40):
        text = "".join(f"{rng.random():.5f},{rng.randint(0, 9)}\n" for _ in range(300))
        rel = f"shards/part-{i:03d}.csv"
        (data / rel).write_text(text)
        original[rel] = text.encode()
    protect(vault, data, "dataset/shards")
    guard = Guard(vault, restore=True)
    guard.start()
    try:
        attack = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bastion.drill.faults.ransomware",
                "--root",
                str(data),
                "--keyfile",
                str(tmp_path / "journal.json"),
                "--rate",
                "20",
                "--max-files",
                "40",
                "--pattern",
                pattern,
                *([] if note else ["--no-note"]),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        detected = _wait(events, "vault.guard.ransomware", 30)
        restored = _wait(events, "vault.guard.restored", 30)
        attack.wait(timeout=30)
    finally:
        guard.stop()
    assert detected, "the attack was not detected"
    incident = events.query(kind="vault.guard.ransomware")[0].data
    assert incident["detect_ms"] < 2000
    assert incident["frozen"]
    assert restored
    outcome = events.query(kind="vault.guard.restored")[0].data
    print(f"detected in {incident['detect_ms']} ms, {outcome['files_damaged']} files damaged")
    assert outcome["files_damaged"] <= 10
    assert outcome["bit_identical"]
    assert attack.returncode != 0, "the attack ran to completion instead of being stopped"
    now = {
        p.relative_to(data).as_posix(): p.read_bytes()
        for p in data.rglob("*")
        if p.is_file() and p.name != CANARY
    }
    assert now == original
