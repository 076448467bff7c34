// The Bastion dashboard: plain JavaScript, no build step, no third-party code. Every view
// is a read of the control API (/api/openapi.json); updates arrive over SSE
// (/api/events/stream) and re-render the view on screen, without a reload. Every state is
// shown as text and colour.
"use strict";

const main = document.getElementById("main");
const live = document.getElementById("live");
const views = {};
let current = "";
let refreshTimer = null;
let chartTimer = null;
const CHART_VIEWS = new Set(["services", "slos", "jobs"]);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function state(text, tone) {
  return el("span", { class: `state ${tone}` }, text);
}

function table(headers, rows, label) {
  return el(
    "table",
    { "aria-label": label },
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c))))),
  );
}

async function api(path) {
  const resp = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.error ? body.error.message : `HTTP ${resp.status}`);
  return body;
}

// Ejections seen on the live stream, by backend: one restarted within a second is back
// before the next render, and its row would never have shown it; for two minutes the row
// says it was out, and why.
const recentEjections = {};
const RECENT_MS = 120000;

function backendState(b) {
  if (b.needs_probe) return state(b.down_reason ? `ejected: ${b.down_reason}` : "waiting for probe", "bad");
  if (b.breaker === "open") return state("breaker open", "bad");
  if (b.breaker === "half_open") return state("half open", "warn");
  const out = recentEjections[`${b.service}/${b.name}`];
  if (out && Date.now() - out.at < RECENT_MS) {
    return state(`healthy; ejected at ${out.clock}${out.reason ? ` (${out.reason})` : ""}, back since`, "warn");
  }
  return state("healthy", "ok");
}

function fmt(x, digits = 2) {
  return typeof x === "number" ? x.toFixed(digits) : x === null || x === undefined ? "" : String(x);
}

views.map = async () => {
  const doc = await api("/api/map");
  const rows = doc.nodes.map((n) => [
    el("a", { href: `#/events?subject=${encodeURIComponent(n.id)}` }, n.id),
    n.kind,
    n.spof ? state("single point of failure", "bad") : state("redundant", "ok"),
    fmt(n.availability, 4),
  ]);
  return [
    el("h2", {}, "Dependency map"),
    el("p", {}, `${doc.nodes.length} components; ${doc.nodes.filter((n) => n.spof).length} single points of failure.`),
    table(["component", "kind", "state", "availability"], rows, "components"),
  ];
};


// -- charts: inline SVG drawn here (no library, no build step). Each chart is a figure
// with a title, a text description (aria-describedby), colour *and* dash pattern per
// series with a text legend, marks (ejections, rollouts, restarts) as labelled lines,
// keyboard reading (focus the chart, then arrow keys, Home, End) and a table fallback.
const SVGNS = "http://www.w3.org/2000/svg";
const PALETTE = [
  ["#1d4ed8", ""],
  ["#b45309", "6 3"],
  ["#047857", "2 3"],
  ["#7c3aed", "8 3 2 3"],
  ["#be123c", "1 2"],
];

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function clock(t) {
  return new Date(t * 1000).toISOString().slice(11, 19);
}

// opts: {key, title, unit, start, end, series: [{name, points: [[t, y]]}], marks: [{t, label}],
//        lines: [{y, label}], yMax, format}
function chart(opts) {
  const W = 640, H = 180, L = 52, R = 12, T = 12, B = 28;
  const format = opts.format || ((y) => fmt(y, 1));
  const all = opts.series.flatMap((s) => s.points.map((p) => p[1])).filter((y) => y !== null);
  const lines = opts.lines || [];
  const yMax = Math.max(opts.yMax || 0, ...all, ...lines.map((l) => l.y), 1e-9) * 1.1;
  const x = (t) => L + ((t - opts.start) / Math.max(1, opts.end - opts.start)) * (W - L - R);
  const y = (v) => T + (1 - v / yMax) * (H - T - B);
  const id = `chart-${opts.key.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  const count = opts.series.reduce((n, s) => n + s.points.length, 0);
  const summary = opts.series.length
    ? opts.series
        .map((s) => {
          const ys = s.points.map((p) => p[1]).filter((v) => v !== null);
          const last = ys.length ? format(ys[ys.length - 1]) : "no data";
          const peak = ys.length ? format(Math.max(...ys)) : "no data";
          return `${s.name}: latest ${last}, peak ${peak} ${opts.unit}`;
        })
        .join("; ")
    : "no data in this window";
  const markText = (opts.marks || []).map((m) => `${clock(m.t)} ${m.label}`).join("; ");
  const desc = `${opts.title}, ${clock(opts.start)} to ${clock(opts.end)} UTC. ${summary}.${markText ? ` Marks: ${markText}.` : ""}`;
  const plot = svg(
    "svg",
    { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": `${id}-t`, "aria-describedby": `${id}-d`, "data-points": String(count), "data-marks": String((opts.marks || []).length), class: "chart" },
    svg("title", { id: `${id}-t` }, opts.title),
    svg("desc", { id: `${id}-d` }, desc),
  );
  // axes and gridlines: 0, half and the top
  for (const v of [0, yMax / 2.2, yMax / 1.1]) {
    plot.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    plot.append(svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end", class: "tick" }, format(v)));
  }
  plot.append(svg("text", { x: L, y: H - 8, class: "tick" }, clock(opts.start)));
  plot.append(svg("text", { x: W - R, y: H - 8, "text-anchor": "end", class: "tick" }, `${clock(opts.end)} UTC`));
  for (const l of lines) {
    plot.append(svg("line", { x1: L, x2: W - R, y1: y(l.y), y2: y(l.y), class: "threshold" }));
    plot.append(svg("text", { x: W - R - 2, y: y(l.y) - 3, "text-anchor": "end", class: "tick" }, l.label));
  }
  for (const m of opts.marks || []) {
    const mx = x(m.t);
    plot.append(svg("line", { x1: mx, x2: mx, y1: T, y2: H - B, class: `mark ${m.tone || ""}` }));
    // a mark near the right edge has its label on its left, so it is not cut off
    const left = mx > L + 0.6 * (W - L - R);
    plot.append(svg("text", { x: left ? mx - 3 : mx + 3, y: T + 10, "text-anchor": left ? "end" : "start", class: `mark-label ${m.tone || ""}` }, m.label));
  }
  opts.series.forEach((s, i) => {
    const [colour, dash] = PALETTE[i % PALETTE.length];
    const pts = s.points.filter((p) => p[1] !== null);
    if (pts.length === 1) plot.append(svg("circle", { cx: x(pts[0][0]), cy: y(pts[0][1]), r: 3, fill: colour }));
    if (pts.length > 1)
      plot.append(
        svg("polyline", {
          points: pts.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "),
          fill: "none",
          stroke: colour,
          "stroke-width": 2,
          "stroke-dasharray": dash,
          "data-series": s.name,
        }),
      );
  });
  const cursor = svg("line", { x1: 0, x2: 0, y1: T, y2: H - B, class: "cursor", visibility: "hidden" });
  plot.append(cursor);
  const legend = el(
    "ul",
    { class: "legend" },
    opts.series.map((s, i) => {
      const [colour, dash] = PALETTE[i % PALETTE.length];
      const key = svg("svg", { width: 28, height: 10, "aria-hidden": "true" }, svg("line", { x1: 0, x2: 28, y1: 5, y2: 5, stroke: colour, "stroke-width": 3, "stroke-dasharray": dash }));
      return el("li", {}, key, ` ${s.name}`);
    }),
  );
  // keyboard: every (time, series) point in time order
  const flat = opts.series.flatMap((s) => s.points.filter((p) => p[1] !== null).map((p) => ({ t: p[0], v: p[1], name: s.name })));
  flat.sort((a, b) => a.t - b.t);
  const readout = el("p", { class: "readout", "aria-live": "polite" }, flat.length ? "Focus the chart and use the arrow keys to read its points." : "No data in this window yet.");
  let at = -1;
  const show = () => {
    const p = flat[at];
    cursor.setAttribute("x1", x(p.t));
    cursor.setAttribute("x2", x(p.t));
    cursor.setAttribute("visibility", "visible");
    readout.textContent = `${clock(p.t)} UTC, ${p.name}: ${format(p.v)} ${opts.unit}`;
  };
  const figure = el(
    "figure",
    {
      class: "figure",
      tabindex: "0",
      "data-focus-key": id,
      "data-chart": opts.key,
      "aria-label": `${opts.title} (chart; arrow keys read its points)`,
      onkeydown: (ev) => {
        if (!flat.length) return;
        const moves = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: flat.length - 1 };
        if (!(ev.key in moves)) return;
        ev.preventDefault();
        at = Math.min(flat.length - 1, Math.max(0, at < 0 && ev.key === "ArrowLeft" ? flat.length - 1 : moves[ev.key]));
        show();
      },
    },
    el("figcaption", {}, opts.title),
    plot,
    legend,
    readout,
  );
  const rows = flat.map((p) => [`${clock(p.t)}`, p.name, format(p.v)]);
  for (const m of opts.marks || []) rows.push([clock(m.t), "mark", m.label]);
  rows.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  figure.append(el("details", {}, el("summary", {}, "Data table"), table(["time (UTC)", "series", `value (${opts.unit})`], rows.slice(-300), `${opts.title}: data`)));
  return figure;
}

function markOf(m) {
  const d = m.data || {};
  if (m.kind === "serve.backend.ejected") return { t: m.t, label: `ejected ${d.backend || ""}`, tone: "bad" };
  const short = m.kind.replace(/^rollout\./, "rollout ");
  return { t: m.t, label: `${short}${d.weight !== undefined ? ` ${d.weight}%` : ""}`, tone: m.kind.includes("rolled_back") || m.kind.includes("aborted") ? "bad" : "warn" };
}

async function serviceCharts(name) {
  const doc = await api(`/api/services/${encodeURIComponent(name)}/series?window=15m`);
  const marks = doc.marks.map(markOf);
  const common = { start: doc.start, end: doc.end, marks };
  const rollouts = doc.marks.filter((m) => m.kind.startsWith("rollout."));
  return el(
    "section",
    { "aria-label": `${name} charts`, class: "charts" },
    el("h3", {}, `${name}: the last 15 minutes`),
    chart({
      ...common,
      key: `latency:${name}`,
      title: `${name}: p99 latency per backend`,
      unit: "ms",
      format: (v) => fmt(v, 0),
      series: doc.backends.map((b) => ({ name: b.name, points: b.points.map((p) => [p.t, p.p99_ms]) })),
    }),
    chart({
      ...common,
      key: `errors:${name}`,
      title: `${name}: errors per backend (5xx and 429, share of requests)`,
      unit: "%",
      yMax: 1,
      series: doc.backends.map((b) => ({ name: b.name, points: b.points.map((p) => [p.t, 100 * p.error_rate]) })),
    }),
    el("h3", {}, `${name}: rollouts`),
    rollouts.length
      ? table(
          ["time (UTC)", "event", "details"],
          rollouts.map((m) => [clock(m.t), m.kind, JSON.stringify(m.data).slice(0, 160)]),
          `${name} rollouts`,
        )
      : el("p", {}, "No rollout in this window."),
  );
}

views.services = async () => {
  const [svc, be] = await Promise.all([api("/api/services"), api("/api/backends")]);
  const out = [el("h2", {}, "Services")];
  out.push(
    table(
      ["service", "listen", "state", "restarts"],
      svc.services.map((s) => [
        s.name,
        s.listen,
        s.running ? state("running", "ok") : state("not answering", "bad"),
        s.child ? s.child.restarts : "",
      ]),
      "services",
    ),
  );
  out.push(el("h2", {}, "Backends"));
  out.push(
    table(
      ["service", "backend", "tier", "arm", "state", "in flight", "latency ms"],
      be.backends.map((b) => [
        b.service,
        el("span", { "data-backend": b.name }, b.name),
        b.tier,
        b.arm,
        el("span", { "data-backend-state": b.name }, backendState(b)),
        b.outstanding,
        fmt(b.latency_ewma_ms),
      ]),
      "backends",
    ),
  );
  out.push(el("h2", {}, "Latency, errors and rollouts"));
  out.push(...(await Promise.all(svc.services.map((s) => serviceCharts(s.name)))));
  return out;
};

function jobState(j) {
  const st = j.status.state || j.status.status || (j.status.error ? "error" : "idle");
  const tone = { running: "ok", succeeded: "ok", passed: "ok", failed: "bad", error: "bad", stopped: "muted" }[st] || "muted";
  return state(st, tone);
}

views.jobs = async () => {
  const doc = await api("/api/jobs");
  const train = doc.jobs.filter((j) => j.kind === "train");
  const out = [
    el("h2", {}, "Training jobs"),
    table(
      ["job", "state", "step", "restarts", "checkpoints", "last checkpoint", "steps lost"],
      train.map((j) => {
        const st = j.status;
        return [
          j.id,
          jobState(j),
          el("span", { "data-job-step": j.id }, st.last_checkpoint ? st.last_checkpoint.step : ""),
          el("span", { "data-job-restarts": j.id }, st.restarts ?? ""),
          st.checkpoints ?? "",
          st.last_checkpoint ? `step ${st.last_checkpoint.step}` : "none yet",
          st.steps_lost ?? "",
        ];
      }),
      "training jobs",
    ),
  ];
  for (const j of train) {
    const s = await api(`/api/jobs/${encodeURIComponent(j.id)}/series`);
    const ts = [...s.progress.map((p) => p.t), ...s.marks.map((m) => m.t)];
    const now = Date.now() / 1000;
    out.push(
      chart({
        key: `progress:${j.id}`,
        title: `${j.id}: training progress (step at each checkpoint and resume)`,
        unit: "steps",
        format: (v) => fmt(v, 0),
        start: ts.length ? Math.min(...ts) : now - 900,
        end: ts.length ? Math.max(now, ...ts) : now,
        series: [{ name: "step", points: s.progress.map((p) => [p.t, p.step]) }],
        marks: s.marks.map((m) => ({ t: m.t, label: m.kind.replace(/^train\./, ""), tone: m.kind === "train.finished" ? "" : "bad" })),
      }),
    );
  }
  const others = doc.jobs.filter((j) => j.kind !== "train");
  if (others.length) {
    out.push(el("h2", {}, "Other jobs"));
    out.push(table(["job", "kind", "state"], others.map((j) => [j.id, j.kind, jobState(j)]), "other jobs"));
  }
  return out;
};

views.vault = async () => {
  const doc = await api("/api/vault");
  if (!doc.configured) return [el("h2", {}, "Vault"), el("p", {}, doc.error || "no vault")];
  return [
    el("h2", {}, "Vault"),
    el("p", {}, "Guard: ", doc.guard.running ? state("guarding", "ok") : state("not running", "muted")),
    table(
      ["replica", "state"],
      doc.replicas.map((r) => [r.url || r.name || JSON.stringify(r), r.available === false ? state("unreachable", "bad") : state("available", "ok")]),
      "replicas",
    ),
    table(["snapshot", "versions", "latest"], doc.snapshots.map((s) => [s.name, s.versions, s.latest]), "snapshots"),
    el("h2", {}, "Scrub"),
    table(
      ["when", "kind", "details"],
      doc.scrub.recent.map((e) => [new Date(e.ts * 1000).toISOString(), e.kind, JSON.stringify(e.data)]),
      "recent scrubs",
    ),
  ];
};

views.slos = async () => {
  const doc = await api("/api/slos");
  return [
    el("h2", {}, "SLOs"),
    table(
      ["SLO", "service", "target", "SLI", "budget left", "state"],
      doc.slos.map((s) => [
        s.id,
        s.service,
        s.target,
        fmt(s.sli, 5),
        s.budget_remaining === null ? "" : `${(100 * s.budget_remaining).toFixed(1)} %`,
        s.nodata ? state("no data", "muted") : s.paging ? state("paging", "bad") : state("within budget", "ok"),
      ]),
      "SLOs",
    ),
    ...(await sloCharts()),
  ];
};

async function sloCharts() {
  const doc = await api("/api/slos/series?window=1h");
  const out = [];
  for (const s of doc.slos) {
    const start = s.points.length ? s.points[0].t : Date.now() / 1000 - 3600;
    const end = s.points.length ? s.points[s.points.length - 1].t : Date.now() / 1000;
    out.push(
      el(
        "section",
        { class: "charts", "aria-label": `${s.id} charts` },
        el("h3", {}, `${s.id} (${s.service}, target ${s.target}): the last hour`),
        chart({
          key: `budget:${s.id}`,
          title: `${s.id}: error budget remaining`,
          unit: "%",
          start,
          end,
          yMax: 100,
          lines: [{ y: 0, label: "budget spent" }],
          series: [{ name: "budget remaining", points: s.points.map((p) => [p.t, 100 * p.budget_remaining]) }],
        }),
        chart({
          key: `burn:${s.id}`,
          title: `${s.id}: burn rate (long window of each alert pair)`,
          unit: "x budget",
          start,
          end,
          lines: s.pairs.filter((p) => p.severity === "page").map((p) => ({ y: p.factor, label: `pages at ${p.factor}x (${p.pair})` })),
          series: s.pairs.map((p) => ({ name: `${p.pair} (${p.severity})`, points: s.points.map((q) => [q.t, q.burns[p.pair] ?? null]) })),
        }),
      ),
    );
  }
  return out;
}

function eventRow(e) {
  const tr = el(
    "tr",
    { "data-kind": e.kind, "data-id": e.id },
    el("td", {}, new Date(e.ts * 1000).toISOString()),
    el("td", {}, e.kind),
    el("td", {}, e.subject),
    el("td", {}, e.segment),
    el("td", {}, JSON.stringify(e.data)),
  );
  return tr;
}

function filters() {
  const q = new URLSearchParams(location.hash.split("?")[1] || "");
  return { kind: q.get("kind") || "", subject: q.get("subject") || "", segment: q.get("segment") || "" };
}

views.events = async () => {
  const f = filters();
  const q = new URLSearchParams({ limit: "100" });
  for (const [k, v] of Object.entries(f)) if (v) q.set(k, v);
  const doc = await api(`/api/events?${q}`);
  const form = el(
    "form",
    {
      onsubmit: (ev) => {
        ev.preventDefault();
        const data = new FormData(ev.target);
        const next = new URLSearchParams();
        for (const [k, v] of data.entries()) if (v) next.set(k, v);
        location.hash = `#/events?${next}`;
      },
    },
    ["kind", "subject", "segment"].map((k) => el("label", {}, k, el("input", { name: k, value: f[k] }))),
    el("button", { type: "submit" }, "Filter"),
  );
  const body = el("tbody", { id: "timeline" }, doc.events.map(eventRow));
  return [
    el("h2", {}, "Event timeline"),
    form,
    el(
      "table",
      { "aria-label": "events" },
      el("thead", {}, el("tr", {}, ["time", "kind", "subject", "segment", "data"].map((h) => el("th", { scope: "col" }, h)))),
      body,
    ),
  ];
};

// what the last start of a drill said: kept across the live re-renders of the page
const drillNote = { text: "", error: false };

// a drill's end is its child's exit, which is not an event: while one runs, re-read
let drillRunning = false;

views.drills = async () => {
  const doc = await api("/api/drills");
  drillRunning = doc.drills.some((d) => d.state === "running");
  const message = el("p", { id: "drill-message", role: "status", class: drillNote.error ? "error" : "" }, drillNote.text);
  const form = el(
    "form",
    {
      onsubmit: async (ev) => {
        ev.preventDefault();
        const data = new FormData(ev.target);
        sessionStorage.setItem("bastion-token", data.get("token"));
        const resp = await fetch("/api/drills", {
          method: "POST",
          headers: { "Content-Type": "application/json", Authorization: `Bearer ${data.get("token")}` },
          body: JSON.stringify({ experiment: data.get("experiment") }),
        });
        const body = await resp.json();
        drillNote.text = resp.ok ? `started ${body.job.id}` : `refused: ${body.error.message}`;
        drillNote.error = !resp.ok;
        message.textContent = drillNote.text;
        message.className = resp.ok ? "" : "error";
        schedule();
      },
    },
    el("label", {}, "experiment", el("input", { name: "experiment", required: "" })),
    el("label", {}, "token", el("input", { name: "token", type: "password", required: "", value: sessionStorage.getItem("bastion-token") || "" })),
    el("button", { type: "submit" }, "Start drill"),
  );
  const [segs, reps] = await Promise.all([api("/api/segments"), api("/api/reports")]);
  const act = (label, path, body) =>
    el(
      "button",
      {
        type: "button",
        "data-action": path,
        onclick: async () => {
          const token = (main.querySelector('input[name="token"]') || {}).value || sessionStorage.getItem("bastion-token") || "";
          sessionStorage.setItem("bastion-token", token);
          const resp = await fetch(path, {
            method: "POST",
            headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
            body: JSON.stringify(body),
          });
          const got = await resp.json();
          drillNote.text = resp.ok ? `${label}: done` : `${label} refused: ${got.error.message}`;
          drillNote.error = !resp.ok;
          schedule();
        },
      },
      label,
    );
  return [
    el("h2", {}, "Drills"),
    form,
    message,
    table(
      ["drill", "experiment", "state", "result"],
      doc.drills.map((d) => [
        d.id,
        d.experiment,
        el(
          "span",
          { "data-drill-state": d.id },
          d.state === "running" ? state("running", "warn") : d.state === "passed" ? state("passed", "ok") : state("failed", "bad"),
        ),
        d.result ? JSON.stringify(d.result).slice(0, 200) : "",
      ]),
      "drills",
    ),
    el("h2", {}, "Segments"),
    segs.segments.length
      ? table(
          ["segment", "state", "action"],
          segs.segments.map((g) => [
            g.name,
            el("span", { "data-segment-state": g.name }, g.quarantined ? state("quarantined", "bad") : state("in service", "ok")),
            g.quarantined
              ? act(`Release ${g.name}`, `/api/segments/${encodeURIComponent(g.name)}/release`, {})
              : act(`Quarantine ${g.name}`, `/api/segments/${encodeURIComponent(g.name)}/quarantine`, {}),
          ]),
          "segments",
        )
      : el("p", {}, "No segments in the manifest."),
    el("h2", {}, "Readiness reports"),
    el("p", {}, act("Write a readiness report", "/api/reports", {})),
    reps.reports.length
      ? table(
          ["report", "generated", "score", "signature", "drills", "findings"],
          reps.reports.map((r) => [
            el("span", { "data-report": r.id }, r.id),
            r.generated_at || "",
            r.score === null || r.score === undefined ? "" : `${fmt(r.score, 1)} / 100`,
            r.verified === "verified" ? state("verified", "ok") : state(r.verified || r.error || "unknown", "bad"),
            r.drills ?? "",
            r.findings ?? "",
          ]),
          "readiness reports",
        )
      : el("p", {}, "No readiness report yet."),
  ];
};

async function render() {
  lastRender = performance.now();
  const route = (location.hash.replace(/^#\//, "").split("?")[0] || "services");
  const view = views[route] || views.services;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === `#/${route}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  try {
    const nodes = await view();
    const active = document.activeElement && main.contains(document.activeElement) ? document.activeElement : null;
    const focused = active ? active.name || active.getAttribute("data-focus-key") : null;
    // a live re-render of the same page keeps what the user is typing
    const typed = {};
    if (route === current) for (const input of main.querySelectorAll("input[name]")) typed[input.name] = input.value;
    main.replaceChildren(...nodes);
    for (const [name, value] of Object.entries(typed)) {
      const input = main.querySelector(`input[name="${name}"]`);
      if (input) input.value = value;
    }
    if (focused) {
      const again = main.querySelector(`[name="${focused}"], [data-focus-key="${focused}"]`);
      if (again) again.focus();
    }
    if (route !== current) {
      current = route;
      main.focus();
    }
  } catch (err) {
    main.replaceChildren(el("p", { class: "error", role: "alert" }, `could not load: ${err.message}`));
  }
  main.setAttribute("data-loaded", route);
  main.setAttribute("data-renders", String(Number(main.getAttribute("data-renders") || 0) + 1));
  // the SLI rows behind the charts are not events: a page with charts also re-reads
  // them every few seconds while it is open
  clearTimeout(chartTimer);
  if (CHART_VIEWS.has(route)) chartTimer = setTimeout(render, 5000);
  else if (route === "drills" && drillRunning) chartTimer = setTimeout(render, 1000);
  // the first meaningful paint: the first view with its data (benchmarks/dashboard.py)
  if (!performance.getEntriesByName("bastion-loaded").length) performance.mark("bastion-loaded");
}

let lastRender = 0;

function schedule(urgent = false) {
  // a burst of events is one re-render; a page with charts re-reads at most every 2 s
  // (its series are heavier reads than a table, and an event storm must not become a
  // storm of them), except for a change of state a person must see (``urgent``: a
  // backend ejected or back, a breaker moving), which a replica restarted within a
  // second would otherwise leave unseen between two renders
  clearTimeout(refreshTimer);
  const gap = CHART_VIEWS.has(current) && !urgent ? 2000 : 150;
  const wait = Math.max(150, lastRender + gap - performance.now());
  refreshTimer = setTimeout(render, wait);
}

async function start() {
  try {
    const sys = await api("/api/system");
    document.getElementById("system").textContent = `Bastion: ${sys.system}`;
    document.title = `Bastion: ${sys.system}`;
  } catch (err) {
    live.textContent = `API error: ${err.message}`;
  }
  window.addEventListener("hashchange", render);
  render();
  streamEvents();
}

function streamEvents() {
  // SSE events carry their kind as the event type; a generic listener needs each type,
  // so the stream is read with fetch instead, which sees every event.
  const controller = new AbortController();
  (async () => {
    let after = "";
    for (;;) {
      try {
        const resp = await fetch(`/api/events/stream${after ? `?after=${after}` : ""}`, { signal: controller.signal });
        live.textContent = "live";
        const reader = resp.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const data = block.split("\n").find((l) => l.startsWith("data: "));
            if (!data) continue;
            const event = JSON.parse(data.slice(6));
            after = String(event.id);
            onEvent(event);
          }
        }
      } catch (err) {
        live.textContent = "reconnecting…";
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  })();
}

function onEvent(event) {
  if (event.kind === "serve.backend.ejected" && event.data && event.data.backend) {
    recentEjections[`${event.subject}/${event.data.backend}`] = {
      at: Date.now(),
      clock: new Date(event.ts * 1000).toISOString().slice(11, 19),
      reason: event.data.reason || "",
    };
  }
  const body = document.getElementById("timeline");
  if (body && current === "events") {
    const f = filters();
    const match =
      (!f.kind || f.kind === event.kind || (f.kind.endsWith("*") && event.kind.startsWith(f.kind.slice(0, -1)))) &&
      (!f.subject || f.subject === event.subject) &&
      (!f.segment || f.segment === event.segment);
    if (match) body.prepend(eventRow(event));
    return;
  }
  schedule(event.kind.startsWith("serve.backend.") || event.kind.startsWith("serve.breaker."));
}

start();
