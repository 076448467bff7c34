"""The calendar SLA report: each objective's month, and each incident's share of its budget.

Owns: ``month_report`` (one ``MonthReport`` per objective and calendar month, UTC) and
``incidents`` (burn alerts paired with their resolutions, from the event log).

An incident is a ``slo.burn.page`` or ``slo.burn.ticket`` until its ``slo.burn.resolved``
(or the end of the period, still open), starting one short window (the firing pair's, 5 m
for 1h/5m) before the alert: the burn had to be on that long already for the alert to fire,
so the bad events that set it off are the incident's own. Its share of the budget is the
bad events (or bad time slices) inside it over the month's whole budget,
``(1 - target) * total``.

Must never: count an incident's bad events outside the month asked about; report a share
when the month had no traffic (``None``, not NaN).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bastion import event_kinds as ek
from bastion.events import EventLog
from bastion.slo._core import Objective, month_bounds
from bastion.slo._sli import SliReader

__all__ = ["Incident", "MonthReport", "incidents", "month_report"]


@dataclass(frozen=True, slots=True)
class Incident:
    """A burn alert from ``start`` to ``end`` (Unix seconds; ``open`` if unresolved by
    then), with the bad events inside it and their share of the month's budget."""

    objective: str
    severity: str
    start: float
    end: float
    open: bool
    event_id: int
    bad: int = 0
    budget_share: float | None = None


@dataclass(frozen=True, slots=True)
class MonthReport:
    """One objective over one calendar month (so far, for the current one): ``sli`` is
    its good share (for availability, the month's SLA uptime), ``met`` whether it reached
    the target (``None`` with no traffic)."""

    objective: str
    service: str
    sli_kind: str
    month: str
    start: int
    end: int
    target: float
    bad: int
    total: int
    sli: float | None
    met: bool | None
    budget_spent: float | None
    incidents: tuple[Incident, ...]


def incidents(log: EventLog, objective: str, start: float, end: float) -> list[Incident]:
    """Burn alerts of ``objective`` that overlap ``[start, end)``, clipped to it."""
    opened: dict[str, tuple[float, int]] = {}
    found: list[Incident] = []
    for event in log.query(kind="slo.burn.*", subject=objective):
        at = float(event.data.get("at", event.ts))
        if event.kind in (ek.SLO_BURN_PAGE, ek.SLO_BURN_TICKET):
            sev = "page" if event.kind == ek.SLO_BURN_PAGE else "ticket"
            opened.setdefault(sev, (at - float(event.data.get("short_s", 0)), event.id))
        elif event.kind == ek.SLO_BURN_RESOLVED:
            sev = str(event.data.get("severity"))
            if sev in opened:
                s, ident = opened.pop(sev)
                found.append(Incident(objective, sev, s, at, False, ident))
    found += [Incident(objective, sev, s, end, True, i) for sev, (s, i) in opened.items()]
    return sorted(
        (
            Incident(
                i.objective, i.severity, max(i.start, start), min(i.end, end), i.open, i.event_id
            )
            for i in found
            if i.start < end and i.end > start
        ),
        key=lambda i: i.start,
    )


def month_report(
    objectives: Sequence[Objective], reader: SliReader, log: EventLog, *, at: float, now: float
) -> list[MonthReport]:
    """The calendar month (UTC) that holds ``at``, up to ``now`` if it is not over."""
    from datetime import UTC, datetime

    start, end = month_bounds(int(at))
    end = min(end, int(now))
    label = datetime.fromtimestamp(start, tz=UTC).strftime("%Y-%m")
    out = []
    for obj in objectives:
        bad, total = obj.counts(reader, start, end)
        allowed = (1.0 - obj.target) * total
        found = []
        for inc in incidents(log, obj.id, start, end):
            ibad, _ = obj.counts(reader, int(inc.start), int(inc.end) + 1)
            share = ibad / allowed if allowed > 0 else None
            found.append(
                Incident(
                    inc.objective, inc.severity, inc.start, inc.end, inc.open, inc.event_id,
                    ibad, share,
                )
            )  # fmt: skip
        sli = None if total == 0 else (total - bad) / total
        out.append(
            MonthReport(
                obj.id,
                obj.service,
                obj.sli,
                label,
                start,
                end,
                obj.target,
                bad,
                total,
                sli,
                None if sli is None else sli >= obj.target,
                bad / allowed if allowed > 0 else None,
                tuple(found),
            )
        )
    return out
