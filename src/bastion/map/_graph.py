"""The dependency graph the map analyses: nodes, their typed edges and redundancy.

Owns: the ``Node`` record and the ``Graph`` that checks a set of nodes is analysable
(unique ids, every edge names a known node, no cycle, ``1 <= k <= n``, availability in
[0, 1]). The manifest loader already catches most of these with file:line; the graph
checks them again because the map is also a library that takes nodes built in code.

Must never: read files, or guess. A node without a declared availability is kept (its
failure is still a structural possibility) and reported as unknown, never invented.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import networkx as nx

from bastion.errors import UsageError

__all__ = ["COMMON_CAUSE_TAGS", "Graph", "Node"]

# Tags whose shared values make components fail together (a common-cause group). "host"
# is what Bastion itself adds for local directories and processes on this machine.
COMMON_CAUSE_TAGS = ("provider", "region", "zone", "site", "account", "host", "endpoint")


@dataclass(frozen=True)
class Node:
    """One thing that can be up or down.

    A node is down when its own failure happens (``basic``), when any ``hard`` dependency
    is down, or when fewer than ``k`` of its ``members`` are up. ``soft`` dependencies only
    degrade it. ``top`` marks what is analysed (services and jobs).
    """

    id: str
    kind: str
    location: str = "on-prem"
    provider: str | None = None
    domains: Mapping[str, str] = field(default_factory=dict)
    availability: float | None = None
    availability_source: str | None = None
    hard: tuple[str, ...] = ()
    soft: tuple[str, ...] = ()
    members: tuple[str, ...] = ()
    k: int = 1
    mode: str = "active-active"
    basic: bool = True
    top: bool = False
    origin: str = ""
    label: str = ""

    @property
    def where(self) -> str:
        return f"{self.id!r} ({self.origin})" if self.origin else repr(self.id)

    def tags(self) -> dict[str, str]:
        """The common-cause tags of this node: provider and failure domains."""
        out = {key: value for key, value in self.domains.items() if key in COMMON_CAUSE_TAGS}
        if self.provider:
            out["provider"] = self.provider
        return out


class Graph:
    """A checked, acyclic set of nodes. Raises ``UsageError`` naming the node and the fix."""

    def __init__(self, nodes: Iterable[Node], *, system: str = "system") -> None:
        self.system = system
        self.nodes: dict[str, Node] = {}
        for node in nodes:
            if node.id in self.nodes:
                raise UsageError(
                    f"map: component {node.where} is declared twice; give each an unique id"
                )
            self.nodes[node.id] = node
        self._check()
        self.order = self._topological()

    def _check(self) -> None:
        known = sorted(self.nodes)
        for node in self.nodes.values():
            a = node.availability
            if a is not None and (
                not isinstance(a, float | int) or math.isnan(a) or not 0 <= a <= 1
            ):
                raise UsageError(
                    f"map: component {node.where}: availability {a!r} is outside [0, 1] "
                    "(write it as a fraction, e.g. 0.999 for 99.9%)"
                )
            for kind, refs in (("depends on", node.hard + node.soft), ("has member", node.members)):
                for ref in refs:
                    if ref not in self.nodes:
                        hint = difflib.get_close_matches(ref, known, n=1, cutoff=0.6)
                        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                        raise UsageError(
                            f"map: component {node.where} {kind} unknown component "
                            f"{ref!r}{extra}; declare it under components: or fix the id"
                        )
                    if ref == node.id:
                        raise UsageError(
                            f"map: component {node.where} {kind} itself; remove that edge"
                        )
            if node.members:
                if not 1 <= node.k <= len(node.members):
                    raise UsageError(
                        f"map: component {node.where}: k = {node.k} but it has "
                        f"{len(node.members)} members (n); k must be between 1 and n"
                    )
                if len(set(node.members)) != len(node.members):
                    raise UsageError(
                        f"map: component {node.where} lists a member twice; "
                        "members must be distinct"
                    )
            elif node.k != 1:
                raise UsageError(
                    f"map: component {node.where}: k = {node.k} but it has no members; "
                    "add redundancy members or drop k"
                )

    def _topological(self) -> list[str]:
        """Ids with every dependency before its dependents; raises on a cycle."""
        digraph: nx.DiGraph[str] = nx.DiGraph()
        digraph.add_nodes_from(self.nodes)
        for node in self.nodes.values():
            for ref in (*node.hard, *node.soft, *node.members):
                digraph.add_edge(ref, node.id)
        try:
            return list(nx.topological_sort(digraph))
        except nx.NetworkXUnfeasible:
            cycle = [edge[1] for edge in nx.find_cycle(digraph)]
            cycle.reverse()
            start = cycle.index(min(cycle))
            ordered = cycle[start:] + cycle[:start]
            text = " -> ".join([*ordered, ordered[0]])
            raise UsageError(
                f"map: dependency cycle: {text}; a component cannot depend on itself "
                "through others, so remove one of these edges"
            ) from None

    def tops(self) -> list[str]:
        return [node_id for node_id in self.order if self.nodes[node_id].top]

    def dependents(self) -> dict[str, list[str]]:
        """For each node, the nodes that point at it (any edge type)."""
        out: dict[str, list[str]] = {node_id: [] for node_id in self.nodes}
        for node in self.nodes.values():
            for ref in dict.fromkeys((*node.hard, *node.soft, *node.members)):
                out[ref].append(node.id)
        return out
