"""The fault tree derived from a ``Graph``: basic events and monotone gates.

Owns: turning nodes into failure logic, and the common-cause model. A node fails when

    its own failure  OR  a common-cause event of one of its tags
    OR  any hard dependency fails  OR  at least n-k+1 of its n members fail.

Common cause (a beta-factor model, as in PRA practice): every provider / region / zone /
site / account / host value shared by two or more nodes (compared as ``_spelling`` folds
them: case, width, invisible characters and look-alike letters do not make two values
differ) becomes one basic event that
fails all of them together, with probability ``beta * min(q)`` over the members' declared
unavailabilities q. Each member keeps its declared availability as its marginal: its
independent part is lowered so that ``P(own or any of its groups) = q``. So a "redundant"
pair on one vendor is exactly as available per member as declared, and still has that
vendor as an order-1 cut set.

Must never: mutate the graph, or treat a shared event as independent (the probability
code works on this tree and handles shared events exactly).
"""

from __future__ import annotations

from dataclasses import dataclass

from bastion.map._graph import COMMON_CAUSE_TAGS, Graph
from bastion.map._spelling import DomainNames

__all__ = ["DEFAULT_BETA", "Event", "FaultTree"]

DEFAULT_BETA = 0.1  # the generic beta-factor used in PRA when nothing better is known


@dataclass(frozen=True)
class Event:
    """A basic event: a node's own failure, or a common-cause group's."""

    id: str
    kind: str  # "component" | "common-cause"
    probability: float
    known: bool
    node: str | None = None
    tag: str | None = None
    value: str | None = None
    members: tuple[str, ...] = ()


class FaultTree:
    """Events (literals ``0..E-1``) and gates (literals ``E..``), one gate per node at most.

    ``gate_kind[g]`` is ``"or"`` or ``"atleast"`` (fails when ``gate_m[g]`` children fail;
    AND is atleast with m = n). ``node_literal[id]`` is the literal for "node id fails".
    Gates are numbered children-first, so a single pass in index order is bottom-up.
    """

    def __init__(self, graph: Graph, *, beta: float = DEFAULT_BETA) -> None:
        if not 0 <= beta < 1:
            raise ValueError(f"beta = {beta!r} must be in [0, 1)")
        self.graph = graph
        self.beta = beta
        self.events: list[Event] = []
        self.event_index: dict[str, int] = {}
        self.gate_kind: list[str] = []
        self.gate_m: list[int] = []
        self.gate_children: list[tuple[int, ...]] = []
        self.gate_node: list[str | None] = []
        self.node_literal: dict[str, int] = {}
        self.names = DomainNames(
            (node_id, tag, value)
            for node_id in graph.order
            for tag, value in graph.nodes[node_id].tags().items()
        )
        self._build()

    @property
    def n_events(self) -> int:
        return len(self.events)

    def gate(self, literal: int) -> int:
        return literal - len(self.events)

    def _build(self) -> None:
        graph = self.graph
        groups: dict[tuple[str, str], list[str]] = {}
        for node_id in graph.order:
            for tag, value in graph.nodes[node_id].tags().items():
                groups.setdefault((tag, self.names.canonical(tag, value)), []).append(node_id)
        shared = {
            key: members
            for key, members in sorted(
                groups.items(), key=lambda kv: (COMMON_CAUSE_TAGS.index(kv[0][0]), kv[0][1])
            )
            if len(members) >= 2
        }
        node_groups: dict[str, list[str]] = {}
        group_q: dict[str, float] = {}
        # Common-cause events are numbered first so the BDD orders them at the top: they
        # are the variables every module shares.
        ccf_events: list[Event] = []
        for (tag, value), members in shared.items():
            qs = [1.0 - a for a in (graph.nodes[m].availability for m in members) if a is not None]
            q = self.beta * min(qs) if qs else 0.0
            event_id = f"ccf:{tag}={value}"
            group_q[event_id] = q
            ccf_events.append(
                Event(
                    event_id,
                    "common-cause",
                    q,
                    bool(qs),
                    tag=tag,
                    value=value,
                    members=tuple(members),
                )
            )
            for member in members:
                node_groups.setdefault(member, []).append(event_id)
        for event in ccf_events:
            self._add_event(event)
        for node_id in graph.order:
            node = graph.nodes[node_id]
            if not node.basic:
                continue
            q = 1.0 - node.availability if node.availability is not None else 0.0
            survive_groups = 1.0
            for event_id in node_groups.get(node_id, ()):
                survive_groups *= 1.0 - group_q[event_id]
            own_q = 0.0 if survive_groups <= 0 else 1.0 - (1.0 - q) / survive_groups
            own_q = min(1.0, max(0.0, own_q))
            self._add_event(
                Event(node_id, "component", own_q, node.availability is not None, node=node_id)
            )
        n_events = len(self.events)
        for node_id in graph.order:
            node = graph.nodes[node_id]
            items: list[int] = []
            if node.basic:
                items.append(self.event_index[node_id])
            items.extend(self.event_index[e] for e in node_groups.get(node_id, ()))
            items.extend(self.node_literal[d] for d in dict.fromkeys(node.hard))
            if node.members:
                member_literals = tuple(self.node_literal[m] for m in node.members)
                needed = len(member_literals) - node.k + 1
                if len(member_literals) == 1:
                    items.append(member_literals[0])
                else:
                    items.append(n_events + self._add_gate("atleast", needed, member_literals))
            items = list(dict.fromkeys(items))
            # No items: a node that cannot fail (an OR of nothing is always false).
            if len(items) == 1:
                self.node_literal[node_id] = items[0]
            else:
                self.node_literal[node_id] = n_events + self._add_gate(
                    "or", 1, tuple(items), node_id
                )
            if self.node_literal[node_id] >= n_events:
                gate = self.node_literal[node_id] - n_events
                if self.gate_node[gate] is None:
                    self.gate_node[gate] = node_id

    def _add_event(self, event: Event) -> None:
        self.event_index[event.id] = len(self.events)
        self.events.append(event)

    def _add_gate(
        self, kind: str, m: int, children: tuple[int, ...], node: str | None = None
    ) -> int:
        if kind == "atleast" and m == 1:
            kind = "or"
        self.gate_kind.append(kind)
        self.gate_m.append(m)
        self.gate_children.append(children)
        self.gate_node.append(node)
        return len(self.gate_kind) - 1

    def evaluate(self, failed: set[int] | frozenset[int], literal: int) -> bool:
        """Whether ``literal`` fails when exactly the events in ``failed`` fail."""
        memo: dict[int, bool] = {}
        return self._eval(literal, failed, memo)

    def _eval(self, literal: int, failed: set[int] | frozenset[int], memo: dict[int, bool]) -> bool:
        if literal < len(self.events):
            return literal in failed
        if literal in memo:
            return memo[literal]
        g = literal - len(self.events)
        count = 0
        result = False
        for child in self.gate_children[g]:
            if self._eval(child, failed, memo):
                count += 1
                if count >= self.gate_m[g]:
                    result = True
                    break
        memo[literal] = result
        return result
