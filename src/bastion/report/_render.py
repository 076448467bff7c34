"""The report drawn: one self-contained HTML page with inline SVG charts, and JUnit XML.

Owns: ``html(document)`` and ``junit(document)``, pure functions of the report document
(``_collect.build_report``). The charts are SVG written here (no JavaScript, no library,
nothing fetched: the page's Content-Security-Policy allows no script and no source but
itself): a bar per part of the score, a timeline per drill (steady-state breaks as red
spans, faults and detections as marks on their lanes), a burn-rate chart per SLO and a
chart of spend beside unavailability per vendor. Each mark carries the event ids it was
drawn from (``data-event-ids``) and says them in its tooltip.

Must never: draw an empty chart (a figure with no data is a sentence saying so); put
anything from the document into the page unescaped.
"""

from __future__ import annotations

import html as html_lib
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import quoteattr

__all__ = ["html", "junit"]

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
esc = html_lib.escape

_STYLE = """
body { font: 15px Helvetica, Arial, "Liberation Sans", sans-serif; margin: 16px 24px;
  color: #222; max-width: 1200px; }
h1 { margin-bottom: 4px; } h2 { margin-top: 28px; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 8px 0; }
td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f2f3f5; }
.pass, .ok { color: #1a7f37; font-weight: bold; }
.fail, .breach, .error, .aborted, .unfinished, .spof, .bad { color: #c62828; font-weight: bold; }
.warning, .stale { color: #a15c00; font-weight: bold; }
.skipped { color: #666; }
.score { font-size: 40px; font-weight: bold; }
.src { color: #666; font-size: 12px; }
svg.chart { display: block; margin: 6px 0 14px; background: #fcfcfd;
  border: 1px solid #e3e5e8; }
svg.chart text { font: 12px Helvetica, Arial, "Liberation Sans", sans-serif; fill: #333; }
.axis { stroke: #999; stroke-width: 1; }
.grid { stroke: #ddd; stroke-dasharray: 3 3; }
.track { fill: #eef0f2; }
.held { fill: #d8f0de; }
.broken { fill: #e57373; }
.bar { fill: #4a78c2; } .bar2 { fill: #e08a2c; }
.burn { fill: #4a78c2; } .burn-hot { fill: #c62828; }
.fault { fill: #c62828; } .revert { fill: #1a7f37; } .evt { fill: #555; }
.sample-met { fill: #1a7f37; } .sample-unmet { fill: #c62828; }
"""


_PART_HEAD = (
    "part",
    "measures",
    "weight",
    "passed",
    "counted",
    "points",
    "evidence",
    "fresh as of",
)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ids(ids: Iterable[int]) -> str:
    return " ".join(str(i) for i in ids)


def _ids_text(ids: Sequence[int], limit: int = 12) -> str:
    if not ids:
        return "none"
    shown = ", ".join(f"#{i}" for i in ids[:limit])
    return shown + (f" ... ({len(ids)} in all)" if len(ids) > limit else "")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _svg(chart: str, width: int, height: int, body: str, points: int, label: str) -> str:  # noqa: PLR0917
    return (
        f"<svg class='chart' data-chart={quoteattr(chart)} data-points='{points}' "
        f"role='img' aria-label={quoteattr(label)} width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' xmlns='http://www.w3.org/2000/svg'>{body}</svg>"
    )


def _mark(shape: str, cls: str, attrs: str, tip: str, ids: Iterable[int] = ()) -> str:
    """One drawn datum: its tooltip says what it is and which events it came from."""
    return (
        f"<{shape} class='mark {cls}' data-event-ids='{_ids(ids)}' {attrs}>"
        f"<title>{esc(tip)}</title></{shape}>"
    )


# ---------------------------------------------------------------- charts


def _score_chart(parts: Sequence[Mapping[str, Any]]) -> str:
    width, left, bar_w, row = 760, 210, 420, 30
    height = 20 + row * len(parts)
    body = []
    for i, p in enumerate(parts):
        y = 10 + i * row
        share = float(p["counted"])
        w = max(2.0, bar_w * share)
        body.append(f"<text x='8' y='{y + 17}'>{esc(str(p['id']))} ({p['weight']:g})</text>")
        body.append(f"<rect class='track' x='{left}' y='{y + 4}' width='{bar_w}' height='18'/>")
        tip = (
            f"{p['title']}: {p['passed']} of {p['total']}, counted {100 * share:.1f}% "
            f"({p['evidence']}); events {_ids_text(p['event_ids'])}"
        )
        body.append(
            _mark(
                "rect",
                "bar",
                f"x='{left}' y='{y + 4}' width='{w:.1f}' height='18'",
                tip,
                p["event_ids"],
            )
        )
        body.append(
            f"<text x='{left + bar_w + 10}' y='{y + 17}'>{100 * share:.0f}%"
            f" = {p['points']:g} pts</text>"
        )
    return _svg("score", width, height, "".join(body), len(parts), "the score's parts")


def _drill_chart(d: Mapping[str, Any]) -> str:
    width, left, right = 900, 120, 20
    lanes = ["steady state", "faults", "drill", "system"]
    lane_h = 34
    height = 40 + lane_h * len(lanes)
    span = max(float(d["duration_s"]), max((p["t_s"] for p in d["timeline"]), default=0.0), 0.001)
    scale = (width - left - right) / span

    def x(t: float) -> float:
        return left + max(0.0, min(span, t)) * scale

    def y(lane: str) -> int:
        return 16 + lanes.index(lane) * lane_h

    body = [f"<text x='8' y='{y(lane) + 20}'>{lane}</text>" for lane in lanes]
    top = y("steady state")
    body.append(
        f"<rect class='held' x='{left}' y='{top + 6}' width='{width - left - right}' height='20'/>"
    )
    points = 0
    for s in d["broken"]:
        x0, x1 = x(s["from_s"]), x(s["to_s"])
        tip = (
            f"steady state broken from {s['from_s']:.3f} s to {s['to_s']:.3f} s"
            + ("" if s["restored"] else " (never restored)")
            + f"; events {_ids_text(s['event_ids'])}"
        )
        body.append(
            _mark(
                "rect",
                "broken",
                f"x='{x0:.1f}' y='{top + 6}' width='{max(2.0, x1 - x0):.1f}' height='20'",
                tip,
                s["event_ids"],
            )
        )
        points += 1
    for s in d["samples"]:
        cls = "sample-met" if s["met"] else "sample-unmet"
        body.append(
            _mark(
                "circle",
                cls,
                f"cx='{x(s['t_s']):.1f}' cy='{top + 16}' r='2.5'",
                f"probe at {s['t_s']:.3f} s: {'met' if s['met'] else 'NOT met'} (journal sample)",
            )
        )
        points += 1
    for p in d["timeline"]:
        kind = str(p["kind"])
        tip = f"{kind} at {p['t_s']:.3f} s ({p['subject'] or '-'}), event #{p['event_id']}"
        if kind in ("drill.fault.injected", "drill.fault.reverted"):
            cx, cy = x(p["t_s"]), y("faults") + 16
            cls = "fault" if kind.endswith("injected") else "revert"
            pts = (
                f"{cx - 6:.1f},{cy - 7} {cx + 6:.1f},{cy - 7} {cx:.1f},{cy + 7}"
                if cls == "fault"
                else f"{cx - 6:.1f},{cy + 7} {cx + 6:.1f},{cy + 7} {cx:.1f},{cy - 7}"
            )
            body.append(_mark("polygon", cls, f"points='{pts}'", tip, [p["event_id"]]))
        else:
            lane = "drill" if kind.startswith("drill.") else "system"
            body.append(
                _mark(
                    "circle",
                    "evt",
                    f"cx='{x(p['t_s']):.1f}' cy='{y(lane) + 16}' r='4'",
                    tip,
                    [p["event_id"]],
                )
            )
        points += 1
    axis_y = height - 18
    body.append(
        f"<line class='axis' x1='{left}' y1='{axis_y}' x2='{width - right}' y2='{axis_y}'/>"
    )
    for k in range(6):
        t = span * k / 5
        body.append(
            f"<text x='{x(t) - 10:.1f}' y='{axis_y + 14}'>{t:.3g} s</text>"
            f"<line class='grid' x1='{x(t):.1f}' y1='12' x2='{x(t):.1f}' y2='{axis_y}'/>"
        )
    return _svg(
        "drill", width, height, "".join(body), points, f"timeline of the drill {d['title']}"
    )


def _burn_chart(s: Mapping[str, Any]) -> str:
    series = s["series"]
    width, left, right, top, plot_h = 900, 60, 20, 14, 150
    height = top + plot_h + 34
    burns = [float(p["burn"] or 0.0) for p in series]
    # a logarithmic scale: an outage burns hundreds of times over, while the alert lines
    # (1x, 6x, 14.4x) must stay apart
    peak = max(max(burns, default=0.0) * 1.2, 20.0)
    log_peak = math.log10(1.0 + peak)
    t0, t1 = series[0]["t"], series[-1]["t"] + s["step_s"]
    scale = (width - left - right) / max(1, t1 - t0)
    bar_w = max(1.0, s["step_s"] * scale - 1)
    base = top + plot_h

    def yv(v: float) -> float:
        return base - plot_h * math.log10(1.0 + min(max(v, 0.0), peak)) / log_peak

    body = [f"<line class='axis' x1='{left}' y1='{base}' x2='{width - right}' y2='{base}'/>"]
    ticks = [f for f in (1.0, 6.0, 14.4, 100.0, 1000.0, 10000.0) if f <= peak]
    body.extend(
        f"<line class='grid' x1='{left}' y1='{yv(factor):.1f}' x2='{width - right}' "
        f"y2='{yv(factor):.1f}'/><text x='4' y='{yv(factor) + 4:.1f}'>{factor:g}x</text>"
        for factor in ticks
    )
    for p, burn in zip(series, burns, strict=True):
        x0 = left + (p["t"] - t0) * scale
        h = max(1.5, base - yv(burn))
        cls = "burn-hot" if burn >= 14.4 else "burn"
        tip = (
            f"{_when(p['t'])} UTC, {s['step_s']} s: {p['bad']} bad of {p['total']}, burn "
            f"{burn:.2f}x (SLI rows of {s['service']})"
        )
        body.append(
            _mark(
                "rect",
                cls,
                f"x='{x0:.1f}' y='{base - h:.1f}' width='{bar_w:.1f}' height='{h:.1f}'",
                tip,
            )
        )
    body.append(f"<text x='{left}' y='{base + 16}'>{_when(t0)} UTC</text>")
    body.append(f"<text x='{width - right - 150}' y='{base + 16}'>{_when(t1)} UTC</text>")
    return _svg("burn", width, height, "".join(body), len(series), f"burn rate of {s['id']}")


def _vendor_chart(vendors: Sequence[Mapping[str, Any]]) -> str:
    width, left, bar_w, row = 760, 160, 420, 44
    height = 34 + row * len(vendors)
    body = [
        "<rect class='bar' x='160' y='6' width='12' height='12'/>"
        "<text x='178' y='16'>share of spend</text>"
        "<rect class='bar2' x='320' y='6' width='12' height='12'/>"
        "<text x='338' y='16'>share of unavailability (worst service or job)</text>"
    ]
    for i, v in enumerate(vendors):
        y = 28 + i * row
        spend = float(v["max_spend_share"])
        fails = float(v["max_unavailability_share"])
        body.append(f"<text x='8' y='{y + 20}'>{esc(str(v['vendor']))}</text>")
        body.append(
            _mark(
                "rect",
                "bar",
                f"x='{left}' y='{y + 2}' width='{max(2.0, bar_w * spend):.1f}' height='16'",
                f"{v['vendor']}: {100 * spend:.1f}% of the spend (spend log)",
            )
        )
        body.append(
            _mark(
                "rect",
                "bar2",
                f"x='{left}' y='{y + 20}' width='{max(2.0, bar_w * fails):.1f}' height='16'",
                f"{v['vendor']}: {100 * fails:.1f}% of the unavailability (map cut sets)",
            )
        )
        body.append(
            f"<text x='{left + bar_w + 10}' y='{y + 22}'>{100 * spend:.0f}% | {100 * fails:.0f}%"
            + (" SPOF" if v["spof"] else "")
            + "</text>"
        )
    return _svg("vendors", width, height, "".join(body), 2 * len(vendors), "vendor concentration")


# ---------------------------------------------------------------- the page


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class='{cls}'><tr>{th}</tr>{body}</table>"


def _drills_html(drills: Sequence[Mapping[str, Any]]) -> str:
    if not drills:
        return "<p>No drill has run in this state directory yet (`bastion drill run`).</p>"
    out = [
        _table(
            ("drill", "suite / scenario", "started", "verdict", "detect", "RTO", "events"),
            (
                (
                    f"<a href='#{esc(d['id'])}'>{esc(d['title'])}</a>",
                    esc(" / ".join(x for x in (d["suite"], d["scenario"]) if x) or "-"),
                    esc(str(d["started_at"])),
                    f"<span class='{esc(d['verdict'])}'>{esc(d['verdict'])}</span>",
                    esc(_secs(d["measurements"].get("time_to_detect_s"))),
                    esc(_secs(d["measurements"].get("rto_s"))),
                    esc(_ids_text(d["event_ids"], 4)),
                )
                for d in drills
            ),
        )
    ]
    for d in drills:
        m = d["measurements"]
        facts = ", ".join(
            f"{k} {v}"
            for k, v in m.items()
            if k in ("time_to_detect_s", "rto_s", "requests_failed", "steps_lost", "files_lost")
            and v is not None
        )
        cost = d.get("cost") or {}
        if cost.get("total"):
            spent = ", ".join(
                f"{v:.4f} {c} (extra {float((cost.get('extra') or {}).get(c, 0.0)):.4f} from "
                "retries, hedges, fallbacks, shadows)"
                for c, v in cost["total"].items()
            )
            facts = f"{facts}. The fault cost {spent}" if facts else f"The fault cost {spent}"
        problems = "".join(f"<li>{esc(p)}</li>" for p in d["problems"])
        out.append(
            f"<h3 id='{esc(d['id'])}'>{esc(d['title'])}: "
            f"<span class='{esc(d['verdict'])}'>{esc(d['verdict'])}</span></h3>"
            f"<p>started {esc(str(d['started_at']))}, {d['duration_s']:.2f} s; status "
            f"{esc(str(d['status']))}, exit {esc(str(d['exit_code']))}. {esc(facts)}</p>"
            + (f"<ul>{problems}</ul>" if problems else "")
            + _drill_chart(d)
            + f"<p class='src'>from events {esc(_ids_text(d['event_ids']))}"
            + (f"; {d['other_events']} more system events not drawn" if d["other_events"] else "")
            + "</p>"
        )
    return "".join(out)


def _secs(x: Any) -> str:
    return "-" if x is None else f"{float(x):.2f} s"


def _slos_html(slos: Sequence[Mapping[str, Any]]) -> str:
    if not slos:
        return "<p>The manifest declares no SLO (`slos:`).</p>"
    out = [
        _table(
            ("SLO", "service", "target", "window", "SLI", "budget left", "state"),
            (
                (
                    esc(s["id"]),
                    esc(s["service"]),
                    f"{100 * s['target']:g}%",
                    esc(s["window"]),
                    _pct(s["sli"]),
                    f"{100 * s['budget_remaining']:.1f}%",
                    "<span class='bad'>PAGE</span>"
                    if s["paging"]
                    else "<span class='warning'>no data</span>"
                    if s["nodata"]
                    else "<span class='bad'>over budget</span>"
                    if s["budget_spent"] > 1
                    else "<span class='ok'>ok</span>",
                )
                for s in slos
            ),
        )
    ]
    for s in slos:
        out.append(f"<h3>{esc(s['id'])}: burn rate</h3>")
        if s["series"]:
            out.append(_burn_chart(s))
            src = s["sli_source"]
            out.append(
                f"<p class='src'>from the SLI rows of {esc(s['service'])}, "
                f"{esc(_when(src['from']))} to {esc(_when(src['to']))} UTC; alerts: events "
                f"{esc(_ids_text(s['event_ids']))}</p>"
            )
        else:
            out.append("<p>No SLI data recorded for this service yet: nothing to chart.</p>")
    return "".join(out)


def _findings_html(findings: Sequence[Mapping[str, Any]]) -> str:
    if not findings:
        return "<p>No finding.</p>"

    def retest(r: Mapping[str, Any]) -> str:
        if r["drill"] is None:
            return esc(r["advice"] or "none")
        return (
            f"<a href='#{esc(r['drill'])}'>{esc(r['drill'])}</a>: "
            f"<span class='{esc(str(r['verdict']))}'>{esc(str(r['verdict']))}</span>"
        )

    return _table(
        ("finding", "severity", "what", "remediation", "retest", "events"),
        (
            (
                esc(f["id"]),
                f"<span class='{esc(f['severity'])}'>{esc(f['severity'])}</span>",
                esc(f["message"]),
                esc(f["remediation"] or "-"),
                retest(f["retest"]),
                esc(_ids_text(f["event_ids"], 4)),
            )
            for f in findings
        ),
        "findings",
    )


def _outcomes_html(o: Mapping[str, Any]) -> str:
    d = o["dora"]

    def hours(x: float | None) -> str:
        return "-" if x is None else f"{x / 3600:.1f} h"

    rows = [
        ("promotions", f"{d['promotions']} ({d['promotions_per_week']:.2f} a week)"),
        ("lead time (median)", hours(d["lead_time_s"])),
        ("change failure rate", f"{_pct(d['change_failure_rate'])} ({d['rollbacks']} rollbacks)"),
        ("time to restore (median)", hours(d["time_to_restore_s"])),
    ]
    out = [
        f"<p>The last {o['days']} days. DORA's four keys for models, from events "
        f"{esc(_ids_text(d['event_ids']))}.</p>",
        _table(("key", "value"), ((esc(a), esc(b)) for a, b in rows)),
    ]
    if o["trust"]:
        out.append(
            _table(
                ("service", "requests", "failed", "unanswered", "fallback tier", "wrong answers"),
                (
                    (
                        esc(t["service"]),
                        str(t["requests"]),
                        _pct(t["failed"]),
                        _pct(t["unanswered"]),
                        _pct(t["fallback"]),
                        _pct(t["wrong"]),
                    )
                    for t in o["trust"]
                ),
            )
        )
    if o["ages"]:
        out.append(
            _table(
                ("what", "kind", "age", "event"),
                (
                    (esc(a["name"]), esc(a["kind"]), hours(a["age_s"]), f"#{a['event_id']}")
                    for a in o["ages"]
                ),
            )
        )
    if o["goodput"]:
        out.append(
            _table(
                ("job", "run", "goodput", "down", "steps redone"),
                (
                    (
                        esc(g["job"]),
                        esc(g["run_id"]),
                        _pct(g["goodput"]),
                        f"{g['down_s']:.1f} s",
                        f"{g['steps_redone']} of {g['steps']}",
                    )
                    for g in o["goodput"]
                ),
            )
        )
    return "".join(out)


def _vendors_html(doc: Mapping[str, Any]) -> str:
    vendors = doc["map"]["vendors"]
    cost = doc.get("cost")
    spent = "; ".join(f"{v:.4f} {c}" for c, v in cost["total"].items()) if cost else "no spend log"
    if not vendors:
        return f"<p>No vendor in the map. Spend over the last 30 days: {esc(spent)}.</p>"
    rows = (
        (
            esc(v["vendor"]),
            esc(", ".join(f"{100 * s:.1f}% {c}" for c, s in v["spend_share"].items()) or "-"),
            esc(
                ", ".join(f"{100 * s:.1f}% of {t}" for t, s in v["unavailability_share"].items())
                or "-"
            ),
            "<span class='spof'>SPOF</span>" if v["spof"] else "",
            "<span class='warning'>concentrated</span>" if v["concentrated"] else "",
        )
        for v in vendors
    )
    return (
        f"<p>Spend over the last 30 days (spend log): {esc(spent)}. A vendor's share of the "
        "unavailability is the probability of the map's minimal cut sets that involve it.</p>"
        + _vendor_chart(vendors)
        + _table(("vendor", "share of spend", "share of unavailability", "", ""), rows)
    )


def html(doc: Mapping[str, Any]) -> str:
    """The report as one HTML page that needs nothing else."""
    sc = doc["score"]
    parts = sc["parts"]
    part_rows = (
        (
            esc(p["id"]),
            esc(p["title"]),
            f"{p['weight']:g}",
            f"{p['passed']} / {p['total']}",
            f"{100 * p['counted']:.1f}%",
            f"{p['points']:g}",
            f"<span class='{'stale' if p['stale'] or p['evidence'] != 'ok' else ''}'>"
            f"{esc(p['evidence'])}</span>",
            esc(str(p["fresh_at"] or "-"))
            + ("" if p["age_s"] is None else f" ({p['age_s'] / 3600:.1f} h old)"),
        )
        for p in parts
    )
    frameworks = _table(
        (
            "part",
            "evidence",
            "DORA Art. 24",
            "DORA Art. 25",
            "NIST AI RMF MEASURE 2.7",
            "ISO 22301 §8.5",
        ),
        (
            (
                esc(r["part"]),
                esc(r["evidence"]),
                esc(r["dora_art_24"]),
                esc(r["dora_art_25"]),
                esc(r["nist_ai_rmf_measure_2_7"]),
                esc(r["iso_22301_8_5"]),
            )
            for r in doc["frameworks"]
        ),
        "frameworks",
    )
    ev = doc["evidence"]
    tops = _table(
        ("service / job", "availability", "objective", "SPOFs"),
        (
            (
                esc(t["id"]),
                f"{t['availability']:.6f}",
                esc(str(t["objective"] or "-")),
                esc(", ".join(t["spofs"]) or "none"),
            )
            for t in doc["map"]["tops"]
        ),
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<title>{esc(doc["system"])}: readiness report</title>
<style>{_STYLE}</style></head>
<body data-score="{sc["value"]}">
<h1>{esc(doc["system"])}: readiness report</h1>
<p>Generated {esc(str(doc["generated_at"]))} from {ev["events"]} events (last id
#{ev["last_event_id"]}); manifest BLAKE3 {esc(str(ev["manifest_blake3"])[:16])}...
Evidence older than {doc["max_age_s"] / 86400:g} days counts as 0. Signed with the vault key
(report.sig; check with <code>bastion report verify</code>).</p>
<p class="score">Score {sc["value"]:g} / 100</p>
{_score_chart(parts)}
{_table(_PART_HEAD, part_rows)}
<h2>Findings, remediation and retest</h2>
{_findings_html(doc["findings"])}
<h2>Drills</h2>
{_drills_html(doc["drills"])}
<h2>SLOs and error budgets</h2>
{_slos_html(doc["slos"])}
<h2>Dependency map</h2>
{tops}
<h2>Concentration per vendor: spend beside availability</h2>
{_vendors_html(doc)}
<h2>Outcome metrics</h2>
{_outcomes_html(doc["outcomes"])}
<h2>Frameworks</h2>
<p>What each part is evidence towards; an assessor weighs it, the report claims no
compliance.</p>
{frameworks}
</body></html>
"""


# ---------------------------------------------------------------- JUnit


def _case(name: str, classname: str, *, failure: str | None = None, error: str | None = None,
          skipped: str | None = None, out: str = "") -> str:  # fmt: skip
    inner = ""
    if skipped is not None:
        inner += f"<skipped message={quoteattr(skipped)}/>"
    if failure is not None:
        inner += f"<failure message={quoteattr(failure)}>{esc(failure)}</failure>"
    if error is not None:
        inner += f"<error message={quoteattr(error)}>{esc(error)}</error>"
    if out:
        inner += f"<system-out>{esc(out)}</system-out>"
    return f"<testcase classname={quoteattr(classname)} name={quoteattr(name)}>{inner}</testcase>"


def junit(doc: Mapping[str, Any], *, min_score: float | None = None) -> str:
    """JUnit XML for a CI gate: a case per drill (errored, aborted and unfinished runs are
    errors, failed ones failures), per SLO, per failing map finding, and the score
    (failing under ``min_score``, by default the document's ``min_score``)."""
    if min_score is None:
        min_score = doc.get("min_score")
    cases = []
    for d in doc["drills"]:
        ids = f"events {_ids_text(d['event_ids'])}"
        if d["verdict"] == "pass":
            cases.append(_case(d["title"], "bastion.drill", out=ids))
        elif d["verdict"] == "skipped":
            why = "; ".join(d["problems"]) or "does not apply"
            cases.append(_case(d["title"], "bastion.drill", skipped=why))
        elif d["verdict"] == "fail":
            cases.append(
                _case(
                    d["title"], "bastion.drill", failure="; ".join(d["problems"]) or "fail", out=ids
                )
            )
        else:
            cases.append(
                _case(
                    d["title"],
                    "bastion.drill",
                    error=f"{d['verdict']}: "
                    + ("; ".join(d["problems"]) or "the drill did not run to its end"),
                    out=ids,
                )
            )
    for s in doc["slos"]:
        bad = "pages" if s["paging"] else "has no data" if s["nodata"] else None
        if bad is None and s["budget_spent"] > 1:
            bad = "spent more than its error budget"
        cases.append(
            _case(s["id"], "bastion.slo", failure=None if bad is None else f"{s['id']} {bad}")
        )
    cases.extend(
        _case(f["subject"], "bastion.map", failure=f["message"], out=f["remediation"] or "")
        for f in doc["findings"]
        if f["source"] == "map" and f["severity"] in ("breach", "spof")
    )
    value = doc["score"]["value"]
    cases.append(
        _case(
            "score",
            "bastion.readiness",
            failure=None
            if min_score is None or value >= min_score
            else f"score {value:g} is below the minimum {min_score:g}",
            out=f"score {value:g} / 100",
        )
    )
    failures = sum("<failure" in c for c in cases)
    errors = sum("<error" in c for c in cases)
    skipped = sum("<skipped" in c for c in cases)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<testsuites><testsuite name={quoteattr('bastion.readiness ' + doc['system'])} "
        f"tests='{len(cases)}' failures='{failures}' errors='{errors}' skipped='{skipped}' "
        f"timestamp={quoteattr(str(doc['generated_at']))}>"
        + "".join(cases)
        + "</testsuite></testsuites>\n"
    )
