"""Pins the public API of ``bastion.map``: a change here must be deliberate."""

from __future__ import annotations

import bastion.map


def test_public_names() -> None:
    assert sorted(bastion.map.__all__) == [
        "BlastRadius",
        "COMMON_CAUSE_TAGS",
        "CutSet",
        "DEFAULT_BETA",
        "Event",
        "FORMATS",
        "FaultTree",
        "Finding",
        "Graph",
        "Importance",
        "MapReport",
        "Node",
        "ObservedDependency",
        "ObservedReport",
        "TopResult",
        "advice",
        "analyze",
        "graph_from_manifest",
        "map_manifest",
        "observed_dependencies",
        "render",
        "to_json",
    ]
    for name in bastion.map.__all__:
        assert hasattr(bastion.map, name)
