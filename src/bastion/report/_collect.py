"""What the readiness report says, gathered from the state directory into one document.

Owns: ``build_report(manifest)``, the report as a JSON-ready dict (schema
``bastion.report/1``, ``report.schema.json`` beside this module): the drills (each run's
verdict, measurements and timeline, from the ``drill.*`` events and the journals under
``<state_dir>/drills/``), the SLOs (status and burn series from the SLI rows, alerts from
the events), the dependency map's findings and the concentration per vendor, the outcome
metrics, the spend, every finding with its remediation and retest, the score and the
table of frameworks.

Every figure names where it came from: ``event_ids`` (rows of ``events.db``), ``sli``
(service and seconds of the SLI rows) or ``spend`` (seconds of ``spend.db``); the map's
figures come from the manifest, whose BLAKE3 the report carries.

Must never: write to the state directory (the report is read-only: SLOs are evaluated,
not alerted); read the whole event log into Python (1M events: each query asks SQLite for
the kinds it needs, by index); count an errored, aborted or unfinished drill as a pass.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import blake3

from bastion import event_kinds as ek
from bastion.errors import UsageError
from bastion.events import Event
from bastion.manifest import Manifest
from bastion.report._frameworks import FRAMEWORKS
from bastion.report._score import PASS, Part, score, verdict_passes

__all__ = ["DEFAULT_MAX_AGE_S", "SCHEMA", "WEIGHTS", "build_report", "drill_verdict"]

SCHEMA = "bastion.report/1"
DEFAULT_MAX_AGE_S = 30 * 86400.0
"""Evidence older than this (30 days) is stale and counts as 0 in the score."""
WEIGHTS = {"drills": 40.0, "slos": 30.0, "map": 20.0, "changes": 10.0}
"""The parts' weights: measured recovery first, then the promises kept, then the map's
static verdict, then how often a change had to be rolled back."""
_TIMELINE_OTHER = 200
"""At most this many non-drill events are drawn on a drill's timeline (detections by
the system's own parts); the count of the rest is given."""

_PROMOTION_KINDS = (ek.MODEL_PROMOTED, ek.MODEL_PROMOTION_FORCED)
_OUTCOME_KINDS = (
    ek.MODEL_PROMOTED,
    ek.MODEL_PROMOTION_FORCED,
    ek.ROLLOUT_PROMOTED,
    ek.MODEL_ROLLED_BACK,
    ek.ROLLOUT_ROLLED_BACK,
    ek.TRAIN_RUN_STARTED,
    ek.SLO_BURN_PAGE,
    ek.SLO_BURN_RESOLVED,
    ek.SERVE_GOLDEN_FAILED,
)
"""The kinds the outcome metrics read in full; of ``vault.put`` and ``train.*`` (the bulk
of a busy log) and ``serve.golden.passed`` (one per probe round) only the rows a figure
can use are read (``_outcome_events``)."""
_ALERT_KINDS = (
    ek.SLO_BURN_PAGE,
    ek.SLO_BURN_TICKET,
    ek.SLO_BURN_RESOLVED,
    ek.SLO_NODATA,
    ek.SLO_NODATA_RESOLVED,
)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


def _num(x: float | None) -> float | None:
    """A JSON number: NaN and infinities become None."""
    if x is None or not math.isfinite(x):
        return None
    return float(x)


class _Log:
    """Read-only queries over the event log, each by index: ``<state_dir>/events.db``, or
    the PostgreSQL database the manifest's ``events:`` names. The SQL is written once,
    with ``?`` placeholders; ``_prefix`` and ``_json`` spell what the two dialects spell
    differently (a prefix match that must not depend on a collation, a JSON field)."""

    def __init__(self, state_dir: Path) -> None:
        from bastion.events import url_of

        self.url = url_of(state_dir)
        self.path = Path(state_dir) / "events.db"
        self.conn: Any = None
        self.pg = self.url is not None
        if self.url is not None:
            self._open_postgres(self.url)
        elif self.path.exists():
            try:
                self.conn = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True)
                self.conn.execute("PRAGMA query_only = 1")
                self.conn.execute("SELECT 1 FROM events LIMIT 1")
            except sqlite3.Error as exc:
                raise UsageError(
                    f"cannot read the event log {self.path}: {exc} (check state_dir in the "
                    "manifest)"
                ) from None

    def _open_postgres(self, url: str) -> None:
        import psycopg

        from bastion.errors import UnavailableError
        from bastion.events._postgres import PgConn, reason_of, where_of

        try:
            self.conn = PgConn(
                psycopg.connect(url, autocommit=True, connect_timeout=10), where_of(url)
            )
            self.conn.execute("SET default_transaction_read_only = on")
            self.conn.execute("SELECT 1 FROM events LIMIT 1")
        except psycopg.errors.UndefinedTable:
            self.close()  # nothing has written to this database yet: an empty log
            self.conn = None
        except psycopg.Error as exc:
            raise UnavailableError(
                f"cannot read the event log at {where_of(url)}: {reason_of(exc)} (is the "
                "server up, and the manifest's events: right?)"
            ) from None

    @property
    def where(self) -> str:
        """What a report names as the log its figures came from (the schema's enum:
        ``events.db`` or ``postgresql``, the database the manifest's ``events:`` names)."""
        return "postgresql" if self.pg else "events.db"

    def _execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self.conn.execute(sql, tuple(args)).fetchall())

    def _prefix(self, column: str, prefix: str) -> tuple[str, list[Any]]:
        """``column`` starts with ``prefix``: a range on SQLite (its index serves it); on
        PostgreSQL ``starts_with``, since a range there would follow the database's
        collation, which may ignore punctuation ('drill/' sorting before 'drill.x')."""
        if self.pg:
            return f"starts_with({column}, ?)", [prefix]
        return f"{column} >= ? AND {column} < ?", [prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)]

    def _json(self, key: str) -> str:
        return f"(data::jsonb ->> '{key}')" if self.pg else f"json_extract(data, '$.{key}')"

    def _rows(self, sql: str, args: Sequence[Any]) -> list[Event]:
        if self.conn is None:
            return []
        rows = self._execute(
            "SELECT id, ts, mono_ns, kind, subject, segment, data FROM events " + sql,  # noqa: S608 - fixed clauses, values bound
            args,
        )
        return [
            Event(kind=k, subject=s, segment=g, data=json.loads(d), ts=t, mono_ns=m, id=i)
            for (i, t, m, k, s, g, d) in rows
        ]

    def kinds(self, kinds: Iterable[str], *, prefix: str | None = None) -> list[Event]:
        """Events of the given kinds (and of ``prefix.*``), in id order; one indexed
        query per kind, so a log of a million other events is never walked."""
        out: list[Event] = []
        for kind in kinds:
            out += self._rows("WHERE kind = ?", (kind,))
        if prefix is not None:
            cond, args = self._prefix("kind", prefix + ".")
            out += self._rows(f"WHERE {cond}", args)
        out.sort(key=lambda e: e.id)
        return out

    def newest_per_subject(self, kind: str, prefix: str) -> list[Event]:
        """The newest ``kind`` event of each subject that starts with ``prefix``."""
        if self.conn is None:
            return []
        cond, args = self._prefix("subject", prefix)
        ids = [
            int(r[0])
            for r in self._execute(
                f"SELECT max(id) FROM events WHERE kind = ? AND {cond} GROUP BY subject",  # noqa: S608 - fixed clauses, values bound
                [kind, *args],
            )
        ]
        return self.ids(ids)

    def ids(self, ids: Sequence[int]) -> list[Event]:
        out: list[Event] = []
        for k in range(0, len(ids), 500):
            chunk = ids[k : k + 500]
            out += self._rows(f"WHERE id IN ({','.join('?' * len(chunk))})", chunk)
        return out

    def of_subject(
        self, subject: str, *, kind: str | None = None, prefix: str | None = None, after: int = 0
    ) -> list[Event]:
        """``subject``'s events of ``kind`` (or ``prefix.*``) after id ``after``."""
        if kind is not None:
            return self._rows("WHERE subject = ? AND kind = ? AND id > ?", (subject, kind, after))
        assert prefix is not None
        cond, args = self._prefix("kind", prefix + ".")
        return self._rows(f"WHERE subject = ? AND {cond} AND id > ?", [subject, *args, after])

    def next_passed(self, failed: Event) -> list[Event]:
        """The first ``serve.golden.passed`` of the backend after its ``failed`` round: all
        that the wrong-answer share needs of the many passing rounds."""
        return self._rows(
            f"WHERE kind = ? AND subject = ? AND id > ? AND {self._json('backend')} = ? "
            "ORDER BY id LIMIT 1",
            (ek.SERVE_GOLDEN_PASSED, failed.subject, failed.id, failed.data.get("backend")),
        )

    def between(
        self, after: int, upto: int, *, drill: bool, limit: int | None = None
    ) -> list[Event]:
        cond, args = self._prefix("kind", "drill.")
        sql = "WHERE id > ? AND id <= ? AND " + (cond if drill else f"NOT ({cond})")
        sql += " ORDER BY id" + (f" LIMIT {int(limit)}" if limit is not None else "")
        return self._rows(sql, [after, upto, *args])

    def count_between(self, after: int, upto: int) -> int:
        if self.conn is None:
            return 0
        rows = self._execute("SELECT count(*) FROM events WHERE id > ? AND id <= ?", (after, upto))
        return int(rows[0][0])

    def has_sli(self) -> bool:
        """Whether the SLI tables are there (opening them otherwise would create them)."""
        if self.conn is None:
            return False
        if self.pg:
            rows = self._execute("SELECT to_regclass('sli_h') IS NOT NULL")
        else:
            rows = self._execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'sli_h'"
            )
        return bool(rows[0][0])

    def summary(self) -> tuple[int, int]:
        """(number of events, the last id)."""
        if self.conn is None:
            return 0, 0
        rows = self._execute("SELECT count(*), coalesce(max(id), 0) FROM events")
        return int(rows[0][0]), int(rows[0][1])

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


# ---------------------------------------------------------------- drills


def drill_verdict(finished: Event | None, aborted: bool) -> str:
    """A drill run's verdict from its ``drill.finished`` event (None: it never finished)
    and whether a ``drill.aborted`` fell in it. Only a completed run with exit code 0 and
    no abort is a pass."""
    if finished is None:
        return "unfinished"
    status = str(finished.data.get("status") or "")
    code = finished.data.get("exit_code")
    if aborted or status in ("aborted", "interrupted"):
        return "aborted"
    if code == 2 or status not in ("completed", "failed"):
        return "error"
    if status == "completed" and code == 0:
        return PASS
    return "fail"


def _journals(state_dir: Path, extra: Sequence[Path]) -> list[dict[str, Any]]:
    """Drill journals: ``<state_dir>/drills/**/*.json`` and the ones named; a file that is
    not a journal is skipped (a named one is an error)."""
    found: list[dict[str, Any]] = []
    root = state_dir / "drills"
    paths = sorted(root.rglob("*.json")) if root.is_dir() else []
    for path in [*paths, *extra]:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            if path in extra:
                raise UsageError(
                    f"--journal {path}: not a readable drill journal ({exc}); pass the "
                    "journal.json `bastion drill run` wrote"
                ) from None
            continue
        if isinstance(doc, dict) and isinstance(doc.get("bastion"), dict):
            found.append(doc)
        elif path in extra:
            raise UsageError(f"--journal {path}: has no 'bastion' section; not a drill journal")
    return found


def _journal_ids(journal: dict[str, Any]) -> list[int]:
    events = journal["bastion"].get("events") or []
    return [int(e["id"]) for e in events if isinstance(e, dict) and isinstance(e.get("id"), int)]


def _timeline(start: Event, events: Sequence[Event]) -> list[dict[str, Any]]:
    return [
        {
            "t_s": round((e.mono_ns - start.mono_ns) / 1e9, 6),
            "kind": e.kind,
            "subject": e.subject,
            "event_id": e.id,
        }
        for e in events
    ]


def _steady_spans(start: Event, events: Sequence[Event], end_s: float) -> list[dict[str, Any]]:
    """Spans in which the steady state was broken: from each ``broken`` to the next
    ``restored`` (or the drill's end)."""
    spans: list[dict[str, Any]] = []
    opened: Event | None = None
    for e in events:
        if e.kind == ek.DRILL_STEADY_STATE_BROKEN and opened is None:
            opened = e
        elif e.kind == ek.DRILL_STEADY_STATE_RESTORED and opened is not None:
            spans.append(
                {
                    "from_s": round((opened.mono_ns - start.mono_ns) / 1e9, 6),
                    "to_s": round((e.mono_ns - start.mono_ns) / 1e9, 6),
                    "event_ids": [opened.id, e.id],
                    "restored": True,
                }
            )
            opened = None
    if opened is not None:
        spans.append(
            {
                "from_s": round((opened.mono_ns - start.mono_ns) / 1e9, 6),
                "to_s": round(end_s, 6),
                "event_ids": [opened.id],
                "restored": False,
            }
        )
    return spans


def _drills(log: _Log, journals: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    marks = log.kinds((ek.DRILL_STARTED, ek.DRILL_FINISHED))
    _, last_id = log.summary()
    # One pass pairs each drill.started with the drill.finished of the same drill (subject
    # and title): a run whose drill starts again before it finished never finished.
    runs: list[tuple[Event, Event | None]] = []
    open_runs: dict[tuple[str, Any], int] = {}
    for e in marks:
        key = (e.subject, e.data.get("title"))
        if e.kind == ek.DRILL_STARTED:
            open_runs[key] = len(runs)
            runs.append((e, None))
        elif key in open_runs:
            k = open_runs.pop(key)
            runs[k] = (runs[k][0], e)
    starts = [s.id for s, _ in runs]
    out: list[dict[str, Any]] = []
    for i, (s, finished) in enumerate(runs):
        if finished is not None:
            upto = finished.id
        else:
            # an unfinished run is read up to the next drill's start, then only as far as
            # its own last drill event
            upto = starts[i + 1] - 1 if i + 1 < len(starts) else last_id
        mine = log.between(s.id, upto, drill=True)
        mine = [e for e in mine if e.kind != ek.DRILL_STARTED]
        if finished is None:
            upto = mine[-1].id if mine else s.id
            mine = [e for e in mine if e.id <= upto]
        aborted = any(e.kind == ek.DRILL_ABORTED for e in mine)
        others = log.between(s.id, upto, drill=False, limit=_TIMELINE_OTHER)
        other_count = log.count_between(s.id, upto) - len(mine)
        verdict = drill_verdict(finished, aborted)
        journal = next(
            (
                j
                for j in journals
                if "suite" not in j["bastion"]  # a suite's events are in its twin's log
                and (ids := _journal_ids(j))
                and s.id < min(ids) <= upto
            ),
            None,
        )
        jb: dict[str, Any] = journal["bastion"] if journal is not None else {}
        measured = dict(finished.data.get("data") or {}) if finished is not None else {}
        measured.update(
            {
                k: v
                for k, v in (jb.get("measurements") or {}).items()
                if isinstance(v, int | float | bool | str | None)
            }
        )
        end = finished or (mine[-1] if mine else s)
        end_s = (end.mono_ns - s.mono_ns) / 1e9
        samples = [
            {"t_s": round((int(x["mono_ns"]) - s.mono_ns) / 1e9, 6), "met": bool(x["met"])}
            for x in (jb.get("samples") or [])
            if isinstance(x, dict) and isinstance(x.get("mono_ns"), int)
        ]
        suite = s.data.get("suite") or (journal or {}).get("suite") or jb.get("suite")
        scenario = s.data.get("scenario") or (journal or {}).get("scenario") or jb.get("scenario")
        timeline = sorted(
            _timeline(s, [s, *mine, *others]), key=lambda p: (p["t_s"], p["event_id"])
        )
        out.append(
            {
                "id": f"drill-{s.id}",
                "title": str(s.data.get("title") or "drill"),
                "subject": s.subject,
                "suite": None if suite is None else str(suite),
                "scenario": None if scenario is None else str(scenario),
                "key": str(scenario or s.data.get("title") or "drill"),
                "started_at": _iso(s.ts),
                "started_ts": s.ts,
                "finished_at": _iso(finished.ts) if finished is not None else None,
                "duration_s": round(end_s, 6),
                "status": None if finished is None else finished.data.get("status"),
                "exit_code": None if finished is None else finished.data.get("exit_code"),
                "verdict": verdict,
                "passed": verdict_passes(verdict),
                "measurements": dict(sorted(measured.items())),
                "targets": jb.get("targets") or {},
                "targets_missed": list(jb.get("targets_missed") or []),
                "problems": [str(p) for p in jb.get("problems") or []],
                "cost": jb.get("cost"),
                "timeline": timeline,
                "broken": _steady_spans(s, mine, end_s),
                "samples": samples,
                "other_events": max(0, other_count - len(others)),
                "age_s": round(max(0.0, now - s.ts), 3),
                "log": log.where,
                "event_ids": sorted({s.id, *(e.id for e in mine)}),
            }
        )
    out += _suite_drills(log, journals, now)
    out.sort(key=lambda d: d["started_ts"])
    return out


_SUITE_VERDICTS = {"passed": PASS, "failed": "fail", "errored": "error", "skipped": "skipped"}


def _journal_event(doc: dict[str, Any]) -> Event | None:
    data = doc.get("data")
    try:
        ts = datetime.fromisoformat(str(doc["ts"])).timestamp()
        return Event(
            kind=str(doc["kind"]),
            subject=str(doc.get("subject") or ""),
            segment=str(doc.get("segment") or ""),
            data=data if isinstance(data, dict) else {},
            ts=ts,
            mono_ns=int(doc["mono_ns"]),
            id=int(doc["id"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _suite_drills(log: _Log, journals: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """The reference suite's scenarios (``bastion drill suite``): each ran in a sandbox
    twin whose log went with the twin, so the run is its ``drill.suite.scenario`` event in
    this log and its journal (``<state_dir>/drills/suite/<suite>/<scenario>.json``), whose
    copy of the twin's events draws the timeline. A scenario passes only if the suite said
    ``passed`` and its journal, read by the same rule as any drill, says so too."""
    by_run = {
        (str(j["bastion"]["suite"].get("suite")), str(j["bastion"]["suite"].get("scenario"))): j
        for j in journals
        if isinstance(j["bastion"].get("suite"), dict)
    }
    out: list[dict[str, Any]] = []
    for e in log.kinds((ek.DRILL_SUITE_SCENARIO,)):
        suite, scenario = str(e.data.get("suite") or ""), str(e.data.get("scenario") or e.subject)
        journal = by_run.get((suite, scenario))
        jb: dict[str, Any] = journal["bastion"] if journal is not None else {}
        verdict = _SUITE_VERDICTS.get(str(e.data.get("verdict")), "error")
        copied = sorted(
            (x for x in (_journal_event(d) for d in jb.get("events") or []) if x is not None),
            key=lambda x: (x.mono_ns, x.id),
        )
        if verdict == PASS:
            finished = next((x for x in copied if x.kind == ek.DRILL_FINISHED), None)
            if journal is None:
                verdict = "error"  # a pass nobody can check is no pass
            else:
                stand_in = finished or Event(
                    ek.DRILL_FINISHED,
                    data={"status": journal.get("status"), "exit_code": jb.get("exit_code")},
                )
                verdict = drill_verdict(stand_in, bool(jb.get("aborted")))
        samples_raw = [x for x in jb.get("samples") or [] if isinstance(x, dict)]
        t0_candidates = [x.mono_ns for x in copied[:1]] + [
            int(x["mono_ns"]) for x in samples_raw[:1] if isinstance(x.get("mono_ns"), int)
        ]
        t0 = min(t0_candidates) if t0_candidates else 0
        start = Event(ek.DRILL_STARTED, mono_ns=t0)
        end_s = max(
            [(x.mono_ns - t0) / 1e9 for x in copied[-1:]]
            + [
                (int(x["mono_ns"]) - t0) / 1e9
                for x in samples_raw[-1:]
                if isinstance(x.get("mono_ns"), int)
            ]
            + [0.0]
        )
        drill_events = [x for x in copied if x.kind.startswith("drill.")]
        others = [x for x in copied if not x.kind.startswith("drill.")][:_TIMELINE_OTHER]
        measured = {
            k: v
            for k, v in (jb.get("measurements") or {}).items()
            if isinstance(v, int | float | bool | str | None)
        }
        for k in ("time_to_detect_s", "rto_s", "rpo_s"):
            if e.data.get(k) is not None:
                measured.setdefault(k, e.data[k])
        reason = str(e.data.get("reason") or "")
        problems = [str(p) for p in jb.get("problems") or []] or (
            [reason] if reason and verdict != PASS else []
        )
        timeline = _timeline(start, [*drill_events, *others])
        started_ts = copied[0].ts if copied else e.ts
        title = str(
            (jb.get("suite") or {}).get("title") or (journal or {}).get("title") or scenario
        )
        out.append(
            {
                "id": f"suite-{e.id}",
                "title": title,
                "subject": scenario,
                "suite": suite or None,
                "scenario": scenario,
                "key": scenario,
                "started_at": _iso(started_ts),
                "started_ts": started_ts,
                "finished_at": _iso(e.ts),
                "duration_s": round(max(0.0, end_s), 6),
                "status": None if journal is None else journal.get("status"),
                "exit_code": jb.get("exit_code"),
                "verdict": verdict,
                "passed": verdict_passes(verdict),
                "measurements": dict(sorted(measured.items())),
                "targets": (jb.get("suite") or {}).get("targets") or jb.get("targets") or {},
                "targets_missed": list(jb.get("targets_missed") or []),
                "problems": problems,
                "cost": jb.get("cost"),
                "timeline": timeline,
                "broken": _steady_spans(start, drill_events, end_s),
                "samples": [
                    {"t_s": round((int(x["mono_ns"]) - t0) / 1e9, 6), "met": bool(x.get("met"))}
                    for x in samples_raw
                    if isinstance(x.get("mono_ns"), int)
                ],
                "other_events": max(0, len(copied) - len(drill_events) - len(others)),
                "age_s": round(max(0.0, now - e.ts), 3),
                "log": "journal",
                "event_ids": [e.id],
            }
        )
    return out


# ---------------------------------------------------------------- SLOs


def _step_for(span_s: int) -> int:
    if span_s <= 900:
        return 1
    if span_s <= 2 * 86400:
        return 60
    return 3600


def _slos(manifest: Manifest, log: _Log, now: float) -> list[dict[str, Any]]:
    from bastion.slo import SqliteSli, burn_rate, evaluate, objectives

    objs = objectives(manifest)
    if not objs:
        return []
    reader = SqliteSli.in_state_dir(manifest.state_dir) if log.has_sli() else None
    alerts = log.kinds(_ALERT_KINDS)
    out = []
    try:
        for o in objs:
            mine = [a for a in alerts if a.subject == o.id]
            entry: dict[str, Any] = {
                "id": o.id,
                "slo": o.slo,
                "service": o.service,
                "sli_kind": o.sli,
                "target": o.target,
                "threshold_ms": o.threshold_ms,
                "window": o.window.text,
                "budgeting": o.budgeting,
                "alerts": [
                    {
                        "kind": a.kind,
                        "at": _iso(a.ts),
                        "event_id": a.id,
                        "severity": a.data.get("severity"),
                    }
                    for a in mine
                ],
                "event_ids": [a.id for a in mine],
            }
            if reader is None:
                entry.update(
                    sli=None, total=0, bad=0, budget_spent=0.0, budget_remaining=1.0,
                    coverage=0.0, paging=False, ticket=False, nodata=True, last_data=None,
                    last_data_ts=None, burns=[], series=[], step_s=1,
                    sli_source={"service": o.service, "from": None, "to": None},
                )  # fmt: skip
                out.append(entry)
                continue
            st = evaluate(o, reader, now, watching_since=0.0)
            first = reader.first_after(o.service, st.start)
            series: list[dict[str, Any]] = []
            step = 1
            if first is not None:
                end = int(now)
                step = _step_for(end - first)
                lo = first - first % step
                for t, tally in reader.series(o.service, lo, end, step=step):
                    good = o.good_of(tally)
                    series.append(
                        {
                            "t": t,
                            "total": tally.total,
                            "bad": tally.total - good,
                            "burn": _num(burn_rate(tally.total - good, tally.total, o.target)),
                        }
                    )
            entry.update(
                sli=_num(st.sli),
                total=st.total,
                bad=st.bad,
                budget_spent=_num(st.budget_spent) or 0.0,
                budget_remaining=_num(st.budget_remaining) or 0.0,
                coverage=_num(st.coverage) or 0.0,
                paging=bool(st.firing("page")),
                ticket=bool(st.firing("ticket")),
                nodata=st.nodata,
                last_data=_iso(st.last_data),
                last_data_ts=st.last_data,
                burns=[
                    {
                        "pair": b.pair.name,
                        "severity": b.pair.severity,
                        "factor": b.pair.factor,
                        "long_burn": _num(b.long_burn),
                        "short_burn": _num(b.short_burn),
                        "firing": b.firing,
                    }
                    for b in st.burns
                ],
                series=series,
                step_s=step,
                sli_source={"service": o.service, "from": st.start, "to": st.at},
            )
            out.append(entry)
    finally:
        if reader is not None:
            reader.close()
    return out


# ---------------------------------------------------------------- outcomes and cost


def _outcomes(manifest: Manifest, log: _Log, now: float, days: int) -> dict[str, Any]:
    from dataclasses import asdict

    from bastion.slo import SqliteSli, ages, dora, jobs_goodput, services_trust

    events = _outcome_events(manifest, log)
    start = now - days * 86400
    keys = dora(events, start=start, end=now)
    shares = []
    if log.has_sli():
        reader = SqliteSli.in_state_dir(manifest.state_dir)
        try:
            shares = [
                asdict(t)
                for t in services_trust(reader, events, manifest.services, start=start, end=now)
            ]
        finally:
            reader.close()
    runs = jobs_goodput(events, manifest.jobs)
    dora_doc = asdict(keys)
    dora_doc["event_ids"] = list(keys.event_ids)
    changes = [
        e.ts
        for e in events
        if start <= e.ts < now and e.kind in (*_PROMOTION_KINDS, ek.ROLLOUT_PROMOTED,
                                               ek.MODEL_ROLLED_BACK, ek.ROLLOUT_ROLLED_BACK)
    ]  # fmt: skip
    return {
        "days": days,
        "last_change_ts": max(changes, default=None),
        "dora": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dora_doc.items()},
        "trust": [
            dict(t, sli_source={"service": t["service"], "from": int(start), "to": int(now)})
            for t in shares
        ],
        "ages": [dict(asdict(a), event_ids=[a.event_id]) for a in ages(events, now=now)],
        "goodput": [dict(asdict(g), event_ids=list(g.event_ids)) for g in runs],
    }


def _outcome_events(manifest: Manifest, log: _Log) -> list[Event]:
    """What ``dora``, ``trust``, ``ages`` and ``goodput`` read, and no more: every event
    of ``_OUTCOME_KINDS``; the ``vault.put`` of each promoted model (lead time); the
    newest ``vault.put`` of each dataset (data RPO); each job's latest run (goodput)."""
    events = log.kinds(_OUTCOME_KINDS)
    promoted = sorted({e.subject for e in events if e.kind in _PROMOTION_KINDS})
    for subject in promoted:
        events += log.of_subject(subject, kind=ek.VAULT_PUT)
    events += log.newest_per_subject(ek.VAULT_PUT, "dataset/")
    for failed in [e for e in events if e.kind == ek.SERVE_GOLDEN_FAILED]:
        events += log.next_passed(failed)
    for job in manifest.jobs:
        starts = [e for e in events if e.kind == ek.TRAIN_RUN_STARTED and e.subject == job]
        if starts:
            events += [
                e
                for e in log.of_subject(job, prefix="train", after=starts[-1].id)
                if e.kind != ek.TRAIN_RUN_STARTED
            ]
    unique = {e.id: e for e in events}
    return [unique[i] for i in sorted(unique)]


def _cost(manifest: Manifest, now: float) -> tuple[dict[str, Any] | None, Any]:
    """The month's spend as the report shows it, and the spend per (service, backend) by
    currency that the map's vendor concentration reads (None without a spend log)."""
    from bastion.serve._spend import cost_report, spend_path

    if not spend_path(manifest.state_dir).exists():
        return None, None
    found = cost_report(manifest.state_dir, "month", now=now)
    per_backend: dict[tuple[str, str], dict[str, float]] = {}
    for row in found.rows:
        mine = per_backend.setdefault((row.service, row.backend), {})
        mine[row.currency] = mine.get(row.currency, 0.0) + row.cost
    doc = {
        "period": found.period,
        "currencies": list(found.currencies),
        "total": found.total,
        "by_cause": found.by_cause,
        "by_vendor": found.by_vendor,
        "extra": found.extra,
        "estimated": found.estimated,
        "spend_source": {"from": found.since, "to": found.until},
    }
    return doc, per_backend


# ---------------------------------------------------------------- the map and findings


def _map(manifest: Manifest, spend: Any) -> tuple[Any, dict[str, Any]]:
    from bastion.map import map_manifest

    report = map_manifest(manifest, spend=spend)
    vendors = [
        {
            "vendor": v.vendor,
            "backends": list(v.backends),
            "components": list(v.components),
            "spend": v.spend,
            "spend_share": v.spend_share,
            "unavailability_share": v.unavailability_share,
            "max_spend_share": v.max_spend_share,
            "max_unavailability_share": v.max_unavailability_share,
            "spof": v.spof,
            "concentrated": v.concentrated,
        }
        for v in report.vendors
    ]
    doc = {
        "ok": report.ok,
        "tops": [
            {
                "id": t.id,
                "kind": t.kind,
                "availability": t.availability,
                "objective": t.objective,
                "met": t.met,
                "spofs": t.spofs,
            }
            for t in report.tops
        ],
        "vendors": vendors,
    }
    return report, doc


def _retest(subject: str, drills: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The latest drill that exercises ``subject`` (by its subject, title or scenario)."""
    word = subject.rsplit(":", maxsplit=1)[-1] if subject.startswith("vendor:") else subject
    hits = [
        d
        for d in drills
        if word and (d["subject"] == word or word in d["title"] or word in (d["scenario"] or ""))
    ]
    if not hits:
        return {
            "drill": None,
            "verdict": None,
            "advice": f"no drill exercises {subject} yet: run one with "
            f"`extensions: [{{name: bastion, subject: {word}}}]`",
        }
    last = hits[-1]
    return {"drill": last["id"], "verdict": last["verdict"], "advice": None}


def _findings(
    report: Any, drills: Sequence[dict[str, Any]], slos: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n, f in enumerate(report.findings):
        out.append(
            {
                "id": f"map-{n + 1}",
                "source": "map",
                "severity": f.severity,
                "subject": f.subject,
                "message": f.message,
                "remediation": f.fix or None,
                "retest": _retest(f.subject, drills),
                "event_ids": [],
            }
        )
    latest: dict[str, dict[str, Any]] = {}
    for d in drills:
        latest[d["key"]] = d
    for d in drills:
        if d["passed"] or d["verdict"] == "skipped":
            continue
        last = latest[d["key"]]
        retest = (
            {"drill": last["id"], "verdict": last["verdict"], "advice": None}
            if last is not d
            else {
                "drill": None,
                "verdict": None,
                "advice": f"run the drill {d['title']!r} again after the fix",
            }
        )
        out.append(
            {
                "id": f"{d['id']}-finding",
                "source": "drill",
                "severity": "breach" if d["verdict"] == "fail" else "error",
                "subject": d["subject"] or d["title"],
                "message": f"drill {d['title']!r}: {d['verdict']}"
                + (f" ({'; '.join(d['problems'])})" if d["problems"] else ""),
                "remediation": "; ".join(f"meet {m}" for m in d["targets_missed"])
                or "make the steady state hold through the fault, then retest",
                "retest": retest,
                "event_ids": d["event_ids"],
            }
        )
    for s in slos:
        if s["paging"] or s["nodata"] or s["budget_spent"] > 1:
            what = (
                "pages (burning its budget too fast)"
                if s["paging"]
                else "has no data"
                if s["nodata"]
                else "has spent more than its budget"
            )
            out.append(
                {
                    "id": f"slo-{s['id']}",
                    "source": "slo",
                    "severity": "breach",
                    "subject": s["service"],
                    "message": f"SLO {s['id']} {what}",
                    "remediation": "record the SLI (is the gateway running?)"
                    if s["nodata"]
                    else "find the incident's cause in its alerts; drill the failure that spent it",
                    "retest": _retest(s["service"], drills),
                    "event_ids": s["event_ids"],
                }
            )
    return out


# ---------------------------------------------------------------- the score


def _parts(  # noqa: PLR0917 (private; its one caller names what it passes)
    drills: Sequence[dict[str, Any]],
    slos: Sequence[dict[str, Any]],
    report: Any,
    outcomes: dict[str, Any],
    now: float,
    max_age_s: float,
) -> list[Part]:
    # the latest run of each drill started within max_age counts; with none that recent,
    # the latest runs are shown (their share and age) and count 0, as stale evidence
    counted = [d for d in drills if d["verdict"] != "skipped"]
    fresh = [d for d in counted if now - d["started_ts"] <= max_age_s]
    stale_drills = bool(counted) and not fresh
    latest: dict[str, dict[str, Any]] = {}
    for d in counted if stale_drills else fresh:
        latest[d["key"]] = d
    runs = list(latest.values())
    drill_part = Part(
        "drills",
        "drills passed (latest run of each; errored, aborted and unfinished runs fail)",
        WEIGHTS["drills"],
        sum(d["passed"] for d in runs) / len(runs) if runs else None,
        passed=sum(d["passed"] for d in runs),
        total=len(runs),
        fresh_at=min((d["started_ts"] for d in runs), default=None),
        stale=stale_drills,
        evidence=tuple(i for d in runs for i in d["event_ids"]),
    )
    with_data = [s for s in slos if s["last_data_ts"] is not None]
    kept = [s for s in slos if not (s["paging"] or s["nodata"] or s["budget_spent"] > 1)]
    last_data = [float(s["last_data_ts"]) for s in with_data]
    slo_part = Part(
        "slos",
        "SLOs within budget, not paging, with data",
        WEIGHTS["slos"],
        len(kept) / len(slos) if with_data else None,
        passed=len(kept),
        total=len(slos),
        fresh_at=min(last_data) if last_data else None,
        stale=bool(last_data) and now - min(last_data) > max_age_s,
        evidence=tuple(i for s in slos for i in s["event_ids"]),
    )
    good_tops = [t for t in report.tops if not t.spofs and t.met is not False]
    map_part = Part(
        "map",
        "services and jobs with no SPOF and availability meeting the objective",
        WEIGHTS["map"],
        len(good_tops) / len(report.tops) if report.tops else None,
        passed=len(good_tops),
        total=len(report.tops),
        fresh_at=now,
    )
    dora_doc = outcomes["dora"]
    cfr = dora_doc.get("change_failure_rate")
    change_part = Part(
        "changes",
        "model changes that did not need a rollback (1 - change failure rate)",
        WEIGHTS["changes"],
        None if cfr is None else 1.0 - float(cfr),
        passed=int(dora_doc["promotions"]) - int(dora_doc["rollbacks"]),
        total=int(dora_doc["promotions"]),
        fresh_at=outcomes["last_change_ts"] if cfr is not None else None,
        evidence=tuple(dora_doc["event_ids"]),
    )
    return [drill_part, slo_part, map_part, change_part]


def _part_doc(p: Part, now: float) -> dict[str, Any]:
    return {
        "id": p.id,
        "title": p.title,
        "weight": p.weight,
        "value": _num(p.value),
        "counted": p.counted,
        "points": round(100.0 * p.counted * p.usable_weight / sum(WEIGHTS.values()), 2),
        "passed": p.passed,
        "total": p.total,
        "evidence": "stale" if p.stale else ("none" if p.value is None else "ok"),
        "fresh_at": _iso(p.fresh_at),
        "age_s": None if p.fresh_at is None else round(max(0.0, now - p.fresh_at), 3),
        "stale": p.stale,
        "event_ids": sorted(set(p.evidence)),
    }


def build_report(
    manifest: Manifest,
    *,
    now: float | None = None,
    max_age_s: float = DEFAULT_MAX_AGE_S,
    journals: Sequence[Path] = (),
    outcome_days: int = 30,
) -> dict[str, Any]:
    """The readiness report of ``manifest``'s system, from its state directory."""
    if not max_age_s > 0:
        raise UsageError(f"--max-age: {max_age_s!r} is not a positive age; use e.g. 30d")
    now = time.time() if now is None else now
    t0 = time.perf_counter()
    log = _Log(manifest.state_dir)
    try:
        count, last_id = log.summary()
        drills = _drills(log, _journals(manifest.state_dir, journals), now)
        slos = _slos(manifest, log, now)
        outcomes = _outcomes(manifest, log, now, outcome_days)
    finally:
        log.close()
    cost, spend = _cost(manifest, now)
    report, map_doc = _map(manifest, spend)
    parts = _parts(drills, slos, report, outcomes, now, max_age_s)
    findings = _findings(report, drills, slos)
    source = manifest.path
    digest = None
    if source is not None and source.exists():
        digest = blake3.blake3(source.read_bytes()).hexdigest()
    for d in drills:
        d.pop("started_ts", None)
    return {
        "schema": SCHEMA,
        "system": manifest.system,
        "generated_at": _iso(now),
        "generated_ts": now,
        "max_age_s": max_age_s,
        "score": {
            "value": score(parts),
            "parts": [_part_doc(p, now) for p in parts],
        },
        "drills": drills,
        "slos": slos,
        "map": map_doc,
        "findings": findings,
        "outcomes": outcomes,
        "cost": cost,
        "frameworks": FRAMEWORKS,
        "evidence": {
            "events": count,
            "last_event_id": last_id,
            "manifest_blake3": digest,
            "build_s": round(time.perf_counter() - t0, 3),
        },
    }
