"""The seed's outcome metrics, from events and SLI rows: DORA's four keys for models and the
shares of user requests that cost customer trust (pure, over what it is handed).

Owns: ``dora`` (promotions per week; lead time from the start of a training run to
``@prod``; change failure rate, rollbacks over promotions; time to restore, page incidents
to their resolution) and ``trust`` (the shares of a service's requests that failed, were
answered by no backend, by a fallback tier, or by a backend golden probes found wrong).
``goodput``: a training run's share of wall time spent making new progress, from its
``train.*`` events. SLA uptime per calendar month is the availability objectives'
``month_report``. And
``ages``, two SLIs read from the log at evaluation time rather than written as rows:
model freshness (the age of each model's newest promotion to ``@prod``) and data RPO (the
age of each dataset's newest committed snapshot, ``vault.put``: a commit is verified
before the event, so it is the newest point a restore can return to).

How each figure is found, so an auditor can redo it from the log:
- a *promotion* is ``model.promoted``, ``model.promotion_forced`` or ``rollout.promoted``;
  a *rollback* is ``model.rolled_back`` or ``rollout.rolled_back``;
- *lead time* of a ``model.promoted``: from the last ``train.run.started`` before the
  ``vault.put`` of that model version to the promotion (a model committed by hand, with no
  run before it, has none);
- *time to restore*: ``slo.burn.page`` to its ``slo.burn.resolved``;
- *goodput* of a run: with ``wall`` from ``train.run.started`` to its last event,
  ``down`` the time from each ``train.exited`` to the ``train.step.first`` after it, ``N``
  the highest step reached and ``L`` the steps redone (each exit's ``last_step`` minus the
  step its ``train.restored`` resumed from): ``(wall - down) / wall * N / (N + L)``, the
  time a worker ran times the share of its steps that were new (steps taken at an even
  pace);
- *wrong answers*: requests a backend answered from ``suspect_s`` before its
  ``serve.golden.failed`` (the probe interval it may have been wrong for unseen) until its
  ``serve.golden.passed``.

Must never: divide by zero (a ratio with nothing under it is ``None``); count an event
outside the period asked about.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bastion import event_kinds as ek
from bastion.events import Event
from bastion.manifest import Service
from bastion.slo._sli import SliReader

__all__ = [
    "Age",
    "Dora",
    "Goodput",
    "Trust",
    "ages",
    "dora",
    "goodput",
    "jobs_goodput",
    "services_trust",
    "trust",
]

_PROMOTIONS = (ek.MODEL_PROMOTED, ek.MODEL_PROMOTION_FORCED, ek.ROLLOUT_PROMOTED)
_ROLLBACKS = (ek.MODEL_ROLLED_BACK, ek.ROLLOUT_ROLLED_BACK)


@dataclass(frozen=True, slots=True)
class Dora:
    """DORA's four keys over ``[start, end)`` (Unix seconds); each names its event ids."""

    start: float
    end: float
    promotions: int
    promotions_per_week: float
    lead_time_s: float | None
    """The median lead time; ``lead_times_s`` has each one."""
    lead_times_s: tuple[float, ...]
    rollbacks: int
    change_failure_rate: float | None
    time_to_restore_s: float | None
    """The median time from a page to its resolution; ``restores_s`` has each one."""
    restores_s: tuple[float, ...]
    event_ids: tuple[int, ...]


def dora(events: Sequence[Event], *, start: float, end: float) -> Dora:
    """The four keys from ``events`` (the log, in order), for promotions in the period."""
    inside = [e for e in events if start <= e.ts < end]
    promotions = [e for e in inside if e.kind in _PROMOTIONS]
    rollbacks = [e for e in inside if e.kind in _ROLLBACKS]
    puts = {(e.subject, e.data.get("version")): e for e in events if e.kind == ek.VAULT_PUT}
    runs = [e for e in events if e.kind == ek.TRAIN_RUN_STARTED]
    leads = []
    used = [e.id for e in (*promotions, *rollbacks)]
    for p in promotions:
        if p.kind == ek.ROLLOUT_PROMOTED:
            continue  # a rollout serves a version @prod already has, or soon will
        put = puts.get((p.subject, p.data.get("version")))
        if put is None:
            continue
        before = [r for r in runs if r.ts <= put.ts]
        if before:
            leads.append(p.ts - before[-1].ts)
            used += [put.id, before[-1].id]
    restores = []
    opened: dict[str, Event] = {}
    for e in events:
        if e.kind == ek.SLO_BURN_PAGE:
            opened.setdefault(e.subject, e)
        elif e.kind == ek.SLO_BURN_RESOLVED and e.data.get("severity") == "page":
            page = opened.pop(e.subject, None)
            if page is not None and start <= e.ts < end:
                restores.append(e.ts - page.ts)
                used += [page.id, e.id]
    weeks = (end - start) / (7 * 86400)
    return Dora(
        start,
        end,
        len(promotions),
        len(promotions) / weeks if weeks > 0 else 0.0,
        statistics.median(leads) if leads else None,
        tuple(leads),
        len(rollbacks),
        len(rollbacks) / len(promotions) if promotions else None,
        statistics.median(restores) if restores else None,
        tuple(restores),
        tuple(sorted(used)),
    )


@dataclass(frozen=True, slots=True)
class Trust:
    """A service's requests over ``[start, end)`` and the shares that cost trust (each
    ``None`` with no requests)."""

    service: str
    requests: int
    failed: float | None
    """Answered 5xx or 429 (shed, timed out, every attempt failed)."""
    unanswered: float | None
    """Answered by no backend at all (shed by admission, or given up)."""
    fallback: float | None
    """Answered by a backend of a fallback tier."""
    wrong: float | None
    """Answered by a backend golden probes found wrong."""


def trust(
    reader: SliReader,
    events: Sequence[Event],
    service: str,
    tiers: Mapping[str, int],
    *,
    start: int,
    end: int,
    suspect_s: float = 60.0,
) -> Trust:
    """``tiers``: each backend's tier index (0 the primaries), as the manifest orders them."""
    total = reader.tally(service, start, end)
    by_backend = {b: reader.tally(service, start, end, backend=b) for b in tiers}
    n = total.total
    answered = sum(t.total for t in by_backend.values())
    fallback = sum(t.total for b, t in by_backend.items() if tiers[b] > 0)
    wrong = 0
    failed_at: dict[str, float] = {}
    spans: list[tuple[str, float, float]] = []
    for e in events:
        if e.subject != service:
            continue
        backend = str(e.data.get("backend", ""))
        if e.kind == ek.SERVE_GOLDEN_FAILED:
            failed_at.setdefault(backend, e.ts - suspect_s)
        elif e.kind == ek.SERVE_GOLDEN_PASSED and backend in failed_at:
            spans.append((backend, failed_at.pop(backend), e.ts))
    spans += [(b, s, float(end)) for b, s in failed_at.items()]
    for backend, s, e_ in spans:
        lo, hi = max(start, int(s)), min(end, int(e_) + 1)
        if hi > lo and backend in tiers:
            wrong += reader.tally(service, lo, hi, backend=backend).total

    def share(x: int) -> float | None:
        return x / n if n else None

    return Trust(
        service, n, share(total.total - total.good), share(n - answered), share(fallback),
        share(wrong),
    )  # fmt: skip


def services_trust(
    reader: SliReader,
    events: Sequence[Event],
    services: Mapping[str, Service],
    *,
    start: float,
    end: float,
) -> list[Trust]:
    """``trust`` of each manifest service over ``start``..``end`` (whole seconds), its
    backends' tiers as the manifest orders them."""
    return [
        trust(
            reader,
            events,
            name,
            {b.name: b.tier_index for b in service.backends},
            start=int(start),
            end=int(end),
        )
        for name, service in services.items()
    ]


@dataclass(frozen=True, slots=True)
class Age:
    """How old the newest ``kind`` event of ``name`` is at ``now``: a model's freshness
    (``model.promoted``) or a dataset's RPO (``vault.put``)."""

    name: str
    kind: str
    newest: float
    age_s: float
    event_id: int


def ages(events: Sequence[Event], *, now: float) -> list[Age]:
    """The freshness of every promoted model and the RPO of every dataset in ``events``."""
    newest: dict[tuple[str, str], Event] = {}
    for e in events:
        if e.kind in (ek.MODEL_PROMOTED, ek.MODEL_PROMOTION_FORCED):
            newest[(e.subject, "freshness")] = e
        elif e.kind == ek.VAULT_PUT and e.subject.startswith("dataset/"):
            newest[(e.subject, "rpo")] = e
    return [
        Age(name, kind, e.ts, max(0.0, now - e.ts), e.id)
        for (name, kind), e in sorted(newest.items())
    ]


@dataclass(frozen=True, slots=True)
class Goodput:
    """One training run's goodput (``None`` before its first step)."""

    job: str
    run_id: str
    wall_s: float
    down_s: float
    steps: int
    steps_redone: int
    goodput: float | None
    event_ids: tuple[int, ...]


def goodput(events: Sequence[Event], job: str) -> Goodput | None:
    """The latest run of ``job`` in ``events`` (the log), or ``None`` if it never ran."""
    mine = [e for e in events if e.subject == job and e.kind.startswith("train.")]
    starts = [e for e in mine if e.kind == ek.TRAIN_RUN_STARTED]
    if not starts:
        return None
    run_id = starts[-1].data.get("run_id")
    run = sorted(
        (e for e in mine if e.data.get("run_id") == run_id and e.mono_ns >= starts[-1].mono_ns),
        key=lambda e: (e.mono_ns, e.id),
    )
    wall = (run[-1].mono_ns - run[0].mono_ns) / 1e9
    down = 0.0
    redone = 0
    steps = 0
    exited: Event | None = None
    resumed_from: int | None = None
    for e in run:
        for key in ("step", "last_step"):
            value = e.data.get(key)
            if isinstance(value, int):
                steps = max(steps, value)
        if e.kind == ek.TRAIN_EXITED and e is not run[-1]:
            exited = e
        elif e.kind == ek.TRAIN_RESTORED and exited is not None:
            resumed_from = int(e.data.get("step") or 0)
        elif e.kind == ek.TRAIN_STEP_FIRST and exited is not None:
            down += (e.mono_ns - exited.mono_ns) / 1e9
            last = exited.data.get("last_step")
            if isinstance(last, int) and resumed_from is not None:
                redone += max(0, last - resumed_from)
            exited, resumed_from = None, None
    share = None
    if wall > 0 and steps > 0:
        share = max(0.0, (wall - down) / wall) * steps / (steps + redone)
    return Goodput(
        job, str(run_id or ""), wall, down, steps, redone, share, tuple(e.id for e in run)
    )


def jobs_goodput(events: Sequence[Event], jobs: Iterable[str]) -> list[Goodput]:
    """``goodput`` of each job that has a run in ``events``."""
    return [g for g in (goodput(events, job) for job in jobs) if g is not None]
