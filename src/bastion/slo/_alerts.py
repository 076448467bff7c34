"""Burn and no-data alerts as events: what is firing, and the transitions to record.

Owns: ``Evaluator`` (the objectives, a reader of SLI rows, the event log; each ``step``
evaluates every objective and records what changed: ``slo.burn.page``,
``slo.burn.ticket``, ``slo.nodata`` and their resolutions) and ``SloLoop``, the thread
``bastion serve`` runs it on every ``interval_s``.

What is firing is read back from the log itself (every ``slo.*`` event since the last
step), so the gateway's loop and ``bastion slo status`` on the command line agree, and a
restarted gateway does not page again for an alert already open.

Must never: record an alert twice in a row, or a resolution for an alert that is not
open; run on the gateway's event loop (it reads SQLite: ``SloLoop`` is its own thread).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bastion import event_kinds as ek
from bastion.events import EventLog
from bastion.slo._core import Objective, Status, evaluate
from bastion.slo._sli import SliReader

__all__ = ["Alert", "Evaluator", "SloLoop"]


@dataclass(frozen=True, slots=True)
class Alert:
    """An open alert: the objective, ``page``, ``ticket`` or ``nodata``, and since when
    (Unix seconds, as evaluated)."""

    objective: str
    severity: str
    since: float


_OPEN: dict[str, str] = {
    ek.SLO_BURN_PAGE: "page",
    ek.SLO_BURN_TICKET: "ticket",
    ek.SLO_NODATA: "nodata",
}


class Evaluator:
    """Evaluates objectives against SLI rows and records alert transitions in ``log``.

    ``clock`` gives Unix seconds (tests inject their own); ``watching_since`` is when this
    evaluator started watching (default: its creation), for an SLI that never had data.
    """

    def __init__(
        self,
        objectives: Sequence[Objective],
        reader: SliReader,
        log: EventLog,
        *,
        clock: Callable[[], float] = time.time,
        watching_since: float | None = None,
    ) -> None:
        self.objectives = list(objectives)
        self.reader = reader
        self.log = log
        self.clock = clock
        self.watching_since = clock() if watching_since is None else watching_since
        self.open: dict[tuple[str, str], Alert] = {}
        self._seen = 0
        self.steps = 0

    def _fold(self) -> None:
        for event in self.log.query(kind="slo.*", after_id=self._seen):
            self._seen = event.id
            at = float(event.data.get("at", event.ts))
            if event.kind in _OPEN:
                sev = _OPEN[event.kind]
                self.open.setdefault((event.subject, sev), Alert(event.subject, sev, at))
            elif event.kind == ek.SLO_BURN_RESOLVED:
                self.open.pop((event.subject, str(event.data.get("severity"))), None)
            elif event.kind == ek.SLO_NODATA_RESOLVED:
                self.open.pop((event.subject, "nodata"), None)

    def step(self, now: float | None = None) -> list[Status]:
        """Evaluate every objective at ``now`` and record what changed."""
        now = self.clock() if now is None else now
        self._fold()
        out = []
        for obj in self.objectives:
            status = evaluate(obj, self.reader, now, watching_since=self.watching_since)
            out.append(status)
            self._transitions(status)
        self._fold()
        self.steps += 1
        return out

    def _transitions(self, status: Status) -> None:
        obj = status.objective
        common: dict[str, Any] = {"service": obj.service, "slo": obj.slo, "at": float(status.at)}
        for severity, kind in (("page", ek.SLO_BURN_PAGE), ("ticket", ek.SLO_BURN_TICKET)):
            firing = status.firing(severity)  # type: ignore[arg-type]
            key = (obj.id, severity)
            if firing and key not in self.open:
                top = max(firing, key=lambda b: b.long_burn)
                self.log.emit(
                    kind,
                    obj.id,
                    pair=top.pair.name,
                    long_s=top.pair.long_s,
                    short_s=top.pair.short_s,
                    factor=top.pair.factor,
                    long_burn=round(top.long_burn, 4),
                    short_burn=round(top.short_burn, 4),
                    bad=top.long_bad,
                    total=top.long_total,
                    budget_remaining=round(status.budget_remaining, 6),
                    **common,
                )
                self.open[key] = Alert(obj.id, severity, float(status.at))
            elif not firing and key in self.open:
                since = self.open.pop(key).since
                self.log.emit(
                    ek.SLO_BURN_RESOLVED,
                    obj.id,
                    severity=severity,
                    since=since,
                    duration_s=round(status.at - since, 3),
                    **common,
                )
        key = (obj.id, "nodata")
        if status.nodata and key not in self.open:
            self.log.emit(ek.SLO_NODATA, obj.id, last_data=status.last_data, **common)
            self.open[key] = Alert(obj.id, "nodata", float(status.at))
        elif not status.nodata and key in self.open:
            since = self.open.pop(key).since
            self.log.emit(
                ek.SLO_NODATA_RESOLVED,
                obj.id,
                since=since,
                duration_s=round(status.at - since, 3),
                **common,
            )


class SloLoop:
    """Runs ``evaluator.step()`` every ``interval_s`` on its own daemon thread, until
    ``close``. A step that fails (a locked or full disk) is counted, never fatal."""

    def __init__(self, evaluator: Evaluator, *, interval_s: float = 15.0) -> None:
        self.evaluator = evaluator
        self.interval_s = interval_s
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bastion-slo", daemon=True)

    def start(self) -> SloLoop:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.evaluator.step()
            except Exception:
                self.failed += 1

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
