"""What the dashboard's charts read: per-backend latency and error series of a service
(the SLI rows, ``bastion.slo.SqliteSli``), budget and burn-rate series of every SLO
(``bastion.slo.evaluate`` at evenly spaced instants) and a training job's progress (its
``train.*`` events), each over a window such as ``15m``; and the readiness reports that
``bastion report`` wrote (``<state_dir>/reports/<id>/`` and the CLI's default
``<manifest dir>/report``).

Pure reads, run on a worker thread by the API. Must never: read a path outside those
roots (a report id is one plain directory name), or answer more than ``_POINTS`` points a
series (a month is read from the hour rows, not 2.6 million seconds).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from bastion.manifest import Manifest

__all__ = [
    "job_series",
    "new_report_id",
    "one_report",
    "parse_window",
    "report_dirs",
    "report_summary",
    "service_series",
    "slo_series",
]

_WINDOW = re.compile(r"^([1-9][0-9]{0,4})(s|m|h|d)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_POINTS = 120
#: bucket sizes a series may use: below a minute from the seconds table, then whole
#: minutes, then whole hours (each a divisor chain, so buckets line up with the rows)
_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
_REPORT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def parse_window(text: str | None, default: str = "15m") -> int:
    """``30s``, ``15m``, ``6h``, ``30d`` as seconds (1 minute to 31 days)."""
    raw = default if text is None else text
    match = _WINDOW.match(raw)
    if match is None:
        raise UsageError(f"window={raw[:20]!r}: give a number and a unit, e.g. 5m, 1h, 7d")
    seconds = int(match.group(1)) * _UNIT[match.group(2)]
    if not 60 <= seconds <= 31 * 86400:
        raise UsageError(f"window={raw[:20]!r}: give 1m to 31d")
    return seconds


def _step(window_s: int) -> int:
    for step in _STEPS:
        if window_s / step <= _POINTS:
            return step
    return _STEPS[-1]


def _quantile_ms(buckets: tuple[int, ...], q: float) -> float | None:
    """The upper bound of the bucket that holds quantile ``q`` (a bucket histogram knows
    no more than that); the last, open bucket reads as its lower bound."""
    from bastion.slo import BOUNDS_MS

    total = sum(buckets)
    if total == 0:
        return None
    cumulative = 0
    for i, n in enumerate(buckets):
        cumulative += n
        if cumulative >= q * total:
            return float(BOUNDS_MS[min(i, len(BOUNDS_MS) - 1)])
    return float(BOUNDS_MS[-1])


def _marks(
    read_events: Any, subject: str, kinds: tuple[str, ...], start: float
) -> list[dict[str, Any]]:
    """Events of ``kinds`` (globs) about ``subject`` since ``start``, oldest first."""
    out: list[dict[str, Any]] = []
    for kind in kinds:
        out.extend(
            {"t": e["ts"], "kind": e["kind"], "data": e["data"]}
            for e in read_events(kind=kind, subject=subject, limit=200)["events"]
            if e["ts"] >= start
        )
    out.sort(key=lambda m: m["t"])
    return out


def service_series(
    manifest: Manifest, service: str, window_s: int, read_events: Any, *, now: float | None = None
) -> dict[str, Any]:
    """Per backend, each bucket's requests, errors (5xx and 429), error rate and p50/p99
    latency; the rollouts and ejections of the window as marks."""
    from bastion.slo import BOUNDS_MS, SqliteSli

    end = int(time.time() if now is None else now)
    step = _step(window_s)
    start = (end - window_s) // step * step
    reader = SqliteSli.in_state_dir(manifest.state_dir)
    try:
        rows = reader.backend_series(service, start, end, step=step)
    finally:
        reader.close()
    backends: dict[str, list[dict[str, Any]]] = {}
    for t, backend, tally in rows:
        backends.setdefault(backend or "(none answered)", []).append(
            {
                "t": t,
                "total": tally.total,
                "errors": tally.total - tally.good,
                "error_rate": round((tally.total - tally.good) / tally.total, 6)
                if tally.total
                else 0.0,
                "p50_ms": _quantile_ms(tally.buckets, 0.5),
                "p99_ms": _quantile_ms(tally.buckets, 0.99),
            }
        )
    return {
        "service": service,
        "window_s": window_s,
        "step_s": step,
        "start": start,
        "end": end,
        "bounds_ms": list(BOUNDS_MS),
        "backends": [{"name": n, "points": p} for n, p in sorted(backends.items())],
        "marks": _marks(read_events, service, ("rollout.*", "serve.backend.ejected"), float(start)),
    }


def slo_series(manifest: Manifest, window_s: int, *, now: float | None = None) -> dict[str, Any]:
    """Every objective evaluated at 31 instants over the window: budget left, SLI
    and each burn pair's long-window burn rate (with the factor it fires at)."""
    from bastion.slo import PAIRS, SqliteSli, evaluate, objectives

    objs = objectives(manifest)
    end = int(time.time() if now is None else now)
    points = 30
    step = max(1, window_s // points)
    out = []
    if not objs:
        return {"window_s": window_s, "step_s": step, "slos": []}
    reader = SqliteSli.in_state_dir(manifest.state_dir)
    try:
        for obj in objs:
            series = []
            for i in range(points, -1, -1):
                at = end - i * step
                st = evaluate(obj, reader, at, watching_since=0.0)
                series.append(
                    {
                        "t": at,
                        "budget_remaining": round(st.budget_remaining, 6),
                        "sli": st.sli,
                        "total": st.total,
                        "burns": {b.pair.name: round(b.long_burn, 4) for b in st.burns},
                    }
                )
            pairs = [
                {"pair": p.name, "severity": p.severity, "factor": p.factor}
                for p in PAIRS
                if (obj.page if p.severity == "page" else obj.ticket)
            ]
            out.append(
                {
                    "id": obj.id,
                    "service": obj.service,
                    "target": obj.target,
                    "pairs": pairs,
                    "points": series,
                }
            )
    finally:
        reader.close()
    return {"window_s": window_s, "step_s": step, "slos": out}


_PROGRESS = ("train.checkpoint.saved", "train.restored", "train.step.first", "train.preempted")
_MARKS = (
    "train.restarted",
    "train.failed",
    "train.failover",
    "train.hang",
    "train.checkpoint.corrupt",
    "train.finished",
)


def job_series(job: str, read_events: Any) -> dict[str, Any]:
    """A job's steps over time (each checkpoint, restore and first step after one) and
    its restarts, failovers, hangs and failures as marks (its newest 1,000 events)."""
    events = read_events(kind="train.*", subject=job, limit=1000)["events"]
    events.reverse()
    progress = [
        {"t": e["ts"], "step": int(e["data"].get("step") or 0), "kind": e["kind"]}
        for e in events
        if e["kind"] in _PROGRESS and isinstance(e["data"].get("step"), int | float)
    ]
    marks = [
        {"t": e["ts"], "kind": e["kind"], "data": e["data"]} for e in events if e["kind"] in _MARKS
    ]
    return {"job": job, "progress": progress, "marks": marks}


def report_dirs(manifest: Manifest) -> dict[str, Path]:
    """Every readiness report there is, by id: ``<state_dir>/reports/<id>/`` (written from
    the API) and the CLI's default ``report/`` beside the manifest (id ``report``)."""
    found: dict[str, Path] = {}
    base = manifest.state_dir / "reports"
    with contextlib.suppress(OSError):
        for d in sorted(base.iterdir()):
            if _REPORT_ID.match(d.name) and (d / "report.json").is_file() and not d.is_symlink():
                found[d.name] = d
    if manifest.path is not None:
        cli = manifest.path.parent / "report"
        if (cli / "report.json").is_file() and "report" not in found:
            found["report"] = cli
    return found


def report_summary(manifest: Manifest, rid: str, directory: Path) -> dict[str, Any]:
    """A report's id, time, score, verdict counts and whether its signature verifies."""
    from bastion.errors import BastionError
    from bastion.report import verify_report
    from bastion.train._store import checkpoint_keys
    from bastion.vault._keys import Verifier

    try:
        doc = json.loads((directory / "report.json").read_text())
    except (OSError, ValueError) as exc:
        return {"id": rid, "path": str(directory), "error": f"unreadable report.json: {exc}"}
    verified: str
    try:
        verify_report(directory, Verifier.for_key_file(checkpoint_keys(manifest)[0]))
        verified = "verified"
    except (BastionError, OSError, ValueError) as exc:  # a missing key reads as unverified
        verified = f"not verified: {exc}"[:300]
    drills = doc.get("drills") or []
    return {
        "id": rid,
        "path": str(directory),
        "generated_at": str(doc.get("generated_at") or ""),
        "score": (doc.get("score") or {}).get("value"),
        "drills": len(drills),
        "findings": len(doc.get("findings") or []),
        "verified": verified,
    }


def one_report(manifest: Manifest, rid: str) -> dict[str, Any]:
    if not _REPORT_ID.match(rid):
        raise NotFoundError(f"no readiness report {rid!r} (ids are plain directory names)")
    found = report_dirs(manifest)
    if rid not in found:
        known = ", ".join(found) or "none"
        raise NotFoundError(f"no readiness report {rid!r} (known: {known}); see GET /api/reports")
    summary = report_summary(manifest, rid, found[rid])
    try:
        summary["document"] = json.loads((found[rid] / "report.json").read_text())
    except (OSError, ValueError):
        summary["document"] = None
    return summary


def new_report_id(now: float | None = None) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
