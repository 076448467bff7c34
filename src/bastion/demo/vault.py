"""Demo scene: protect the example's dataset, attack it with simulated ransomware, and
show the guard detect it, stop it and restore the dataset bit-identical."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import TYPE_CHECKING

from bastion.vault import Vault, make_key
from bastion.vault._guard import CANARY, Guard, protect

if TYPE_CHECKING:
    from bastion.demo import DemoContext, Scene
    from bastion.events import Event

TITLE = "The vault: signed snapshots, and a ransomware attack stopped and rolled back"
WAIT_S = 120.0


def run(ctx: DemoContext) -> Scene:
    from bastion.demo import Scene

    scene = Scene(TITLE)
    manifest = ctx.manifest()
    if manifest.vault is None:
        scene.findings.append("the example has no vault section; nothing to show")
        scene.ok = False
        return scene
    for key in (manifest.vault.key, manifest.vault.admin_key):
        if key is not None:
            make_key(key)
    events = ctx.events()
    vault = Vault.from_manifest(manifest, events=events)
    data = ctx.workdir / "dataset"
    before = {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()}
    snap = protect(vault, data, "dataset/digits")
    scene.findings.append(
        f"protected {data.name}/ as {snap.ref}: {len(snap.files)} files, {snap.size:,} bytes, "
        f"signed (Ed25519), on {len(vault.stores)} replicas"
    )
    started = events.query()[-1].id if events.query() else 0
    with Guard(vault, restore=True):
        attack = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bastion.drill.faults.ransomware",
                "--root",
                str(data),
                "--keyfile",
                str(ctx.workdir / "ransom-journal.json"),
                "--rate",
                "20",
                "--pattern",
                "*.csv",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Wait for the state (the guard's restore), not for a time: the bound is only for
        # a guard that never acts, and is far beyond what a busy machine needs.
        deadline = time.monotonic() + WAIT_S
        restored: list[Event] = []
        while time.monotonic() < deadline and not restored:
            restored = events.query(kind="vault.guard.restored", after_id=started)
            time.sleep(0.05)
        try:
            attack.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            attack.kill()
            attack.wait()
    detected = events.query(kind="vault.guard.ransomware", after_id=started)
    if not detected or not restored:
        scene.findings.append("the guard did not detect and restore the attack")
        scene.ok = False
        return scene
    incident, outcome = detected[0].data, restored[0].data
    after = {p.name: p.read_bytes() for p in data.iterdir() if p.is_file() and p.name != CANARY}
    identical = after == before
    scene.findings.append(
        "ransomware (AES in place, .locked, ransom note) started at 20 files/s; detected in "
        f"{incident['detect_ms']:.0f} ms ({'; '.join(incident['signals'][:2])})"
    )
    scene.findings.append(
        f"directory frozen (read-only + immutable); attack exit code {attack.returncode}; "
        f"{outcome['files_damaged']} files damaged before the freeze"
    )
    scene.findings.append(
        f"restored {snap.ref} in {outcome['restore_ms']:.0f} ms: "
        f"{'bit-identical' if identical else 'NOT identical'} ({len(after)} files)"
    )
    scene.ok = identical and incident["detect_ms"] < 2000 and outcome["files_damaged"] <= 10
    return scene
