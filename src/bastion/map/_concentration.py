"""Concentration per vendor: where the money goes beside where the failures come from.

Owns: ``vendor_concentration``, which puts each vendor's share of the spend (handed in,
read from ``<state_dir>/spend.db`` by the caller) beside its share of each top's
unavailability (from the map's minimal cut sets), and the finding raised when both are
concentrated on one vendor.

A *vendor* is named as cost budgets name it (docs/cost.md): a backend's ``provider``, or
the backend's name when it has none; a component's ``provider``, or its id when it is a
``vendor-api`` with none. A vendor's *unavailability share* of a top is the probability of
the top's minimal cut sets that contain any of the vendor's failure events (its
components, its backends, its provider's common cause) over the probability of all of
them: the group Fussell-Vesely importance under the rare-event approximation, over the
cut sets found (up to ``max_order``).

Must never: do I/O (the spend comes in as numbers); add shares across currencies (a
share is per currency, none is converted); report a share outside [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.map._analysis import MapReport

__all__ = ["CONCENTRATED", "VendorShare", "vendor_concentration"]

CONCENTRATED = 0.5
"""A vendor holding at least this share of the spend (in some currency) and of some top's
unavailability (or a SPOF) is concentrated: a finding says so."""

Spend = Mapping[tuple[str, str], Mapping[str, float]]
"""(service, backend) -> currency -> amount spent."""


@dataclass(frozen=True)
class VendorShare:
    """One vendor's concentration.

    Attributes:
        vendor: the vendor's name.
        backends: the ``service:backend`` map nodes it serves.
        components: the manifest components it runs.
        events: its failure events in the fault tree.
        spend: what was spent with it, by currency.
        spend_share: its share of all spend, by currency (0..1).
        unavailability_share: its share of each top's unavailability (0..1).
        spof: one of its events is a single point of failure of some top.
    """

    vendor: str
    backends: tuple[str, ...] = ()
    components: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    spend: dict[str, float] = field(default_factory=dict)
    spend_share: dict[str, float] = field(default_factory=dict)
    unavailability_share: dict[str, float] = field(default_factory=dict)
    spof: bool = False

    @property
    def max_spend_share(self) -> float:
        return max(self.spend_share.values(), default=0.0)

    @property
    def max_unavailability_share(self) -> float:
        return max(self.unavailability_share.values(), default=0.0)

    @property
    def concentrated(self) -> bool:
        return self.max_spend_share >= CONCENTRATED and (
            self.spof or self.max_unavailability_share >= CONCENTRATED
        )


def _clamp(x: float) -> float:
    return 0.0 if not x > 0 else min(1.0, x)  # NaN -> 0


def vendor_concentration(
    report: MapReport,
    vendor_of_backend: Mapping[str, str],
    spend: Spend | None = None,
) -> list[VendorShare]:
    """Every vendor of the map (and any the spend names), largest spend share first.

    ``vendor_of_backend``: ``service:backend`` -> vendor, as the manifest names them;
    ``spend``: (service, backend) -> currency -> amount, or None when nothing accounts
    spend (then every spend share is empty)."""
    graph, tree = report.graph, report.tree
    backends: dict[str, set[str]] = {}
    components: dict[str, set[str]] = {}
    nodes_of: dict[str, set[str]] = {}
    for node_id, node in graph.nodes.items():
        vendor = vendor_of_backend.get(node_id)
        if vendor is not None:
            backends.setdefault(vendor, set()).add(node_id)
        elif node.origin.startswith("components[") and (node.provider or node.kind == "vendor-api"):
            vendor = node.provider or node_id
            components.setdefault(vendor, set()).add(node_id)
        elif node.provider and ":" in node_id:
            vendor = node.provider
        if vendor is not None:
            nodes_of.setdefault(vendor, set()).add(node_id)
    events_of: dict[str, set[str]] = {}
    for event in tree.events:
        for vendor, nodes in nodes_of.items():
            if (event.node is not None and event.node in nodes) or (
                event.tag == "provider" and event.value == vendor
            ):
                events_of.setdefault(vendor, set()).add(event.id)
    totals: dict[str, float] = {}
    spent: dict[str, dict[str, float]] = {}
    for (service, backend), by_currency in (spend or {}).items():
        vendor = vendor_of_backend.get(f"{service}:{backend}", backend)
        mine = spent.setdefault(vendor, {})
        for currency, amount in by_currency.items():
            mine[currency] = mine.get(currency, 0.0) + amount
            totals[currency] = totals.get(currency, 0.0) + amount
    spofs = set(report.spofs)
    out = []
    for vendor in sorted(set(nodes_of) | set(spent)):
        mine_events = events_of.get(vendor, set())
        shares: dict[str, float] = {}
        for top in report.tops:
            whole = sum(c.probability for c in top.cut_sets)
            involved = [c for c in top.cut_sets if mine_events.intersection(c.events)]
            if involved:
                part = sum(c.probability for c in involved)
                shares[top.id] = _clamp(part / whole) if whole > 0 else 0.0
        money = spent.get(vendor, {})
        out.append(
            VendorShare(
                vendor=vendor,
                backends=tuple(sorted(backends.get(vendor, ()))),
                components=tuple(sorted(components.get(vendor, ()))),
                events=tuple(sorted(mine_events)),
                spend=dict(sorted(money.items())),
                spend_share={
                    c: _clamp(v / totals[c]) if totals[c] > 0 else 0.0
                    for c, v in sorted(money.items())
                },
                unavailability_share=shares,
                spof=bool(mine_events & spofs),
            )
        )
    out.sort(key=lambda v: (-v.max_spend_share, -v.max_unavailability_share, v.vendor))
    return out
