"""SLOs as numbers: windows, error budgets and burn rates (the pure core; no I/O but the
``SliReader`` it is handed).

Owns: ``Objective`` (one promise a manifest's ``slos`` entry makes: availability, or
latency under a threshold), the window arithmetic (rolling days or hours, the calendar
month in UTC), the budget (by occurrences or by time slices), the SRE workbook's
multi-window multi-burn-rate pairs and the verdict of one evaluation (``Status``).

Burn rate is the closed form ``(bad / total) / (1 - target)`` over a window: 1 spends the
budget exactly over the SLO's window, 14.4 spends 2% of a 30-day budget in an hour. A pair
fires only when both its long and its short window burn at least its factor (the short one
makes the alert stop soon after the burning does) and the long window holds at least
``min_bad_events`` bad events.

Must never: answer NaN (a window with no traffic has no SLI, ``None``, and a whole budget);
read a bad window as good because it is quiet (``nodata`` says so instead).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from bastion.manifest import Manifest, Slo
from bastion.slo._sli import SliReader, Tally

__all__ = [
    "PAIRS",
    "BurnPair",
    "BurnReading",
    "Objective",
    "Status",
    "Window",
    "burn_rate",
    "evaluate",
    "month_bounds",
    "objectives",
]

Severity = Literal["page", "ticket"]


@dataclass(frozen=True, slots=True)
class BurnPair:
    """One multi-window alert: fires when both windows burn at least ``factor``."""

    severity: Severity
    factor: float
    long_s: int
    short_s: int

    @property
    def name(self) -> str:
        return f"{_span(self.long_s)}/{_span(self.short_s)}"


PAIRS: tuple[BurnPair, ...] = (
    BurnPair("page", 14.4, 3600, 300),
    BurnPair("page", 6.0, 6 * 3600, 1800),
    BurnPair("ticket", 1.0, 3 * 86400, 6 * 3600),
)
"""The SRE workbook's pairs (chapter 5, "Alerting on SLOs", table 5-8)."""


def _span(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True, slots=True)
class Window:
    """A rolling window of ``seconds``, or (``seconds`` 0) the calendar month in UTC."""

    text: str
    seconds: int

    @classmethod
    def parse(cls, text: str) -> Window:
        if text == "month":
            return cls(text, 0)
        match = re.fullmatch(r"([1-9][0-9]{0,3})([dh])", text)
        if match is None:
            raise ValueError(
                f"{text!r} is not a window: use rolling days or hours (28d, 30d, 7d, 12h) "
                "or month (the calendar month)"
            )
        return cls(text, int(match.group(1)) * (86400 if match.group(2) == "d" else 3600))

    @property
    def calendar(self) -> bool:
        return self.seconds == 0

    def bounds(self, now: int) -> tuple[int, int]:
        """``[start, end)`` of the window that ends at ``now``."""
        if self.calendar:
            return month_bounds(now)[0], now
        return now - self.seconds, now

    def length(self, now: int) -> int:
        """The window's full length (a calendar month's whole length)."""
        if self.calendar:
            start, end = month_bounds(now)
            return end - start
        return self.seconds


def month_bounds(at: int) -> tuple[int, int]:
    """``[start, end)`` of the calendar month (UTC) that holds ``at``."""
    when = datetime.fromtimestamp(at, tz=UTC)
    start = datetime(when.year, when.month, 1, tzinfo=UTC)
    days = calendar.monthrange(when.year, when.month)[1]
    return int(start.timestamp()), int(start.timestamp()) + days * 86400


@dataclass(frozen=True, slots=True)
class Objective:
    """One promise: ``sli`` availability (not 5xx or 429) or latency (within
    ``threshold_ms``), met by a ``target`` share over ``window``."""

    id: str
    slo: str
    service: str
    sli: Literal["availability", "latency"]
    target: float
    window: Window
    threshold_ms: float | None = None
    budgeting: Literal["occurrences", "timeslices"] = "occurrences"
    timeslice_s: int = 60
    timeslice_target: float | None = None
    page: bool = True
    ticket: bool = True
    min_bad_events: int = 10
    nodata_s: float | None = 600.0

    def good_of(self, tally: Tally) -> int:
        if self.sli == "latency":
            assert self.threshold_ms is not None
            return tally.faster_than(self.threshold_ms)
        return tally.good

    def counts(self, reader: SliReader, start: int, end: int) -> tuple[int, int]:
        """(bad, total) over ``[start, end)``: requests, or time slices with traffic."""
        if self.budgeting == "timeslices":
            need = self.timeslice_target if self.timeslice_target is not None else self.target
            return reader.slice_counts(
                self.service,
                start,
                end,
                self.timeslice_s,
                need=need,
                threshold_ms=self.threshold_ms if self.sli == "latency" else None,
            )
        tally = reader.tally(self.service, start, end)
        return tally.total - self.good_of(tally), tally.total


def objectives(manifest: Manifest) -> list[Objective]:
    """Every objective of the manifest's ``slos``: an entry with both ``objective`` and
    ``p99_ms`` makes two (ids ``<id>:availability`` and ``<id>:latency``)."""
    out: list[Objective] = []
    for slo in manifest.slos:
        out.extend(from_slo(slo))
    return out


def from_slo(slo: Slo) -> list[Objective]:
    window = Window.parse(slo.window)
    both = slo.objective is not None and slo.p99_ms is not None
    common = {
        "slo": slo.id,
        "service": slo.service,
        "window": window,
        "budgeting": slo.budgeting,
        "timeslice_s": int(slo.timeslice[:-1]) * 60,
        "timeslice_target": slo.timeslice_target,
        "page": slo.alerting.page,
        "ticket": slo.alerting.ticket,
        "min_bad_events": slo.alerting.min_bad_events,
        "nodata_s": slo.alerting.nodata_s,
    }
    out = []
    if slo.objective is not None:
        ident = f"{slo.id}:availability" if both else slo.id
        out.append(Objective(ident, sli="availability", target=slo.objective, **common))  # type: ignore[arg-type]
    if slo.p99_ms is not None:
        ident = f"{slo.id}:latency" if both else slo.id
        out.append(
            Objective(ident, sli="latency", target=0.99, threshold_ms=slo.p99_ms, **common)  # type: ignore[arg-type]
        )
    return out


def burn_rate(bad: int, total: int, target: float) -> float:
    """The closed form: the bad share over the budget's share (0 with no traffic)."""
    if total <= 0:
        return 0.0
    return (bad / total) / (1.0 - target)


@dataclass(frozen=True, slots=True)
class BurnReading:
    """One pair at one evaluation: both windows' burn rates and bad events."""

    pair: BurnPair
    long_burn: float
    short_burn: float
    long_bad: int
    long_total: int
    short_bad: int
    short_total: int
    firing: bool


@dataclass(frozen=True, slots=True)
class Status:
    """One objective evaluated at ``at`` (Unix seconds).

    ``sli`` is the good share over the window so far (``None`` with no traffic);
    ``budget_spent`` the share of the window's error budget spent (bad over
    ``(1 - target) * total``, above 1 when it is overspent; 0 with no traffic);
    ``coverage`` the share of the window since its first data (under 1 in the first days,
    so a young budget is not mistaken for a healthy old one); ``nodata`` whether the SLI
    has been quiet for ``nodata_s``; ``last_data`` its last second with a row.
    """

    objective: Objective
    at: int
    start: int
    bad: int
    total: int
    sli: float | None
    budget_spent: float
    coverage: float
    burns: tuple[BurnReading, ...]
    nodata: bool
    last_data: int | None

    @property
    def budget_remaining(self) -> float:
        return 1.0 - self.budget_spent

    def firing(self, severity: Severity) -> list[BurnReading]:
        return [b for b in self.burns if b.firing and b.pair.severity == severity]


def evaluate(
    objective: Objective,
    reader: SliReader,
    now: float,
    *,
    watching_since: float | None = None,
    pairs: Sequence[BurnPair] = PAIRS,
) -> Status:
    """Evaluate ``objective`` at ``now`` over complete seconds (the current one is still
    filling). ``watching_since``: since when something has been recording this SLI (the
    gateway's start); with no data at all, no-data fires only after ``nodata_s`` of it."""
    end = int(now)
    start, _ = objective.window.bounds(end)
    bad, total = objective.counts(reader, start, end)
    first = reader.first_after(objective.service, start)
    length = objective.window.length(end)
    coverage = 0.0 if first is None else min(1.0, (end - first) / length)
    allowed = (1.0 - objective.target) * total
    spent = bad / allowed if allowed > 0 else 0.0
    readings = []
    for pair in pairs:
        if not (objective.page if pair.severity == "page" else objective.ticket):
            continue
        lb, lt = objective.counts(reader, end - pair.long_s, end)
        sb, st = objective.counts(reader, end - pair.short_s, end)
        long_burn = burn_rate(lb, lt, objective.target)
        short_burn = burn_rate(sb, st, objective.target)
        firing = (
            long_burn >= pair.factor
            and short_burn >= pair.factor
            and lb >= max(1, objective.min_bad_events)
        )
        readings.append(BurnReading(pair, long_burn, short_burn, lb, lt, sb, st, firing))
    last = reader.last(objective.service)
    nodata = False
    if objective.nodata_s is not None:
        quiet_since = float(last + 1) if last is not None else None
        if watching_since is not None:
            quiet_since = max(quiet_since or watching_since, watching_since)
        nodata = quiet_since is not None and now - quiet_since >= objective.nodata_s
    return Status(
        objective,
        end,
        start,
        bad,
        total,
        None if total == 0 else (total - bad) / total,
        spent,
        coverage,
        tuple(readings),
        nodata,
        last,
    )
