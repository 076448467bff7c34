"""The dependency map's analysis: cut sets, availability, blast radius, importance, checks.

Owns: ``analyze(graph)`` and ``map_manifest(manifest)``, which return a ``MapReport``:
for every service and job (a "top": the top event is that it is unavailable) its minimal
cut sets up to ``max_order``, its exact availability, an importance ranking, and the
findings (SLO breaches, SPOFs, recovery-target problems) that decide the exit code.

Must never: do I/O (the CLI reads the manifest and the event log, and renders), or
report an availability that was computed by series/parallel arithmetic over shared parts.
"""

from __future__ import annotations

import gc
import math
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bastion.manifest import Manifest
from bastion.map._bdd import Probability
from bastion.map._concentration import Spend, VendorShare, vendor_concentration
from bastion.map._cutsets import Family, cut_sets, literal_family
from bastion.map._graph import COMMON_CAUSE_TAGS, Graph
from bastion.map._manifest import VAULT, graph_from_manifest
from bastion.map._tree import DEFAULT_BETA, Event, FaultTree

__all__ = [
    "BlastRadius",
    "CutSet",
    "Finding",
    "Importance",
    "MapReport",
    "TopResult",
    "analyze",
    "map_manifest",
]

IMPORTANCE_LIMIT = 10


def fmt_availability(a: float) -> str:
    """Six decimals, or enough to show the first two significant digits of 1 - a."""
    q = 1.0 - a
    digits = 6 if q <= 0 else max(6, min(15, math.ceil(-math.log10(q)) + 1))
    return f"{a:.{digits}f}"  # exact Birnbaum / Fussell-Vesely for this many events per top


@dataclass(frozen=True)
class CutSet:
    """Events that, failing together, fail the top. ``probability``: all fail (independent)."""

    events: tuple[str, ...]
    probability: float

    @property
    def order(self) -> int:
        return len(self.events)


@dataclass(frozen=True)
class Importance:
    """Birnbaum: how much the top's unavailability moves per unit of this event's.
    Fussell-Vesely: the share of the top's unavailability that involves this event."""

    event: str
    birnbaum: float
    fussell_vesely: float


@dataclass(frozen=True)
class TopResult:
    id: str
    kind: str
    availability: float
    objective: float | None
    slo: str | None
    cut_sets: list[CutSet]
    importance: list[Importance]
    unknown: list[str]

    @property
    def unavailability(self) -> float:
        return 1.0 - self.availability

    @property
    def spofs(self) -> list[str]:
        return [c.events[0] for c in self.cut_sets if c.order == 1]

    @property
    def met(self) -> bool | None:
        return None if self.objective is None else self.availability >= self.objective


@dataclass(frozen=True)
class BlastRadius:
    """What fails (and what only degrades or loses redundancy) when ``event`` fails alone."""

    event: str
    fails: list[str]
    degrades: list[str]


@dataclass(frozen=True)
class Finding:
    severity: str  # "breach" | "spof" | "warning" | "info"
    subject: str
    message: str
    fix: str = ""

    @property
    def failing(self) -> bool:
        return self.severity in ("breach", "spof")


@dataclass
class MapReport:
    system: str
    max_order: int
    beta: float
    graph: Graph
    tree: FaultTree
    tops: list[TopResult]
    families: list[Family]
    findings: list[Finding]
    statistics: dict[str, float] = field(default_factory=dict)
    vendors: list[VendorShare] = field(default_factory=list)
    """Spend and unavailability concentration per vendor (``_concentration``)."""
    _blast: dict[str, BlastRadius] | None = field(default=None, repr=False)

    @property
    def blast_radius(self) -> dict[str, BlastRadius]:
        """What each event takes down on its own; computed on first use (it walks every
        dependent of every failed node, which a CI gate on SPOFs does not need)."""
        if self._blast is None:
            t0 = time.perf_counter()
            self._blast = _blast_radius(self.graph, self.tree, self.families)
            self.statistics["blast_radius_s"] = time.perf_counter() - t0
        return self._blast

    @property
    def ok(self) -> bool:
        return not any(f.failing for f in self.findings)

    @property
    def spofs(self) -> dict[str, list[str]]:
        """Each order-1 cut-set event and the tops it takes down."""
        out: dict[str, list[str]] = {}
        for top in self.tops:
            for event in top.spofs:
                out.setdefault(event, []).append(top.id)
        return out

    def event(self, event_id: str) -> Event:
        return self.tree.events[self.tree.event_index[event_id]]

    def top(self, top_id: str) -> TopResult:
        return next(t for t in self.tops if t.id == top_id)


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    # The analysis allocates millions of small acyclic objects (frozensets, tuples, BDD
    # table entries); the cyclic collector would rescan them again and again, for nothing.
    # Reference counting still frees everything; the collector is restored afterwards.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def map_manifest(
    manifest: Manifest,
    *,
    max_order: int = 2,
    beta: float = DEFAULT_BETA,
    importance: bool = True,
    spend: Spend | None = None,
) -> MapReport:
    """The map of a loaded manifest, checked against its ``slos`` and ``recovery``.

    ``spend``: (service, backend) -> currency -> amount, what the gateways spent (read
    from the spend log by the caller); each vendor's share of it is put beside its share
    of the unavailability (``report.vendors``)."""
    graph = graph_from_manifest(manifest)
    objectives: dict[str, tuple[float, str]] = {}
    for slo in manifest.slos:
        if slo.objective is not None:
            current = objectives.get(slo.service)
            if current is None or slo.objective > current[0]:
                objectives[slo.service] = (slo.objective, slo.id)
    recovery = {name: (t.rto_s, t.rpo_s) for name, t in manifest.recovery.items()}
    report = analyze(
        graph,
        max_order=max_order,
        beta=beta,
        objectives=objectives,
        recovery=recovery,
        importance=importance,
    )
    vendor_of = {
        f"{name}:{b.name}": b.provider or b.name
        for name, svc in manifest.services.items()
        for b in svc.backends
        if b.url is not None
    }
    report.vendors = vendor_concentration(report, vendor_of, spend)
    for v in report.vendors:
        if v.concentrated:
            money = ", ".join(f"{100 * s:.0f}% of the {c} spend" for c, s in v.spend_share.items())
            worst = max(v.unavailability_share.items(), key=lambda kv: kv[1], default=None)
            failing = (
                f"{100 * worst[1]:.0f}% of the unavailability of {worst[0]}"
                if worst is not None
                else "a single point of failure"
            )
            report.findings.append(
                Finding(
                    "warning",
                    f"vendor:{v.vendor}",
                    f"vendor {v.vendor} holds {money} and {failing}"
                    + (" (a SPOF)" if v.spof else "")
                    + ": an outage there is both an incident and the bill",
                    "add a backend on another provider in the same tier, or cap the vendor "
                    "with a budget (scope: vendor) that falls back to a cheaper tier",
                )
            )
    rank = {"breach": 0, "spof": 1, "warning": 2, "info": 3}
    report.findings.sort(key=lambda f: rank[f.severity])
    return report


def analyze(
    graph: Graph,
    *,
    max_order: int = 2,
    beta: float = DEFAULT_BETA,
    objectives: dict[str, tuple[float, str]] | None = None,
    recovery: dict[str, tuple[float, float]] | None = None,
    importance: bool = True,
) -> MapReport:
    """Analyse every top of ``graph``: cut sets up to ``max_order``, exact availability,
    blast radius of every event, importance, and findings against the targets."""
    if max_order < 1:
        raise ValueError(f"max order {max_order} must be at least 1")
    with _no_cyclic_gc():
        return _analyze(graph, max_order, beta, objectives or {}, recovery or {}, importance)


def _analyze(  # noqa: PLR0917 (private; analyze() above is keyword-only)
    graph: Graph,
    max_order: int,
    beta: float,
    objectives: dict[str, tuple[float, str]],
    recovery: dict[str, tuple[float, float]],
    importance: bool,
) -> MapReport:
    t0 = time.perf_counter()
    tree = FaultTree(graph, beta=beta)
    t1 = time.perf_counter()
    families = cut_sets(tree, max_order)
    t2 = time.perf_counter()
    prob = Probability(tree)
    with prob.deep():
        q_top = {top: prob.unavailability(tree.node_literal[top]) for top in graph.tops()}
        t3 = time.perf_counter()
        measures = (
            {top: prob.birnbaum(tree.node_literal[top]) for top in graph.tops()}
            if importance
            else {}
        )
    tops: list[TopResult] = []
    any_unknown = not all(e.known for e in tree.events)
    for top in graph.tops():
        literal = tree.node_literal[top]
        fam = literal_family(tree, families, literal)
        sets = _cut_list(tree, fam)
        imp = _importance(tree, prob, measures[top], q_top[top]) if importance else []
        objective = objectives.get(top)
        tops.append(
            TopResult(
                id=top,
                kind=graph.nodes[top].kind,
                availability=1.0 - q_top[top],
                objective=objective[0] if objective else None,
                slo=objective[1] if objective else None,
                cut_sets=sets,
                importance=imp,
                unknown=_unknown(tree, literal) if any_unknown else [],
            )
        )
    t4 = time.perf_counter()
    report = MapReport(
        system=graph.system,
        max_order=max_order,
        beta=beta,
        graph=graph,
        tree=tree,
        tops=tops,
        families=families,
        findings=[],
    )
    report.findings = _findings(report, recovery)
    report.statistics = {
        "nodes": len(graph.nodes),
        "events": tree.n_events,
        "gates": len(tree.gate_kind),
        "cut_sets": sum(len(t.cut_sets) for t in tops),
        "bdd_nodes": prob.bdd_nodes,
        "modules": prob.modules_solved,
        "bdd_variables": len(prob.levels),
        "tree_s": t1 - t0,
        "cut_sets_s": t2 - t1,
        "availability_s": t3 - t2,
        "importance_s": t4 - t3,
    }
    return report


def _cut_list(tree: FaultTree, fam: Family) -> list[CutSet]:
    out = []
    for s in fam:
        p = 1.0
        for e in s:
            p *= tree.events[e].probability
        out.append(CutSet(tuple(sorted(tree.events[e].id for e in s)), p))
    out.sort(key=lambda c: (c.order, -c.probability, c.events))
    return out


def _support(tree: FaultTree, literal: int) -> set[int]:
    seen: set[int] = set()
    events: set[int] = set()
    stack = [literal]
    while stack:
        lit = stack.pop()
        if lit < tree.n_events:
            events.add(lit)
            continue
        if lit in seen:
            continue
        seen.add(lit)
        stack.extend(tree.gate_children[lit - tree.n_events])
    return events


def _unknown(tree: FaultTree, literal: int) -> list[str]:
    return sorted(tree.events[e].id for e in _support(tree, literal) if not tree.events[e].known)


def _importance(
    tree: FaultTree, prob: Probability, birnbaum: dict[int, float], q_top: float
) -> list[Importance]:
    # Exact for every event under the top, from one pass over its BDD (see
    # Probability.birnbaum). Fussell-Vesely follows because Q is linear in each p_e:
    # Q - Q(e up) = p_e * Birnbaum(e).
    out = []
    for e, ib in birnbaum.items():
        fv = prob.p[e] * ib / q_top if q_top > 0 else 0.0
        out.append(Importance(tree.events[e].id, ib, fv))
    out.sort(key=lambda i: (-i.fussell_vesely, -i.birnbaum, i.event))
    return out[:IMPORTANCE_LIMIT]


def _blast_radius(graph: Graph, tree: FaultTree, families: list[Family]) -> dict[str, BlastRadius]:
    fails: dict[int, list[str]] = {}
    for node_id in graph.order:
        for s in literal_family(tree, families, tree.node_literal[node_id]):
            if len(s) == 1:
                (e,) = s
                fails.setdefault(e, []).append(node_id)
    dependents = graph.dependents()
    out: dict[str, BlastRadius] = {}
    for e, failed in fails.items():
        down = set(failed)
        degraded: list[str] = []
        seen = set(failed)
        queue = deque(failed)
        while queue:
            for parent in dependents[queue.popleft()]:
                if parent not in seen:
                    seen.add(parent)
                    queue.append(parent)
                    if parent not in down:
                        degraded.append(parent)
        event = tree.events[e]
        out[event.id] = BlastRadius(event.id, failed, sorted(degraded))
    return out


def advice(report: MapReport, event_id: str) -> str:
    """What to do about a single point of failure, in the field's words."""
    event = report.event(event_id)
    if event.kind == "common-cause":
        shown = ", ".join(event.members[:4]) + (" ..." if len(event.members) > 4 else "")
        what = {
            "provider": f"{shown} all run on provider {event.value}: move a redundant peer "
            "or a fallback to another provider",
            "region": f"{shown} are all in region {event.value}: add a peer in another region",
            "zone": f"{shown} are all in zone {event.value}: add a peer in another zone",
            "site": f"{shown} are all at site {event.value}: add a peer at another site",
            "account": f"{shown} are all in account {event.value}: add a peer in another one",
            "endpoint": f"{shown} are all behind the S3 endpoint {event.value}: put a "
            "replica on another provider's endpoint, or a local one",
            "host": f"{shown} share one machine: put a vault replica and a backend replica on "
            "another host, or add a remote backend",
        }
        return what.get(event.tag or "", "spread the members across failure domains")
    node_id = event.node or event_id
    node = report.graph.nodes.get(node_id)
    if node is None:
        return "add redundancy"
    if "#" in node_id:
        return "raise the backend's replicas.min to 2 or more, or add a fallback backend"
    if node_id.startswith("vault:"):
        return "add a vault replica in another failure domain"
    if node.kind == "vendor-api":
        return "add a fallback backend on another provider (tier: fallback)"
    return (
        f"add a second {node.kind} in another failure domain and declare both as "
        "redundancy members (active-active, standby or k-of-n)"
    )


def _findings(report: MapReport, recovery: dict[str, tuple[float, float]]) -> list[Finding]:
    out: list[Finding] = []
    for top in report.tops:
        if top.objective is not None and not top.met:
            spofs = ", ".join(top.spofs[:5])
            out.append(
                Finding(
                    "breach",
                    top.id,
                    f"{top.id}: availability {fmt_availability(top.availability)} < objective "
                    f"{top.objective} (slo {top.slo})" + (f"; SPOF: {spofs}" if spofs else ""),
                    "fix the leading items of the importance ranking first",
                )
            )
    for event_id, victims in report.spofs.items():
        out.append(
            Finding(
                "spof",
                event_id,
                f"SPOF {event_id}: takes down {', '.join(victims)}",
                advice(report, event_id),
            )
        )
    events_by_tag: dict[str, list[Event]] = {}
    for event in report.tree.events:
        if event.kind == "common-cause" and event.tag:
            events_by_tag.setdefault(event.tag, []).append(event)
    spof_tops = report.spofs
    for name, (rto, rpo) in recovery.items():
        if name not in COMMON_CAUSE_TAGS:
            continue
        groups = events_by_tag.get(name, [])
        if not groups:
            out.append(
                Finding(
                    "info",
                    f"recovery.{name}",
                    f"recovery.{name} (RTO {rto:g} s, RPO {rpo:g} s): no two components share "
                    f"a {name}, so the loss of one cannot be analysed",
                    f"tag components with domains: {{{name}: ...}}",
                )
            )
            continue
        for event in groups:
            downed = spof_tops.get(event.id)
            if downed:
                out.append(
                    Finding(
                        "warning",
                        f"recovery.{name}",
                        f"recovery.{name} (RTO {rto:g} s): losing {name} {event.value} takes "
                        f"down {', '.join(downed)} with nothing to fail over to, so only a "
                        "restore can meet the RTO; measure it with a drill",
                        advice(report, event.id),
                    )
                )
    vault = report.graph.nodes.get(VAULT)
    if vault is not None:
        for name, (_rto, rpo) in recovery.items():
            if name not in COMMON_CAUSE_TAGS:
                continue
            values = set()
            for m in vault.members:
                value = report.graph.nodes[m].tags().get(name)
                values.add(report.tree.names.canonical(name, value) if value else None)
            if len(values) == 1 and None not in values:
                out.append(
                    Finding(
                        "breach",
                        f"recovery.{name}",
                        f"recovery.{name} (RPO {rpo:g} s): every vault replica is in {name} "
                        f"{values.pop()}, so losing it loses every copy",
                        "add a vault replica in another " + name,
                    )
                )
    out.extend(
        Finding(note.severity, note.subject, note.message, note.fix)
        for note in report.tree.names.notes
    )
    unknown = sorted({u for top in report.tops for u in top.unknown})
    if unknown:
        shown = ", ".join(unknown[:8]) + (" ..." if len(unknown) > 8 else "")
        out.append(
            Finding(
                "info",
                "availability",
                f"{len(unknown)} event(s) have no declared availability and count as always "
                f"up in the numbers (they still appear in cut sets): {shown}",
                "declare availability (and availability_source) on those components",
            )
        )
    rank = {"breach": 0, "spof": 1, "warning": 2, "info": 3}
    out.sort(key=lambda f: rank[f.severity])  # stable: most severe first, in found order
    return out


def to_json(report: MapReport) -> dict[str, Any]:
    """The stable JSON document (schema ``bastion.map/1``, docs/map-json-schema.md)."""
    graph = report.graph
    spof_of: dict[str, list[str]] = {}
    for event_id in report.spofs:
        event = report.event(event_id)
        for node_id in [event.node] if event.node else event.members:
            if node_id:
                spof_of.setdefault(node_id, []).append(event_id)
    nodes = []
    for node_id in graph.order:
        node = graph.nodes[node_id]
        nodes.append(
            {
                "id": node.id,
                "label": node.label or node.id,
                "kind": node.kind,
                "location": node.location,
                "provider": node.provider,
                "domains": dict(node.domains),
                "availability": node.availability,
                "availability_source": node.availability_source,
                "basic": node.basic,
                "top": node.top,
                "hard": list(node.hard),
                "soft": list(node.soft),
                "members": list(node.members),
                "k": node.k,
                "mode": node.mode,
                "origin": node.origin,
                "spof": node_id in spof_of,
                "spof_events": spof_of.get(node_id, []),
            }
        )
    return {
        "schema": "bastion.map/1",
        "system": report.system,
        "ok": report.ok,
        "max_order": report.max_order,
        "beta": report.beta,
        "nodes": nodes,
        "events": [
            {
                "id": e.id,
                "kind": e.kind,
                "probability": e.probability,
                "known": e.known,
                "node": e.node,
                "tag": e.tag,
                "value": e.value,
                "members": list(e.members),
            }
            for e in report.tree.events
        ],
        "tops": [
            {
                "id": t.id,
                "kind": t.kind,
                "availability": t.availability,
                "unavailability": t.unavailability,
                "objective": t.objective,
                "slo": t.slo,
                "met": t.met,
                "spofs": t.spofs,
                "cut_sets": [
                    {"order": c.order, "events": list(c.events), "probability": c.probability}
                    for c in t.cut_sets
                ],
                "importance": [
                    {
                        "event": i.event,
                        "birnbaum": i.birnbaum,
                        "fussell_vesely": i.fussell_vesely,
                    }
                    for i in t.importance
                ],
                "unknown": t.unknown,
            }
            for t in report.tops
        ],
        "blast_radius": [
            {"event": b.event, "fails": b.fails, "degrades": b.degrades}
            for b in sorted(report.blast_radius.values(), key=lambda b: b.event)
        ],
        "findings": [
            {"severity": f.severity, "subject": f.subject, "message": f.message, "fix": f.fix}
            for f in report.findings
        ],
        "statistics": dict(report.statistics),
        "vendors": [
            {
                "vendor": v.vendor,
                "backends": list(v.backends),
                "components": list(v.components),
                "events": list(v.events),
                "spend": v.spend,
                "spend_share": v.spend_share,
                "unavailability_share": v.unavailability_share,
                "spof": v.spof,
                "concentrated": v.concentrated,
            }
            for v in report.vendors
        ],
    }
