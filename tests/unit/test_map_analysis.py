"""The dependency map's algebra: hand-worked systems, brute-force properties, bad input."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import UsageError
from bastion.map import FaultTree, Graph, Node, analyze
from bastion.map._bdd import Probability


def top(node_id: str = "app", **kw: object) -> Node:
    return Node(id=node_id, kind="service", basic=False, top=True, **kw)  # type: ignore[arg-type]


def comp(node_id: str, a: float | None = 0.9, **kw: object) -> Node:
    return Node(id=node_id, kind="compute", availability=a, **kw)  # type: ignore[arg-type]


def cuts(report_top: object) -> set[tuple[str, ...]]:
    return {c.events for c in report_top.cut_sets}  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- by hand


def test_series() -> None:
    rep = analyze(Graph([comp("a", 0.9), comp("b", 0.8), top(hard=("a", "b"))]))
    app = rep.top("app")
    assert math.isclose(app.availability, 0.72)
    assert cuts(app) == {("a",), ("b",)}
    assert app.spofs == ["a", "b"] or set(app.spofs) == {"a", "b"}
    assert not rep.ok


def test_parallel() -> None:
    graph = Graph(
        [
            comp("a", 0.9),
            comp("b", 0.8),
            Node("pair", "compute", members=("a", "b"), basic=False),
            top(hard=("pair",)),
        ]
    )
    rep = analyze(graph)
    app = rep.top("app")
    assert math.isclose(app.availability, 1 - 0.1 * 0.2)
    assert cuts(app) == {("a", "b")}
    assert app.spofs == []
    assert rep.ok


def test_two_of_three() -> None:
    graph = Graph(
        [comp(x, 0.9) for x in "abc"]
        + [Node("quorum", "storage", members=("a", "b", "c"), k=2, basic=False)]
        + [top(hard=("quorum",))]
    )
    app = analyze(graph).top("app")
    assert math.isclose(app.availability, 3 * 0.81 * 0.1 + 0.729)
    assert cuts(app) == {("a", "b"), ("a", "c"), ("b", "c")}


def test_bridge_network() -> None:
    # s -> t through five links; paths {1,4} {2,5} {1,3,5} {2,3,4}. Up if any path is up.
    paths = [("l1", "l4"), ("l2", "l5"), ("l1", "l3", "l5"), ("l2", "l3", "l4")]
    nodes = [comp(f"l{i}", 0.9) for i in range(1, 6)]
    nodes += [Node(f"p{i}", "network", hard=p, basic=False) for i, p in enumerate(paths)]
    nodes += [
        Node("st", "network", members=tuple(f"p{i}" for i in range(4)), basic=False),
        top(hard=("st",)),
    ]
    rep = analyze(Graph(nodes), max_order=3)
    app = rep.top("app")
    p = 0.9
    assert math.isclose(app.availability, 2 * p**2 + 2 * p**3 - 5 * p**4 + 2 * p**5)
    assert cuts(app) == {("l1", "l2"), ("l4", "l5"), ("l1", "l3", "l5"), ("l2", "l3", "l4")}
    # At order 2 the order-3 sets are truncated away, the others stay.
    assert cuts(analyze(Graph(nodes), max_order=2).top("app")) == {("l1", "l2"), ("l4", "l5")}


def test_redundant_pair_on_one_vendor_is_a_spof() -> None:
    nodes = [
        Node("gpt-a", "vendor-api", provider="vendor-x", availability=0.99),
        Node("gpt-b", "vendor-api", provider="vendor-x", availability=0.99),
        Node("llm", "vendor-api", members=("gpt-a", "gpt-b"), basic=False),
        top(hard=("llm",)),
    ]
    rep = analyze(Graph(nodes))
    app = rep.top("app")
    assert cuts(app) == {("ccf:provider=vendor-x",), ("gpt-a", "gpt-b")}
    assert app.spofs == ["ccf:provider=vendor-x"]
    assert not rep.ok
    # Beta factor 0.1: the shared event has q = 0.001; each member keeps q = 0.01 in total.
    q_ccf = 0.1 * 0.01
    q_own = 1 - 0.99 / (1 - q_ccf)
    assert math.isclose(app.unavailability, q_ccf + (1 - q_ccf) * q_own**2)
    assert rep.blast_radius["ccf:provider=vendor-x"].fails == ["gpt-a", "gpt-b", "llm", "app"]
    # On two vendors, no SPOF and the naive parallel figure holds.
    nodes[1] = Node("gpt-b", "vendor-api", provider="vendor-y", availability=0.99)
    other = analyze(Graph(nodes)).top("app")
    assert other.spofs == []
    assert math.isclose(other.unavailability, 0.01 * 0.01)


def test_shared_component_counted_once() -> None:
    # Two branches share "db": naive parallel arithmetic would say 1 - (1-.9*.9)^2.
    nodes = [
        comp("db", 0.9),
        comp("x", 0.9, hard=("db",)),
        comp("y", 0.9, hard=("db",)),
        Node("either", "compute", members=("x", "y"), basic=False),
        top(hard=("either",)),
    ]
    app = analyze(Graph(nodes)).top("app")
    assert math.isclose(app.availability, 0.9 * (1 - 0.1 * 0.1))
    assert cuts(app) == {("db",), ("x", "y")}


def test_blast_radius_and_soft_dependencies_degrade() -> None:
    nodes = [
        comp("cache", 0.99),
        comp("db", 0.999),
        top("api", hard=("db",), soft=("cache",)),
        top("batch", hard=("api",)),
    ]
    rep = analyze(Graph(nodes))
    assert rep.blast_radius["db"].fails == ["db", "api", "batch"]
    assert rep.blast_radius["cache"].fails == ["cache"]
    assert rep.blast_radius["cache"].degrades == ["api", "batch"]
    assert "cache" not in rep.spofs
    assert math.isclose(rep.top("api").availability, 0.999)


def test_importance_ranks_the_weakest_series_part_first() -> None:
    rep = analyze(Graph([comp("good", 0.9999), comp("bad", 0.99), top(hard=("good", "bad"))]))
    ranking = rep.top("app").importance
    assert [i.event for i in ranking] == ["bad", "good"]
    assert math.isclose(ranking[0].birnbaum, 0.9999)
    assert 0.98 < ranking[0].fussell_vesely < 1


def test_slo_breach_and_unknown_availability() -> None:
    graph = Graph([comp("a", 0.99), comp("b", None), top(hard=("a", "b"))])
    rep = analyze(graph, objectives={"app": (0.999, "app-availability")})
    app = rep.top("app")
    assert app.met is False
    assert app.unknown == ["b"]
    messages = [f.message for f in rep.findings if f.severity == "breach"]
    assert messages == [
        "app: availability 0.990000 < objective 0.999 (slo app-availability); SPOF: a, b"
    ]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("nodes", "expected"),
    [
        ([top(hard=("dbb",)), comp("db")], "unknown component 'dbb' (did you mean 'db'?)"),
        (
            [comp("a", hard=("b",)), comp("b", hard=("a",)), top(hard=("a",))],
            "dependency cycle: a -> b -> a",
        ),
        (
            [comp("a"), comp("b"), Node("g", "storage", members=("a", "b"), k=3, basic=False)],
            "k = 3 but it has 2 members (n)",
        ),
        ([comp("a", 1.5)], "availability 1.5 is outside [0, 1]"),
        ([comp("a", -0.1)], "availability -0.1 is outside [0, 1]"),
        ([comp("a", float("nan"))], "availability nan is outside [0, 1]"),
        ([comp("a"), comp("a")], "declared twice"),
        ([comp("a", hard=("a",))], "depends on itself"),
    ],
)
def test_broken_graphs_name_the_problem(nodes: list[Node], expected: str) -> None:
    with pytest.raises(UsageError) as info:
        Graph(nodes)
    assert expected in str(info.value)


def test_bad_parameters() -> None:
    graph = Graph([comp("a"), top(hard=("a",))])
    with pytest.raises(ValueError, match="max order 0"):
        analyze(graph, max_order=0)
    with pytest.raises(ValueError, match="beta"):
        analyze(graph, beta=1.0)


# --------------------------------------------------------------------------- properties


@st.composite
def systems(draw: st.DrawFn) -> Graph:
    """Small random systems: components with tags, hard deps, k-of-n groups, 1-2 tops."""
    n = draw(st.integers(2, 6))
    nodes: list[Node] = []
    ids: list[str] = []
    for i in range(n):
        deps = draw(st.lists(st.sampled_from(ids), max_size=2, unique=True)) if ids else []
        nodes.append(
            Node(
                id=f"c{i}",
                kind="compute",
                provider=draw(st.sampled_from([None, None, "p", "q"])),
                domains=draw(st.sampled_from([{}, {"site": "s1"}, {"region": "r1"}])),
                availability=draw(st.floats(0.5, 1.0)),
                hard=tuple(deps),
            )
        )
        ids.append(f"c{i}")
    for g in range(draw(st.integers(0, 2))):
        members = draw(st.lists(st.sampled_from(ids), min_size=2, max_size=4, unique=True))
        k = draw(st.integers(1, len(members)))
        nodes.append(Node(f"g{g}", "storage", members=tuple(members), k=k, basic=False))
        ids.append(f"g{g}")
    for t in range(draw(st.integers(1, 2))):
        deps = draw(st.lists(st.sampled_from(ids), min_size=1, max_size=3, unique=True))
        nodes.append(top(f"t{t}", hard=tuple(deps)))
    return Graph(nodes)


def brute(tree: FaultTree, literal: int, probs: list[float]) -> float:
    q = 0.0
    n = tree.n_events
    for state in itertools.product((False, True), repeat=n):
        failed = {i for i in range(n) if state[i]}
        if tree.evaluate(failed, literal):
            w = 1.0
            for i in range(n):
                w *= probs[i] if state[i] else 1 - probs[i]
            q += w
    return q


@settings(max_examples=60, deadline=None)
@given(graph=systems(), order=st.integers(1, 3))
def test_cut_sets_are_exactly_the_minimal_ones_up_to_the_order(graph: Graph, order: int) -> None:
    rep = analyze(graph, max_order=order, importance=False)
    tree = rep.tree
    for result in rep.tops:
        literal = tree.node_literal[result.id]
        reported = {frozenset(tree.event_index[e] for e in c.events) for c in result.cut_sets}
        for s in reported:
            assert len(s) <= order
            assert tree.evaluate(s, literal), f"{s} does not fail {result.id}"
            for e in s:
                assert not tree.evaluate(s - {e}, literal), f"{s} is not minimal"
        expected = set()
        for r in range(1, order + 1):
            for combo in itertools.combinations(range(tree.n_events), r):
                s = frozenset(combo)
                if tree.evaluate(s, literal) and not any(c < s for c in expected):
                    expected.add(s)
        assert reported == expected


@settings(max_examples=60, deadline=None)
@given(graph=systems(), data=st.data())
def test_availability_is_exact_and_monotone(graph: Graph, data: st.DataObject) -> None:
    rep = analyze(graph, importance=False)
    tree = rep.tree
    probs = [e.probability for e in tree.events]
    for result in rep.tops:
        literal = tree.node_literal[result.id]
        assert math.isclose(result.unavailability, brute(tree, literal, probs), abs_tol=1e-12)
        # Monotone: making any one event more likely to fail never makes the top more
        # available (a coherent system).
        e = data.draw(st.integers(0, tree.n_events - 1))
        worse = list(probs)
        worse[e] = data.draw(st.floats(probs[e], 1.0))
        q_worse = Probability(tree, worse).unavailability(literal)
        assert q_worse >= result.unavailability - 1e-12
        assert math.isclose(q_worse, brute(tree, literal, worse), abs_tol=1e-12)
        # Birnbaum from one BDD pass (chain rule through modules) equals
        # Q(e failed) - Q(e up) by brute force.
        measured = Probability(tree).birnbaum(literal).get(e, 0.0)
        failed, up = list(probs), list(probs)
        failed[e], up[e] = 1.0, 0.0
        expected = brute(tree, literal, failed) - brute(tree, literal, up)
        assert math.isclose(measured, expected, abs_tol=1e-9)


def test_modules_are_solved_alone_and_shared_events_are_not() -> None:
    # "left" and "right" have private parts (modules); "db" is shared by both.
    nodes = [
        comp("db", 0.95),
        comp("l1", 0.9),
        comp("l2", 0.8),
        Node("left", "compute", hard=("l1", "l2"), basic=False),
        comp("r1", 0.7),
        Node("right", "compute", hard=("r1", "db"), basic=False),
        Node("either", "compute", members=("left", "right"), basic=False),
        top(hard=("either", "db")),
    ]
    graph = Graph(nodes)
    tree = FaultTree(graph)
    prob = Probability(tree)
    names = {tree.gate_node[lit - tree.n_events] for lit in prob.modules}
    assert "left" in names
    assert "right" not in names  # db is also reached from the top directly
    app = prob.unavailability(tree.node_literal["app"])
    q_left = 1 - 0.9 * 0.8
    assert math.isclose(app, 1 - 0.95 * (1 - q_left * 0.3))
    # Birnbaum through the module (chain rule) against brute force, for every event.
    literal = tree.node_literal["app"]
    probs = [e.probability for e in tree.events]
    measured = prob.birnbaum(literal)
    for e in range(tree.n_events):
        failed, up = list(probs), list(probs)
        failed[e], up[e] = 1.0, 0.0
        expected = brute(tree, literal, failed) - brute(tree, literal, up)
        assert math.isclose(measured.get(e, 0.0), expected, abs_tol=1e-12), tree.events[e].id


@settings(max_examples=30, deadline=None)
@given(graph=systems(), data=st.data())
def test_availability_is_monotone_in_each_components_declared_availability(
    graph: Graph, data: st.DataObject
) -> None:
    # With beta = 0 a component's declared availability is its own event's; raise one.
    before = analyze(graph, beta=0.0, importance=False)
    victim = data.draw(st.sampled_from([n for n in graph.nodes.values() if n.basic]))
    assert victim.availability is not None
    better = Graph(
        [
            Node(**{**n.__dict__, "availability": data.draw(st.floats(victim.availability, 1.0))})
            if n.id == victim.id
            else n
            for n in graph.nodes.values()
        ]
    )
    after = analyze(better, beta=0.0, importance=False)
    for old, new in zip(before.tops, after.tops, strict=True):
        assert new.availability >= old.availability - 1e-12
