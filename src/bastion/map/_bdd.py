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

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from bastion.map._tree import FaultTree

__all__ = ["Bdd", "Probability"]

_TERMINAL_LEVEL = sys.maxsize


@contextmanager
def _deep_recursion(depth: int) -> Iterator[None]:
    # apply() recurses once per BDD level; a module with a few thousand variables needs
    # more than Python's default 1000 frames (3.11 frames are cheap; no C stack per call).
    old = sys.getrecursionlimit()
    if depth > old:
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
        # Pairwise, not a left fold: OR of n variables costs n log n instead of n^2.
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
    """Exact failure probability of gates of one ``FaultTree``, with a module cache.

    ``probs`` overrides the events' probabilities (importance measures set one to 0 or 1);
    ``seed`` pre-fills the cache with gates known not to depend on the overridden events.
    """

    def __init__(
        self,
        tree: FaultTree,
        probs: list[float] | None = None,
        seed: dict[int, float] | None = None,
    ) -> None:
        self.tree = tree
        self.p = probs if probs is not None else [e.probability for e in tree.events]
        self.cache: dict[int, float] = dict(seed or {})
        self.bdd_nodes = 0
        self.modules_solved = 0

    def unavailability(self, literal: int) -> float:
        tree = self.tree
        if literal < tree.n_events:
            return self.p[literal]
        if literal in self.cache:
            return self.cache[literal]
        modules = self._modules(literal)
        return self._solve(literal, modules)

    def _modules(self, root: int) -> set[int]:
        """Dutuit-Rauzy: gate literals under ``root`` that are modules (``root`` included)."""
        tree = self.tree
        n_events = tree.n_events
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        second: dict[int, int] = {}
        post: list[int] = []
        clock = 0
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
            lo = hi = None
            for child in tree.gate_children[lit - n_events]:
                c_lo = min(first[child], low.get(child, first[child]))
                c_hi = max(last[child], high.get(child, last[child]))
                lo = c_lo if lo is None else min(lo, c_lo)
                hi = c_hi if hi is None else max(hi, c_hi)
            assert lo is not None
            assert hi is not None
            low[lit], high[lit] = lo, hi
            if first[lit] < lo and hi < second[lit]:
                modules.add(lit)
        modules.add(root)
        return modules

    def _solve(self, module: int, modules: set[int]) -> float:
        tree = self.tree
        n_events = tree.n_events
        bdd = Bdd()
        levels: dict[int, int] = {}
        p_level: list[float] = []
        built: dict[int, int] = {}

        def variable(lit: int, p: float) -> int:
            if lit not in levels:
                levels[lit] = len(p_level)
                p_level.append(p)
            return bdd.var(levels[lit])

        def build(lit: int) -> int:
            if lit in built:
                return built[lit]
            if lit < n_events:
                node = variable(lit, self.p[lit])
            elif lit != module and lit in modules:
                node = variable(lit, self._known(lit, modules))
            else:
                g = lit - n_events
                parts = [build(c) for c in tree.gate_children[g]]
                if tree.gate_kind[g] == "or":
                    node = bdd.disj_all(parts)
                else:
                    node = bdd.atleast(tree.gate_m[g], parts)
            built[lit] = node
            return node

        with _deep_recursion(10_000 + 4 * n_events):
            root = build(module)
        value = bdd.probability(root, p_level)
        self.bdd_nodes += len(bdd)
        self.modules_solved += 1
        self.cache[module] = value
        return value

    def _known(self, lit: int, modules: set[int]) -> float:
        if lit in self.cache:
            return self.cache[lit]
        return self._solve(lit, modules)
