"""Abort conditions, as a Chaos Toolkit control: stop a runaway drill and run its rollbacks.

Owns: a watcher thread started by ``configure_control`` that checks, every
``frequency_s``, each condition (a Chaos Toolkit probe with a ``tolerance``: the drill
may go on only while every one holds) and the ``max_duration_s`` budget. When one
trips it records why (``drill.aborted`` event, the journal's ``bastion.aborted``) and
interrupts the run the way Chaos Toolkit's own safeguards do (``exit_gracefully``:
SIGUSR1, then the runner plays the rollbacks).

Declare it in the experiment::

    controls:
      - name: bastion-abort
        provider:
          type: python
          module: bastion.drill.control
          arguments:
            max_duration_s: 60
            conditions:
              - type: probe
                name: fewer-than-5-locked-files
                tolerance: {type: range, range: [0, 4]}
                provider: {type: python, module: bastion.drill.probes, func: count_files,
                           arguments: {root: data, pattern: "**/*.locked"}}

Must never: abort silently (every abort names its condition), or keep watching after
the run (``cleanup_control`` stops the thread).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from bastion import event_kinds as ek
from bastion.drill.context import DrillContext, current
from bastion.errors import UsageError

__all__ = [
    "abort",
    "before_rollback_control",
    "cleanup_control",
    "configure_control",
    "stop_watching",
]

_watcher: threading.Thread | None = None
_stop = threading.Event()
_signal_lock = threading.Lock()


def _abort(reason: str) -> None:
    from chaoslib.exit import exit_gracefully

    try:
        ctx: DrillContext | None = current()
    except UsageError:
        ctx = None  # run by plain `chaos run`: still abort, there is just no event log
    with _signal_lock:
        # Never signal once the rollbacks began or the run ended: the signal would cut
        # the rollbacks short, or land after Chaos Toolkit's handler is gone.
        if _stop.is_set() or (ctx is not None and ctx.aborted is not None):
            return
        if ctx is not None:
            ctx.aborted = reason
            ctx.events.emit(ek.DRILL_ABORTED, subject=ctx.subject, reason=reason)
        _stop.set()
        exit_gracefully()


def abort(reason: str) -> None:
    """Abort the running drill now, naming ``reason`` (the control twin's comparison
    calls it when the KPIs diverge); nothing once the rollbacks began."""
    _abort(reason)


def stop_watching() -> None:
    """Stop checking the abort conditions (the runner calls it when rollbacks start)."""
    with _signal_lock:
        _stop.set()


def before_rollback_control(context: Any = None, **_: Any) -> None:
    """Chaos Toolkit hook: rollbacks must run to the end, so stop watching first."""
    stop_watching()


def _holds(condition: dict[str, Any], configuration: Any, secrets: Any) -> tuple[bool, Any]:
    from chaoslib.activity import run_activity
    from chaoslib.hypothesis import within_tolerance

    try:
        output = run_activity(condition, configuration, secrets)
    except Exception as exc:
        return False, f"probe failed: {exc}"
    tolerance = condition.get("tolerance", True)
    return bool(within_tolerance(tolerance, output, configuration, secrets)), output


def _watch(
    conditions: list[dict[str, Any]],
    max_duration_s: float | None,
    frequency_s: float,
    configuration: Any,
    secrets: Any,
) -> None:
    started = time.monotonic()
    while not _stop.is_set():
        if max_duration_s is not None and time.monotonic() - started > max_duration_s:
            _abort(f"max_duration_s {max_duration_s:g} s exceeded")
            return
        for condition in conditions:
            ok, output = _holds(condition, configuration, secrets)
            if not ok:
                _abort(
                    f"abort condition {condition.get('name', '?')!r} no longer holds "
                    f"(got {output!r}, tolerance {condition.get('tolerance')!r})"
                )
                return
        _stop.wait(frequency_s)


def configure_control(
    configuration: Any = None,
    secrets: Any = None,
    conditions: list[dict[str, Any]] | None = None,
    max_duration_s: float | None = None,
    frequency_s: float = 0.25,
    **_: Any,
) -> None:
    """Called once by Chaos Toolkit when the run starts: start watching.

    Outside a drill (plain ``chaos run``) the conditions could not be checked (their
    probes need the drill's scope), so the run stops here rather than go on unguarded."""
    global _watcher
    current()
    _stop.clear()
    _watcher = threading.Thread(
        target=_watch,
        args=(list(conditions or []), max_duration_s, frequency_s, configuration, secrets),
        name="bastion-abort-watch",
        daemon=True,
    )
    _watcher.start()


def cleanup_control() -> None:
    """Called once by Chaos Toolkit when the run ends: stop watching."""
    global _watcher
    stop_watching()
    if _watcher is not None and _watcher is not threading.current_thread():
        _watcher.join(timeout=10)
    _watcher = None
