"""Exact top-event probability: modules, then one small BDD per module.

Owns: the reduced ordered BDD (unique table, AND/OR apply with a computed table) and the
probability of any gate of a ``FaultTree``. As SCRAM does, the tree is first split into
modules (Dutuit and Rauzy's linear-time algorithm: a gate is a module when no event or
gate below it is reached from outside it), each module is solved by its own BDD with its
child modules as single variables, and module probabilities are cached. A shared event
(a common-cause group, a component two services use) keeps the gates above it from being
modules, so it is expanded inside one BDD and counted exactly once: the result is exact,
never series/parallel arithmetic over dependent parts.

Variable order: the order in which a depth-first walk from the module's gate first meets
each variable, the usual good heuristic for fault trees (related events end up close).

Written by hand because the Python BDD packages either need a C build that is not on
this machine (CUDD via dd.cudd) or bring their own heavy runtime; this needs only AND, OR
and a probability pass. Must never: treat a shared event as independent.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from bastion.map._tree import FaultTree

__all__ = ["Bdd", "BddStatistics", "Probability"]


@dataclass(frozen=True, slots=True)
class BddStatistics:
    """The size of the work behind an availability figure."""

    #: nodes in the shared BDD
    bdd_nodes: int
    #: modules found (independent sub-trees, solved once each)
    modules: int
    #: modules whose probability has been computed
    modules_solved: int
    #: BDD variables (basic events and solved modules)
    variables: int


_TERMINAL_LEVEL = sys.maxsize


@contextmanager
def _deep_recursion(depth: int) -> Iterator[None]:
    # apply() recurses once per BDD level; a module with a few thousand variables needs
    # more than Python's default 1000 frames (3.11 frames are cheap; no C stack per call).
    old = sys.getrecursionlimit()
    if depth <= old:
        yield  # already deep enough (e.g. inside Probability.deep()): change nothing
        return
    sys.setrecursionlimit(depth)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


class Bdd:
    """A reduced ordered BDD manager. Node 0 is false, 1 is true; ``level`` orders vars."""

    def __init__(self) -> None:
        self.level: list[int] = [_TERMINAL_LEVEL, _TERMINAL_LEVEL]
        self.lo: list[int] = [0, 1]
        self.hi: list[int] = [0, 1]
        self._unique: dict[tuple[int, int, int], int] = {}
        self._and: dict[tuple[int, int], int] = {}
        self._or: dict[tuple[int, int], int] = {}

    def __len__(self) -> int:
        return len(self.level)

    def var(self, level: int) -> int:
        return self.mk(level, 0, 1)

    def mk(self, level: int, lo: int, hi: int) -> int:
        if lo == hi:
            return lo
        key = (level, lo, hi)
        found = self._unique.get(key)
        if found is None:
            found = len(self.level)
            self.level.append(level)
            self.lo.append(lo)
            self.hi.append(hi)
            self._unique[key] = found
        return found

    def conj(self, u: int, v: int) -> int:
        if u == 0 or v == 0:
            return 0
        if u in (1, v):
            return v
        if v == 1:
            return u
        if u > v:
            u, v = v, u
        key = (u, v)
        found = self._and.get(key)
        if found is not None:
            return found
        lu, lv = self.level[u], self.level[v]
        if lu == lv:
            r = self.mk(lu, self.conj(self.lo[u], self.lo[v]), self.conj(self.hi[u], self.hi[v]))
        elif lu < lv:
            r = self.mk(lu, self.conj(self.lo[u], v), self.conj(self.hi[u], v))
        else:
            r = self.mk(lv, self.conj(u, self.lo[v]), self.conj(u, self.hi[v]))
        self._and[key] = r
        return r

    def disj(self, u: int, v: int) -> int:
        if u == 1 or v == 1:
            return 1
        if u in (0, v):
            return v
        if v == 0:
            return u
        if u > v:
            u, v = v, u
        key = (u, v)
        found = self._or.get(key)
        if found is not None:
            return found
        lu, lv = self.level[u], self.level[v]
        if lu == lv:
            r = self.mk(lu, self.disj(self.lo[u], self.lo[v]), self.disj(self.hi[u], self.hi[v]))
        elif lu < lv:
            r = self.mk(lu, self.disj(self.lo[u], v), self.disj(self.hi[u], v))
        else:
            r = self.mk(lv, self.disj(u, self.lo[v]), self.disj(u, self.hi[v]))
        self._or[key] = r
        return r

    def disj_all(self, items: list[int]) -> int:
        # Plain variables (most children of an OR gate: the node's own event and its
        # common-cause events) are chained directly, bottom level first, with no apply.
        plain = sorted(
            {self.level[u] for u in items if u > 1 and self.lo[u] == 0 and self.hi[u] == 1},
            reverse=True,
        )
        if len(plain) > 1:
            chain = 0
            for level in plain:
                chain = self.mk(level, chain, 1)
            items = [u for u in items if not (u > 1 and self.lo[u] == 0 and self.hi[u] == 1)]
            items.append(chain)
        # Pairwise, not a left fold: OR of n parts costs n log n applies instead of n^2.
        while len(items) > 1:
            items = [
                self.disj(items[i], items[i + 1]) if i + 1 < len(items) else items[i]
                for i in range(0, len(items), 2)
            ]
        return items[0] if items else 0

    def atleast(self, m: int, items: list[int]) -> int:
        """True when at least ``m`` of ``items`` are true (all monotone here)."""
        n = len(items)
        memo: dict[tuple[int, int], int] = {}

        def t(i: int, need: int) -> int:
            if need <= 0:
                return 1
            if n - i < need:
                return 0
            key = (i, need)
            if key not in memo:
                # Monotone: T(i+1, need) implies T(i+1, need-1), so no negation is needed.
                memo[key] = self.disj(self.conj(items[i], t(i + 1, need - 1)), t(i + 1, need))
            return memo[key]

        return t(0, m)

    def probability(self, root: int, p_level: list[float]) -> float:
        """P(root is true) when the variable at level L is true with ``p_level[L]``."""
        # Nodes are created children first, so index order is bottom-up.
        prob = [0.0, 1.0]
        for i in range(2, root + 1):
            p = p_level[self.level[i]]
            prob.append((1.0 - p) * prob[self.lo[i]] + p * prob[self.hi[i]])
        return prob[root]


class Probability:
    """Exact failure probability and Birnbaum importance of the gates of one ``FaultTree``.

    One BDD manager serves every gate: modules are found once for the whole tree (from
    all tops together, so a module is a module wherever it is used), each gate's BDD is
    built once (a platform shared by 600 services is built once, not 600 times) over
    events and child-module variables, and each module's probability is the probability
    of its own BDD. ``probs`` overrides the events' failure probabilities.
    """

    def __init__(self, tree: FaultTree, probs: list[float] | None = None) -> None:
        self.tree = tree
        self.p = probs if probs is not None else [e.probability for e in tree.events]
        self.bdd = Bdd()
        roots = [tree.node_literal[t] for t in tree.graph.tops()]
        roots += [g + tree.n_events for g in range(len(tree.gate_kind))]
        self.modules = self._modules(roots)
        self.levels = self._order(roots)
        self.var_of_level = {level: lit for lit, level in self.levels.items()}
        self.p_level = [0.0] * len(self.levels)
        self.module_q: dict[int, float] = {}
        self._built: dict[int, int] = {}
        self._prob: list[float] = [0.0, 1.0]
        self._birnbaum: dict[int, dict[int, float]] = {}
        self._fanin = [0] * len(tree.gate_kind)
        for children in tree.gate_children:
            for child in children:
                if child >= tree.n_events:
                    self._fanin[child - tree.n_events] += 1

    @property
    def bdd_nodes(self) -> int:
        return len(self.bdd)

    @property
    def modules_solved(self) -> int:
        return len(self.module_q)

    def statistics(self) -> BddStatistics:
        return BddStatistics(
            bdd_nodes=len(self.bdd),
            modules=len(self.modules),
            modules_solved=len(self.module_q),
            variables=len(self.levels),
        )

    # ------------------------------------------------------------------ structure

    def _modules(self, roots: list[int]) -> set[int]:
        """Dutuit-Rauzy over all ``roots`` at once (as children of a virtual top): a gate
        is a module when every visit to its descendants falls between its first entry
        and its exit, i.e. nothing outside reaches below it."""
        tree = self.tree
        n_events = tree.n_events
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        second: dict[int, int] = {}
        post: list[int] = []
        clock = 0
        for root in roots:
            if root in first:
                continue  # already below an earlier root: not a new entry point
            stack: list[tuple[int, int]] = [(root, -1)]
            while stack:
                lit, i = stack.pop()
                if i == -1:
                    clock += 1
                    if lit in first:
                        last[lit] = clock
                        continue
                    first[lit] = last[lit] = clock
                    if lit < n_events:
                        second[lit] = clock
                        continue
                    stack.append((lit, 0))
                    continue
                children = tree.gate_children[lit - n_events]
                if i < len(children):
                    stack.append((lit, i + 1))
                    stack.append((children[i], -1))
                else:
                    clock += 1
                    second[lit] = clock
                    post.append(lit)
        low: dict[int, int] = {}
        high: dict[int, int] = {}
        modules: set[int] = set()
        for lit in post:  # children before parents
            children = tree.gate_children[lit - n_events]
            if not children:
                continue  # a gate that never fails: nothing to solve
            lo = min(min(first[c], low.get(c, first[c])) for c in children)
            hi = max(max(last[c], high.get(c, last[c])) for c in children)
            low[lit], high[lit] = lo, hi
            if first[lit] < lo and hi < second[lit]:
                modules.add(lit)
        return modules

    def _order(self, roots: list[int]) -> dict[int, int]:
        """Variable levels: shared events first, then depth-first order from the tops.

        Shared events on top keep the BDD of "this backend AND that one" small: below the
        shared part, each branch's private variables are ORed in without being copied
        under every combination of the other branch's. Module gates get a level too (the
        variable that stands for them in their parents).
        """
        tree = self.tree
        n_events = tree.n_events
        fanin = [0] * n_events
        for children in tree.gate_children:
            for child in children:
                if child < n_events:
                    fanin[child] += 1
        shared = [fanin[e] > 1 or tree.events[e].kind == "common-cause" for e in range(n_events)]
        seen: set[int] = set()
        found: list[int] = []
        for root in roots:
            if root in seen:
                continue
            stack = [root]
            while stack:
                lit = stack.pop()
                if lit in seen:
                    continue
                seen.add(lit)
                if lit < n_events or lit in self.modules:
                    found.append(lit)
                if lit >= n_events:
                    stack.extend(reversed(tree.gate_children[lit - n_events]))
        found.sort(key=lambda lit: 0 if lit < n_events and shared[lit] else 1)  # stable
        return {lit: level for level, lit in enumerate(found)}

    # ------------------------------------------------------------------ building

    def _ref(self, lit: int) -> int:
        """The BDD node standing for ``lit`` inside its parent's BDD."""
        if lit < self.tree.n_events:
            level = self.levels[lit]
            self.p_level[level] = self.p[lit]
            return self.bdd.var(level)
        if lit in self.modules:
            if lit not in self.module_q:
                self.module_q[lit] = self._probability(self._expand(lit))
            level = self.levels[lit]
            self.p_level[level] = self.module_q[lit]
            return self.bdd.var(level)
        return self._expand(lit)

    def _expand(self, lit: int) -> int:
        """The BDD of gate ``lit``'s failure over events and child-module variables."""
        found = self._built.get(lit)
        if found is not None:
            return found
        g = lit - self.tree.n_events
        if self.tree.gate_kind[g] == "or":
            node = self.bdd.disj_all([self._ref(c) for c in self._or_leaves(lit)])
        else:
            parts = [self._ref(c) for c in self.tree.gate_children[g]]
            node = self.bdd.atleast(self.tree.gate_m[g], parts)
        self._built[lit] = node
        return node

    def _or_leaves(self, lit: int) -> list[int]:
        """The children of an OR gate, with nested OR gates that only it uses flattened in.

        A component's failure is OR(own event, common-cause events, dependency's failure),
        and the dependency's is the same again: flattened, a chain of n components is one
        OR of plain variables, which the BDD builds in n steps with no apply at all.
        """
        tree = self.tree
        n_events = tree.n_events
        out: list[int] = []
        stack = list(reversed(tree.gate_children[lit - n_events]))
        while stack:
            child = stack.pop()
            if (
                child >= n_events
                and child not in self.modules
                and self._fanin[child - n_events] == 1
                and tree.gate_kind[child - n_events] == "or"
            ):
                stack.extend(reversed(tree.gate_children[child - n_events]))
            else:
                out.append(child)
        return out

    def _probability(self, node: int) -> float:
        # Nodes are created children first, so probabilities fill in creation order.
        bdd, prob, p_level = self.bdd, self._prob, self.p_level
        for i in range(len(prob), node + 1):
            p = p_level[bdd.level[i]]
            prob.append((1.0 - p) * prob[bdd.lo[i]] + p * prob[bdd.hi[i]])
        return prob[node]

    def deep(self) -> contextlib.AbstractContextManager[None]:
        """Hold the recursion limit this tree needs across many calls (setting it per call
        costs more than the BDD work on small tops)."""
        return _deep_recursion(10_000 + 4 * len(self.levels))

    def _root(self, literal: int) -> int:
        with self.deep():
            return self._expand(literal)

    # ------------------------------------------------------------------ answers

    def unavailability(self, literal: int) -> float:
        """P(literal fails), exactly."""
        if literal < self.tree.n_events:
            return self.p[literal]
        if literal in self.module_q:
            return self.module_q[literal]
        return self._probability(self._root(literal))

    def birnbaum(self, literal: int) -> dict[int, float]:
        """Birnbaum importance of every event under ``literal``:
        ``P(literal fails | e failed) - P(literal fails | e up)``.

        One top-down pass gives each BDD node's probability of being reached; an event's
        measure is the sum over its nodes of reach * (P(high) - P(low)). An event inside a
        module gets the module's measure times its own inside the module (chain rule: the
        module's events appear nowhere else).
        """
        if literal < self.tree.n_events:
            return {literal: 1.0}
        cached = self._birnbaum.get(literal)
        if cached is not None:
            return cached
        root = self._root(literal)
        self._probability(root)
        bdd, prob = self.bdd, self._prob
        reach: dict[int, float] = {root: 1.0}
        order: list[int] = []
        stack = [root]
        seen: set[int] = set()
        while stack:
            u = stack.pop()
            if u < 2 or u in seen:
                continue
            seen.add(u)
            order.append(u)
            stack.append(bdd.lo[u])
            stack.append(bdd.hi[u])
        order.sort(reverse=True)  # parents have higher indices than their children
        by_var: dict[int, float] = {}
        for u in order:
            r = reach.get(u, 0.0)
            p = self.p_level[bdd.level[u]]
            lo, hi = bdd.lo[u], bdd.hi[u]
            reach[lo] = reach.get(lo, 0.0) + r * (1.0 - p)
            reach[hi] = reach.get(hi, 0.0) + r * p
            var = self.var_of_level[bdd.level[u]]
            by_var[var] = by_var.get(var, 0.0) + r * (prob[hi] - prob[lo])
        out: dict[int, float] = {}
        for var, value in by_var.items():
            if var < self.tree.n_events:
                out[var] = out.get(var, 0.0) + value
            else:
                for event, inner in self.birnbaum(var).items():
                    out[event] = out.get(event, 0.0) + value * inner
        self._birnbaum[literal] = out
        return out
