"""The dependency map: single points of failure by minimal cut sets, exact availability.

Built from the manifest (components, jobs, services, backends, replicas, inputs, vault
replicas), so it cannot drift from what runs. ``map_manifest(manifest)`` or
``analyze(Graph([...]))`` return a ``MapReport``; ``render(report, fmt)`` draws it as
text, JSON (schema ``bastion.map/1``), Mermaid, DOT or one self-contained HTML file;
``observed_dependencies(manifest, log)`` lists what the event log saw that nobody declared.
"""

from bastion.map._analysis import (
    BlastRadius,
    CutSet,
    Finding,
    Importance,
    MapReport,
    TopResult,
    advice,
    analyze,
    map_manifest,
    to_json,
)
from bastion.map._graph import COMMON_CAUSE_TAGS, Graph, Node
from bastion.map._manifest import graph_from_manifest
from bastion.map._observed import ObservedDependency, ObservedReport, observed_dependencies
from bastion.map._render import FORMATS, render
from bastion.map._tree import DEFAULT_BETA, Event, FaultTree

__all__ = [
    "COMMON_CAUSE_TAGS",
    "DEFAULT_BETA",
    "FORMATS",
    "BlastRadius",
    "CutSet",
    "Event",
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
