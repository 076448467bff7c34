"""Measurements of a drill, read from its events: time to detect, RTO, RPO.

Owns: ``measure``, a pure function over the events a drill run produced (never an
estimate: every number is a difference of two recorded monotonic timestamps, or a sum
of counts that events carry).

- ``time_to_detect_s``: from the first ``drill.fault.injected`` (its time is when the
  injection began) to the first event, before the rollbacks start (the drill's own
  teardown is not a detection),
  whose kind matches one of ``detect`` (e.g. ``vault.guard.*``, ``train.restarted``),
  else to the drill's own ``drill.steady_state.broken``, else its ``drill.aborted``.
  ``detected_by`` says which.
- ``rto_s``: from the first injection until the steady state holds again
  (``drill.steady_state.restored``); 0 when it never broke; ``None`` when it never
  came back (``recovered`` is then False).
- RPO: ``steps_lost``, ``requests_failed``, ``files_lost``: sums of those fields over
  the run's events (``drill.load.summary``, ``drill.files.checked``...); training's
  steps lost are read from each ``train.exited`` (``last_step``) and the
  ``train.restored`` (``step``) that follows it.
- ``rpo_s``, the RPO in seconds of work lost, where the events can show it: for
  training, from the save of the checkpoint a job resumed from (its
  ``train.checkpoint.saved``) to the worker's exit, summed over exits; for files, 0
  when none was lost, else from the guard's baseline (``vault.guard.protected``) to the
  injection; for the vault, ``None`` when an object is unrecoverable (``vault.unrecoverable``:
  lost for good, no age to give), else 0 once a scrub or repair ran.
  ``None`` when nothing in the run holds state to lose.

Must never: invent a number; a measurement with no event to read is ``None``.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from bastion import event_kinds as ek

if TYPE_CHECKING:
    from bastion.events import Event

__all__ = ["RPO_FIELDS", "check_targets", "measure"]

RPO_FIELDS = ("steps_lost", "requests_failed", "files_lost")


def _first(events: Iterable[Event], kind: str, after_ns: int = -1) -> Event | None:
    return next((e for e in events if e.kind == kind and e.mono_ns >= after_ns), None)


def _rpo(events: list[Event], field: str) -> float | None:
    """Sum ``field`` over events, except checks (kinds ending ``.checked``), which report
    a state, not an increment: only the last of each (kind, subject) counts."""
    total: float | None = None
    last_check: dict[tuple[str, str], float] = {}
    for e in events:
        value = e.data.get(field)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if e.kind.endswith(".checked"):
            last_check[(e.kind, e.subject)] = value
        else:
            total = (total or 0) + value
    if last_check:
        total = (total or 0) + sum(last_check.values())
    return total


def _steps_lost_by_training(events: list[Event]) -> int | None:
    """Steps a training job redid: for each worker exit (``train.exited`` with
    ``last_step``), the distance back to the step it resumed from (``train.restored``)."""
    pending: dict[str, int] = {}
    lost: int | None = None
    for e in events:
        if e.kind == "train.exited" and isinstance(e.data.get("last_step"), int):
            pending[e.subject] = int(e.data["last_step"])
        elif e.kind == ek.TRAIN_RESTORED and e.subject in pending:
            step = e.data.get("step")
            resumed = int(step) if isinstance(step, int) else 0
            lost = (lost or 0) + max(0, pending.pop(e.subject) - resumed)
    return lost


def _training_loss_s(events: list[Event]) -> float | None:
    """Seconds of training redone: for each worker exit, from the save of the checkpoint
    it resumed from to the exit (None when no exit was followed by a resume whose
    checkpoint's save is in the run)."""
    saved: dict[tuple[str, int], int] = {}
    exited: dict[str, int] = {}
    lost: float | None = None
    for e in events:
        step = e.data.get("step")
        if e.kind == ek.TRAIN_CHECKPOINT_SAVED and isinstance(step, int):
            saved[(e.subject, step)] = e.mono_ns
        elif e.kind == "train.exited":
            exited[e.subject] = e.mono_ns
        elif e.kind == ek.TRAIN_RESTORED and e.subject in exited:
            at = saved.get((e.subject, int(step) if isinstance(step, int) else -1))
            gone = exited.pop(e.subject)
            if at is not None:
                lost = (lost or 0.0) + max(0.0, (gone - at) / 1e9)
    return lost


def _rpo_s(events: list[Event], out: dict[str, Any], t0: int | None) -> float | None:
    training = _training_loss_s(events)
    if training is not None:
        return training
    if any(e.kind == ek.VAULT_UNRECOVERABLE for e in events):
        return None
    files = out.get("files_lost")
    if files is not None:
        if not files:
            return 0.0
        baseline = [e for e in events if e.kind == ek.VAULT_GUARD_PROTECTED]
        if baseline and t0 is not None:
            return max(0.0, (t0 - baseline[-1].mono_ns) / 1e9)
        return None
    if any(e.kind in (ek.VAULT_SCRUB_COMPLETED, ek.VAULT_REPAIRED) for e in events):
        return 0.0
    return None


def measure(
    events: list[Event], *, detect: Iterable[str] = (), has_hypothesis: bool = True
) -> dict[str, Any]:
    """The drill's measurements from its own events (in log order). Without a
    steady-state hypothesis there is nothing to recover to: RTO stays ``None``."""
    patterns = list(detect)
    injected = _first(events, "drill.fault.injected")
    out: dict[str, Any] = {
        "injected": injected is not None,
        "faults_injected": sum(1 for e in events if e.kind == "drill.fault.injected"),
        "faults_reverted": sum(1 for e in events if e.kind == ek.DRILL_FAULT_REVERTED),
        "time_to_detect_s": None,
        "detected_by": None,
        "rto_s": None,
        "recovered": None,
        "steady_state_broken": False,
        "rpo_s": None,
    }
    for field in RPO_FIELDS:
        out[field] = _rpo(events, field)
    derived = _steps_lost_by_training(events)
    if derived is not None:
        out["steps_lost"] = (out["steps_lost"] or 0) + derived
    out["rpo_s"] = _rpo_s(events, out, injected.mono_ns if injected else None)
    if injected is None:
        return out
    t0 = injected.mono_ns
    # What the drill's own teardown causes (its rollbacks stop the processes it started,
    # and their supervisors report it) is not the system noticing the fault.
    teardown = _first(events, ek.DRILL_ROLLBACKS_STARTED, t0)
    until = teardown.mono_ns if teardown is not None else None
    detector = next(
        (
            e
            for e in events
            if e.mono_ns >= t0
            and (until is None or e.mono_ns < until)
            and not e.kind.startswith("drill.")
            and any(fnmatchcase(e.kind, p) for p in patterns)
        ),
        None,
    )
    broken = _first(events, ek.DRILL_STEADY_STATE_BROKEN, t0)
    if detector is None:
        # The drill's own observers, in order: its steady-state probes, its abort watch.
        detector = broken or _first(events, ek.DRILL_ABORTED, t0)
    if detector is not None:
        out["time_to_detect_s"] = (detector.mono_ns - t0) / 1e9
        out["detected_by"] = detector.kind
    if not has_hypothesis:
        return out
    if broken is None:
        out["rto_s"], out["recovered"] = 0.0, True
        return out
    out["steady_state_broken"] = True
    restored = _first(events, ek.DRILL_STEADY_STATE_RESTORED, broken.mono_ns)
    if restored is None:
        out["recovered"] = False
    else:
        out["rto_s"] = (restored.mono_ns - t0) / 1e9
        out["recovered"] = True
    return out


def check_targets(measured: dict[str, Any], targets: dict[str, float]) -> list[str]:
    """Every target the measurements miss, as a sentence (empty: all met)."""
    misses = []
    for key, limit in targets.items():
        value = measured.get(key)
        if value is None:
            if key == "rto_s" and measured.get("recovered") is False:
                misses.append(f"rto_s: never recovered (target {limit:g})")
            continue
        if float(value) > float(limit):
            misses.append(f"{key}: measured {value:.3g}, target {limit:g}")
    return misses
