"""The reference suite's own Chaos Toolkit activities: what its scenarios need beyond
``bastion.drill.actions`` and ``bastion.drill.probes``.

Owns: probes over the twin's vault and gates (``vault_intact``, ``data_gate_passes``),
the system's own recovery steps run as actions (``vault_repair``: a scrub with repair;
``relabel``: a label moved back to a version that passed its gate), and fault helpers
that find their target in the twin's vault (``corrupt_latest_checkpoint``,
``swap_object``, ``poison_dataset``), each injected through the fault library so the
drill's scope, its events and its safety net apply. ``wait_checkpoints``,
``write_ok`` and ``write_load`` feed a training or storage scenario.

Every activity takes the twin's manifest (``manifest:``), never production's: the
suite writes the experiments, with the twin's paths in them, and the twin's scope
refuses anything else.

Must never: write outside the twin (every write is the vault of the manifest given, or a
fault through ``bastion.drill.actions.inject``, which checks the scope).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion import event_kinds as ek
from bastion.drill import actions
from bastion.drill.context import current
from bastion.errors import BastionError, UsageError

if TYPE_CHECKING:
    from bastion.vault import Vault

__all__ = [
    "corrupt_latest_checkpoint",
    "data_gate_passes",
    "matches_snapshot",
    "poison_dataset",
    "protect_copy",
    "relabel",
    "swap_object",
    "upstream_faulted",
    "vault_intact",
    "vault_repair",
    "wait_broken",
    "wait_checkpoints",
    "write_load",
    "write_ok",
]


def _vault(manifest: str) -> Vault:
    from bastion.manifest import load
    from bastion.vault import Vault

    ctx = current()
    loaded = load(manifest)
    # the drill's own log (the twin's), so the vault's detections land beside the drill's
    return Vault.from_manifest(loaded, events=ctx.events)


def _replica_dirs(manifest: str) -> list[Path]:
    from bastion.manifest import load
    from bastion.vault._manifest import vault_replicas

    loaded = load(manifest)
    return [Path(r) for r in vault_replicas(loaded)]


def _object_paths(manifest: str, chunk_ids: set[str]) -> list[Path]:
    out = []
    for replica in _replica_dirs(manifest):
        for digest in sorted(chunk_ids):
            path = replica / "objects" / digest[:2] / digest
            if path.is_file():
                out.append(path)
    return out


# -- probes -------------------------------------------------------------------------------


def vault_intact(manifest: str) -> bool:
    """True when the vault has its full redundancy: every object and document good on
    every replica, every replica reachable and pinned (a scrub without repair: what a
    scheduled scrub would find). A vault that lost a copy but no data is not intact:
    one more loss would lose data."""
    try:
        report = _vault(manifest).scrub(repair=False)
    except BastionError:
        return False
    return bool(
        report.ok
        and not report.bad_copies
        and not report.unreachable
        and not report.pins_missing
        and not report.repair_failed
    )


def matches_snapshot(manifest: str, directory: str, ref: str) -> bool:
    """True when ``directory`` holds exactly the files of snapshot ``ref``, byte for
    byte (the guard's canary aside): a working copy as it was protected."""
    import hashlib

    from bastion.vault._guard import CANARY

    vault = _vault(manifest)
    root = Path(directory)
    try:
        snap = vault.snapshot(ref)
        present = {
            str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != CANARY
        }
        if present != set(snap.files):
            return False
        return all(
            hashlib.blake2b((root / name).read_bytes()).digest()
            == hashlib.blake2b(vault.read(snap, name)).digest()
            for name in snap.files
        )
    except (BastionError, OSError):
        return False


def data_gate_passes(manifest: str, ref: str, against: str) -> bool:
    """True when the dataset ``ref`` passes the data gate against ``against`` (the
    trusted version). The verdict is not recorded: a probe only looks."""
    from bastion.validate import validate_data

    vault = _vault(manifest)
    try:
        run = validate_data(vault, ref, against, record=False)
    except BastionError:
        return False
    return str(run.status) == "passed"


def upstream_faulted(name: str) -> int:
    """How many requests the drill's stand-in upstream ``name`` answered with its fault
    so far: whether the fault reached anything at all."""
    ctx = current()
    upstream = ctx.upstreams.get(name)
    if upstream is None:
        raise UsageError(f"upstream_faulted: no upstream named {name!r} was started")
    return int(upstream.statistics().faulted)


def wait_broken(timeout_s: float = 20.0, poll_s: float = 0.1) -> bool:
    """Block until a steady-state check that finished after this step began fails (the
    drill's own probe saw the fault), or ``timeout_s``. For a fault only the probe can
    detect, instead of a fixed pause: under load one check of a slow probe (a data gate)
    outlasted the pause, the fault was undone unseen, and the run measured no detection.
    False on timeout (the run then shows no detection, as it should)."""
    ctx = current()
    started = time.monotonic_ns()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not ctx.stop.is_set():
        with ctx.lock:
            seen = any(not s.met and s.mono_ns > started for s in ctx.samples)
        if seen:
            return True
        ctx.stop.wait(poll_s)
    return False


# -- the system's recovery steps ----------------------------------------------------------


def vault_repair(manifest: str) -> dict[str, Any]:
    """Scrub with repair (``bastion vault scrub``): every bad or missing copy rewritten
    from a good one. Returns what it did."""
    report = _vault(manifest).scrub(repair=True)
    return {
        "ok": bool(report.ok),
        "repaired": report.repaired,
        "unrecoverable": report.unrecoverable,
    }


def relabel(manifest: str, name: str, version: int, label: str = "latest") -> int:
    """Point ``name@label`` back at ``version`` (the last version that passed its gate):
    the runbook's step after a gate refused a new version."""
    _vault(manifest).label(name, int(version), label)
    return int(version)


# -- faults found in the twin's vault -----------------------------------------------------


def corrupt_latest_checkpoint(manifest: str, job: str, count: int = 16) -> dict[str, Any]:
    """Flip bytes in every copy of the job's newest checkpoint (all replicas, so no good
    copy is left to repair from): the job must fall back to the one before it."""
    from bastion.manifest import load
    from bastion.train._store import checkpoint_vault

    ctx = current()
    vault = checkpoint_vault(load(manifest), events=ctx.events)
    # the newest this run saved (the log says which); else the newest name in the vault
    saved = [
        e
        for e in ctx.events.query(kind=ek.TRAIN_CHECKPOINT_SAVED, after_id=ctx.started_event_id)
        if e.subject == job and isinstance(e.data.get("name"), str)
    ]
    names = [n for n in vault.names(f"ckpt/{job}/") if n.startswith(f"ckpt/{job}/")]
    if not saved and not names:
        raise UsageError(f"corrupt_latest_checkpoint: job {job!r} has no checkpoint yet")
    newest = str(saved[-1].data["name"]) if saved else sorted(names)[-1]
    latest = vault.snapshot(newest if "@" in newest else f"{newest}@latest")
    targets = _object_paths(manifest, latest.chunk_ids())
    done = actions.inject(
        fault="storage.flip_bytes",
        name="corrupt-checkpoint",
        targets=[str(p) for p in targets],
        count=count,
        max_files=len(targets),
    )
    return {**done, "checkpoint": latest.ref}


def swap_object(manifest: str, ref: str, replica: int = 0) -> dict[str, Any]:
    """Put other bytes (a different, valid model file) in place of the largest file of
    snapshot ``ref`` on one replica: a swapped model, as an intruder with write access to
    one disk would leave it."""
    vault = _vault(manifest)
    snap = vault.snapshot(ref)
    entry = max(snap.files.values(), key=lambda f: f.size)
    replicas = _replica_dirs(manifest)
    chunk = entry.chunks[0].id
    target = replicas[replica % len(replicas)] / "objects" / chunk[:2] / chunk
    ctx = current()
    spare = Path(tempfile.mkdtemp(prefix="swap-", dir=ctx.events.path.parent))
    replacement = spare / "replacement.bin"
    from bastion.serve.replica import random_model

    model = random_model(int(ctx.seed or 0))
    replacement.write_bytes(max(model.values(), key=len))
    return actions.inject(
        fault="model.swap", name="swap-model", target=str(target), replacement=str(replacement)
    )


def poison_dataset(
    manifest: str, ref: str, workdir: str, fraction: float = 0.2, label: str = "label"
) -> dict[str, Any]:
    """Restore ``ref`` into ``workdir``, flip a share of its labels in place (the data
    fault, scope-checked), and commit it as the next version of the dataset (``latest``
    moves): poisoned data arriving through the front door."""
    vault = _vault(manifest)
    snap = vault.snapshot(ref)
    where = Path(workdir)
    where.mkdir(parents=True, exist_ok=True)
    vault.restore(snap, where, clean=True)
    done = actions.inject(
        fault="data.label_flip", name="poison", dataset=str(where), fraction=fraction, label=label
    )
    files = {str(p.relative_to(where)): p for p in sorted(where.rglob("*")) if p.is_file()}
    new = vault.commit(snap.name, files=files, meta={"drill": "poisoned"})
    return {**done, "committed": new.ref, "trusted": snap.ref}


# -- load and waiting ---------------------------------------------------------------------


def wait_checkpoints(count: int = 2, timeout_s: float = 120.0) -> bool:
    """Wait (polling the log, with a deadline) until the run has seen ``count``
    checkpoints saved: a fallback needs one before the newest."""
    ctx = current()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not ctx.stop.is_set():
        saved = ctx.events.query(kind=ek.TRAIN_CHECKPOINT_SAVED, after_id=ctx.started_event_id)
        if len(saved) >= count:
            return True
        ctx.stop.wait(0.05)
    return False


def write_ok(manifest: str, name: str = "run/drill-suite-writes") -> bool:
    """True when a small snapshot put into the vault is committed (it reached the
    vault's write quorum): the vault takes writes."""
    ctx = current()
    spare = ctx.events.path.parent / "suite" / "write-probe.bin"
    spare.parent.mkdir(parents=True, exist_ok=True)
    spare.write_bytes(f"probe at {time.time_ns()}\n".encode())
    try:
        _vault(manifest).commit(name, files={"probe.bin": spare})
    except (BastionError, OSError):
        return False
    return True


def write_load(
    manifest: str,
    duration_s: float = 5.0,
    every_s: float = 0.2,
    name: str = "run/drill-suite-load",
) -> dict[str, Any]:
    """Background writes: a small snapshot put into the vault every ``every_s``. A put
    no replica took is a write lost (``requests_failed`` of ``drill.load.summary``); one
    that reached fewer replicas than configured shows as ``vault.degraded``."""
    ctx = current()
    vault = _vault(manifest)
    stats: dict[str, Any] = {"requests_ok": 0, "requests_failed": 0, "first_failure_ns": None}
    ctx.load[name] = stats
    spare = Path(tempfile.mkdtemp(prefix="writes-", dir=ctx.events.path.parent))
    end = time.monotonic() + duration_s
    i = 0
    while time.monotonic() < end and not ctx.stop.is_set():
        blob = spare / "blob.bin"
        blob.write_bytes(f"write {i} at {time.time_ns()}\n".encode() * 64)
        try:
            vault.commit(name, files={"blob.bin": blob})
            ok = True
        except (BastionError, OSError):
            ok = False
        with ctx.lock:
            stats["requests_ok" if ok else "requests_failed"] += 1
            if not ok and stats["first_failure_ns"] is None:
                stats["first_failure_ns"] = time.monotonic_ns()
        i += 1
        ctx.stop.wait(every_s)
    ctx.events.emit(
        ek.DRILL_LOAD_SUMMARY,
        subject=name,
        requests_ok=stats["requests_ok"],
        requests_failed=stats["requests_failed"],
        url=f"vault:{name}",
    )
    return dict(stats)


# -- setup (a command, run before the drill's processes start) ------------------------------


def protect_copy(manifest: str, ref: str, directory: str, name: str) -> str:
    """Restore ``ref`` into ``directory`` and put it under the guard as ``name``: the
    working copy a ransomware scenario attacks (``python -m bastion.drill.suite.steps
    protect MANIFEST REF DIR NAME``, as an experiment's ``setup`` command)."""
    from bastion.manifest import load
    from bastion.vault import Vault
    from bastion.vault._guard import protect

    vault = Vault.from_manifest(load(manifest))
    where = Path(directory)
    where.mkdir(parents=True, exist_ok=True)
    vault.restore(ref, where, clean=True)
    return protect(vault, where, name).ref


def _main(argv: list[str]) -> int:
    if len(argv) == 5 and argv[0] == "protect":
        with contextlib.suppress(BrokenPipeError):
            print(protect_copy(*argv[1:]))
        return 0
    print(
        "usage: python -m bastion.drill.suite.steps protect MANIFEST REF DIR NAME", file=sys.stderr
    )
    return 2


if __name__ == "__main__":  # pragma: no cover - a setup command
    raise SystemExit(_main(sys.argv[1:]))
