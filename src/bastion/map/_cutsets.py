"""Minimal cut sets of every gate, truncated to order K.

Owns: the bottom-up set-family algebra over a ``FaultTree``. A family is a set of cut
sets (frozensets of event literals) that is kept minimal (no member contains another).

    event e         {{e}}
    OR(F1..Fn)      minimal(F1 | ... | Fn)
    ATLEAST(m, Fi)  minimal(all unions of one cut set from each of m children)

Truncation at order K is exact, as in SCRAM's ZBDD cut-off: a minimal cut set of order
<= K is a union of children's minimal cut sets that are each of order <= K, and any set a
truncated family wrongly keeps would be contained in a set of order <= K that is also
kept. So the families never hold anything above K, and the work stays proportional to the
answer instead of to the (exponential) full family. Shared events need no special case:
the union of two cut sets sharing an event is simply smaller.

Written by hand because no maintained Python package computes truncated minimal cut
sets (SCRAM is a C++ program that reads its own XML fault trees). Must never: return a
non-minimal set or drop a minimal one of order <= K (the property tests check both against
brute force).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import combinations

from bastion.map._tree import FaultTree

__all__ = ["Family", "cut_sets", "literal_family"]

Family = set[frozenset[int]]
_EMPTY: frozenset[int] = frozenset()


def _minimal(candidates: Iterable[frozenset[int]]) -> Family:
    by_size: dict[int, list[frozenset[int]]] = {}
    for s in candidates:
        by_size.setdefault(len(s), []).append(s)
    if 0 in by_size:
        return {_EMPTY}
    kept: Family = set(by_size.get(1, ()))
    singles = {e for s in kept for e in s}
    for s in by_size.get(2, ()):
        if singles.isdisjoint(s):
            kept.add(s)
    for size in sorted(k for k in by_size if k > 2):
        for s in by_size[size]:
            if singles.isdisjoint(s) and not any(
                frozenset(sub) in kept for r in range(2, size) for sub in combinations(s, r)
            ):
                kept.add(s)
    return kept


def _product(a_family: Family, b_family: Family, order: int) -> list[frozenset[int]]:
    """Every union of one set from each family, of order <= ``order``."""
    if not a_family or not b_family:
        return []
    # An event that is a single in both families is a single of the product, and every
    # other union containing it is not minimal: drop those before the cross product (in
    # a service over two backends that share a platform, that is most of the work).
    singles_a = {e for s in a_family if len(s) == 1 for e in s}
    common = {e for s in b_family if len(s) == 1 for e in s} & singles_a
    head: list[frozenset[int]] = []
    if common:
        head = [frozenset((e,)) for e in common]
        a_family = {a for a in a_family if a.isdisjoint(common)}
        b_family = {b for b in b_family if b.isdisjoint(common)}
        if not a_family or not b_family:
            return head
    by_size: dict[int, list[frozenset[int]]] = {}
    for b in b_family:
        by_size.setdefault(len(b), []).append(b)
    index: dict[int, list[frozenset[int]]] | None = None
    out: list[frozenset[int]] = head
    for a in a_family:
        la = len(a)
        for lb, group in by_size.items():
            if la + lb <= order:
                out.extend(a | b for b in group)
                continue
            # Too big unless they overlap: only look at sets sharing an element with a.
            if index is None:
                index = {}
                for b in b_family:
                    for e in b:
                        index.setdefault(e, []).append(b)
            seen: set[frozenset[int]] = set()
            for e in a:
                for b in index.get(e, ()):
                    if len(b) == lb and b not in seen:
                        seen.add(b)
                        u = a | b
                        if len(u) <= order:
                            out.append(u)
    return out


def _atleast(m: int, families: list[Family], order: int) -> Family:
    n = len(families)
    dp: list[Family] = [{_EMPTY}] + [set() for _ in range(m)]
    for i, fam in enumerate(families):
        remaining = n - i - 1
        for j in range(min(m, i + 1), 0, -1):
            if j + remaining < m:
                break  # cannot reach m any more; lower j are useless too
            if not dp[j - 1]:
                continue
            combined = _product(dp[j - 1], fam, order)
            if combined:
                dp[j] = _minimal([*dp[j], *combined])
    return dp[m]


def cut_sets(tree: FaultTree, order: int) -> list[Family]:
    """The truncated minimal cut-set family of every gate, indexed by gate number."""
    if order < 1:
        raise ValueError(f"max order {order} must be at least 1")
    n_events = tree.n_events
    out: list[Family] = []
    # Whether a gate's family holds only singletons: then an OR over such children is a
    # plain set union (no set can contain another), done at C speed. Most gates in a
    # real map are chains of ORs whose families are exactly that.
    only_singles: list[bool] = []

    def family(literal: int) -> Family:
        if literal < n_events:
            return {frozenset((literal,))}
        return out[literal - n_events]

    for g, children in enumerate(tree.gate_children):
        fams = [family(c) for c in children]
        if tree.gate_kind[g] == "or":
            if len(fams) == 1:
                result = fams[0]
                singles = children[0] < n_events or only_singles[children[0] - n_events]
            elif all(c < n_events or only_singles[c - n_events] for c in children):
                result = set().union(*fams)
                singles = True
            else:
                result = _minimal(s for fam in fams for s in fam)
                singles = all(len(s) == 1 for s in result)
        else:
            result = _atleast(tree.gate_m[g], fams, order)
            singles = all(len(s) == 1 for s in result)
        out.append(result)
        only_singles.append(singles)
    return out


def literal_family(tree: FaultTree, families: list[Family], literal: int) -> Family:
    if literal < tree.n_events:
        return {frozenset((literal,))}
    return families[literal - tree.n_events]
