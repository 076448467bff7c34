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

function backendState(b) {
  if (b.needs_probe) return state(b.down_reason ? `ejected: ${b.down_reason}` : "waiting for probe", "bad");
  if (b.breaker === "open") return state("breaker open", "bad");
  if (b.breaker === "half_open") return state("half open", "warn");
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
  return out;
};

views.jobs = async () => {
  const doc = await api("/api/jobs");
  return [
    el("h2", {}, "Jobs"),
    table(
      ["job", "kind", "state"],
      doc.jobs.map((j) => [j.id, j.kind, j.status.state || j.status.status || j.status.error || "idle"]),
      "jobs",
    ),
  ];
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
  ];
};

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

views.drills = async () => {
  const doc = await api("/api/drills");
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
  ];
};

async function render() {
  const route = (location.hash.replace(/^#\//, "").split("?")[0] || "services");
  const view = views[route] || views.services;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === `#/${route}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  try {
    const nodes = await view();
    const focused = document.activeElement && main.contains(document.activeElement) ? document.activeElement.name : null;
    // a live re-render of the same page keeps what the user is typing
    const typed = {};
    if (route === current) for (const input of main.querySelectorAll("input[name]")) typed[input.name] = input.value;
    main.replaceChildren(...nodes);
    for (const [name, value] of Object.entries(typed)) {
      const input = main.querySelector(`input[name="${name}"]`);
      if (input) input.value = value;
    }
    if (focused) {
      const again = main.querySelector(`[name="${focused}"]`);
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
  // the first meaningful paint: the first view with its data (benchmarks/dashboard.py)
  if (!performance.getEntriesByName("bastion-loaded").length) performance.mark("bastion-loaded");
}

function schedule() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(render, 150);
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
  schedule();
}

start();
