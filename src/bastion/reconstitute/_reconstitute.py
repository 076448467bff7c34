"""Rapid model reconstitution: a lost model back, proven the same, and serving again.

Owns: the choice of path and its record. **Restore**: the model's signed document,
labels and every chunk put back on every replica from the first copy that verifies
(``Vault.heal``). **Rebuild** (``from_lineage``, or when no replica holds some chunk any
more): the recipe its pipeline stage recorded in the signed snapshot replayed from the
vault alone (``bastion.pipeline.replay``: code, inputs by exact version, config,
environment), the output proven hash-identical to the signed original chunk by chunk,
and only then written back as the original's chunks, so the very snapshot the services
name reads whole again. Then every service that serves it answers a real request
through its own replicas (``_serving``). The record (``Reconstitution``) carries the
path, the time from start to serving and each phase; every step is a
``model.reconstitute.*`` event.

Must never: serve or write back a rebuild that is not hash-identical to the signed
original (``IntegrityError``); run a replay whose recorded environment differs from
this one, or keep one whose process reported another (``NotReplayable``, exit 1): a
lineage that cannot be replayed exactly is said to be so, never approximated.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bastion import event_kinds as ek
from bastion.errors import BastionError, CheckFailed, NotFoundError
from bastion.events import Emit
from bastion.names import parse_ref
from bastion.reconstitute._serving import Serving, serve_again, services_of
from bastion.store import make_dirs

if TYPE_CHECKING:
    from bastion.manifest import Manifest
    from bastion.vault import HealReport, Snapshot, Vault

__all__ = ["Reconstitution", "reconstitute"]

PathTaken = Literal["restore", "rebuild"]


@dataclass(frozen=True)
class Reconstitution:
    """What ``reconstitute`` did.

    Attributes:
        ref: the ref asked for; ``snapshot`` the exact ``name@version`` and ``id`` it is.
        path: ``restore`` (from a replica copy that verified) or ``rebuild`` (replayed
            from lineage and proven hash-identical).
        why: why that path (asked for, or no replica held a chunk any more).
        heal: what was put back on the replicas (``HealReport.to_json()``).
        replay_seconds: the replay process's run time (rebuild only).
        environment: the environment the replay reported (rebuild only).
        serving: each service answering with the model again.
        seconds: from the start to the last service serving (or to the model whole,
            when no service serves it).
        phases: seconds spent in each phase (``resolve``, ``restore`` or ``rebuild``,
            ``serve``).
    """

    ref: str
    snapshot: str
    id: str
    path: PathTaken
    why: str
    heal: dict[str, Any]
    serving: tuple[Serving, ...]
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)
    replay_seconds: float | None = None
    environment: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "snapshot": self.snapshot,
            "id": self.id,
            "path": self.path,
            "why": self.why,
            "heal": self.heal,
            "serving": [s.to_json() for s in self.serving],
            "seconds": round(self.seconds, 6),
            "phases": {k: round(v, 6) for k, v in self.phases.items()},
            "replay_seconds": (
                round(self.replay_seconds, 6) if self.replay_seconds is not None else None
            ),
            "environment": self.environment,
        }


def _work_dir(vault: Vault, snap: Snapshot) -> Path:
    root = vault.state_file("reconstitute")
    make_dirs(root, 0o700)
    return root / f"{snap.name.replace('/', '_')}-{snap.version}"


_MAX_DEPTH = 8


def _inputs_whole(
    vault: Vault, refs: list[str], events: Emit, timeout_s: float | None, depth: int
) -> None:
    """Each input of a replay whole first: healed from a replica, or, when some chunk of
    it is on no replica, rebuilt from its own recipe (the lineage replayed upstream,
    each step proven hash-identical)."""
    for ref in refs:
        snap = vault.snapshot(ref)
        if vault.heal(snap).whole:
            continue
        if depth >= _MAX_DEPTH:
            raise CheckFailed(f"{ref} is lost and its lineage is deeper than {_MAX_DEPTH}")
        report, seconds, _ = _rebuild(vault, snap, events, timeout_s, depth + 1)
        events.emit(
            ek.MODEL_RECONSTITUTE_REBUILT,
            snap.name,
            snapshot=snap.ref,
            why="an input of the model's replay was lost",
            replay_seconds=round(seconds, 6),
            **report.to_json(),
        )


def _rebuild(
    vault: Vault, snap: Snapshot, events: Emit, timeout_s: float | None, depth: int = 0
) -> tuple[HealReport, float, dict[str, Any]]:
    from bastion.pipeline import Recipe, replay

    recipe = Recipe.of(snap)
    if recipe is None:
        raise CheckFailed(
            f"{snap.ref} has no recipe in its signed meta (it was not published by a "
            "pipeline command stage), so it cannot be rebuilt from lineage; restore it "
            "from a replica, or make it with `bastion pipeline run` to record one"
        )
    upstream = [*recipe.inputs.values(), *([recipe.code] if recipe.code else [])]
    _inputs_whole(vault, upstream, events, timeout_s, depth)
    work = _work_dir(vault, snap)
    replayed = replay(vault, recipe, work, ref=snap.ref, events=events, timeout_s=timeout_s)
    report = vault.heal(snap, rebuilt=replayed.files)  # IntegrityError unless identical
    shutil.rmtree(work, ignore_errors=True)
    return report, replayed.seconds, replayed.environment


def reconstitute(
    manifest: Manifest,
    ref: str,
    *,
    vault: Vault | None = None,
    events: Emit | None = None,
    from_lineage: bool = False,
    serve: bool = True,
    serve_deadline_s: float = 60.0,
    replay_timeout_s: float | None = 3600.0,
) -> Reconstitution:
    """Bring ``ref`` back whole and serving (see the module). ``InvalidNameError`` /
    ``NotFoundError`` (exit 2) for a bad or unknown ref; ``NotReplayable``,
    ``IntegrityError``, ``CheckFailed`` or ``UnavailableError`` (exit 1) when it could
    not be made whole or served."""
    began = time.monotonic()
    parse_ref(ref)
    if vault is None:
        from bastion.vault import Vault

        vault = Vault.from_manifest(manifest, events=events)
    log = events if events is not None else vault.events
    try:
        snap = vault.snapshot(ref)
    except NotFoundError as exc:
        raise NotFoundError(
            f"model reconstitute {ref}: {exc}; name a snapshot the vault has ever held "
            f"(`bastion vault log {ref.split('@', 1)[0]}`)"
        ) from None
    phases = {"resolve": time.monotonic() - began}
    log.emit(
        ek.MODEL_RECONSTITUTE_STARTED,
        snap.name,
        ref=ref,
        snapshot=snap.ref,
        from_lineage=from_lineage,
    )
    try:
        path: PathTaken = "rebuild" if from_lineage else "restore"
        why = "asked for (--from-lineage)" if from_lineage else "a replica holds a good copy"
        replay_seconds: float | None = None
        env: dict[str, Any] | None = None
        mark = time.monotonic()
        if not from_lineage:
            report = vault.heal(snap)
            if not report.whole:
                path, why = "rebuild", f"no replica holds {', '.join(report.lost)} any more"
        if path == "rebuild":
            report, replay_seconds, env = _rebuild(vault, snap, log, replay_timeout_s)
        phases[path] = time.monotonic() - mark
        log.emit(
            ek.MODEL_RECONSTITUTE_REBUILT if path == "rebuild" else ek.MODEL_RECONSTITUTE_RESTORED,
            snap.name,
            snapshot=snap.ref,
            why=why,
            replay_seconds=replay_seconds,
            seconds=round(phases[path], 6),
            **report.to_json(),
        )
        serving: list[Serving] = []
        mark = time.monotonic()
        if serve:
            for service, backend in services_of(manifest, vault, snap):
                done = serve_again(
                    manifest,
                    vault,
                    snap,
                    service,
                    backend,
                    began=began,
                    deadline_s=serve_deadline_s,
                )
                serving.append(done)
                log.emit(ek.MODEL_RECONSTITUTE_SERVING, snap.name, **done.to_json())
        phases["serve"] = time.monotonic() - mark
    except BastionError as exc:
        from bastion.pipeline import NotReplayable

        if isinstance(exc, NotReplayable):
            log.emit(
                ek.MODEL_RECONSTITUTE_NOT_REPLAYABLE,
                snap.name,
                snapshot=snap.ref,
                problems=list(exc.problems),
                ran=exc.ran,
            )
        log.emit(ek.MODEL_RECONSTITUTE_FAILED, snap.name, snapshot=snap.ref, error=str(exc))
        raise
    seconds = time.monotonic() - began
    result = Reconstitution(
        ref=ref,
        snapshot=snap.ref,
        id=snap.id,
        path=path,
        why=why,
        heal=report.to_json(),
        serving=tuple(serving),
        seconds=seconds,
        phases=phases,
        replay_seconds=replay_seconds,
        environment=env,
    )
    log.emit(
        ek.MODEL_RECONSTITUTE_FINISHED,
        snap.name,
        snapshot=snap.ref,
        path=path,
        seconds=round(seconds, 6),
        services=[s.service for s in serving],
    )
    return result
