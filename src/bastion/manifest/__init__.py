"""The manifest, ``bastion.yaml``: one description of the AI system that every part reads.

``load(path)`` returns a checked ``Manifest`` or raises ``ManifestError`` listing every
problem with its file:line:column and field path.
"""

from bastion.manifest._load import DEFAULT_FILE, load, loads
from bastion.manifest._model import (
    Backend,
    Budget,
    CheckpointPolicy,
    Component,
    Dependency,
    GatewayPolicy,
    Job,
    Manifest,
    Pipeline,
    PipelineStage,
    Placement,
    Price,
    RecoveryTarget,
    Redundancy,
    Replicas,
    RestartPolicy,
    RolloutPolicy,
    Segment,
    Service,
    Slo,
    SloAlerting,
    VaultConfig,
    WorkerSlot,
)

__all__ = [
    "DEFAULT_FILE",
    "Backend",
    "Budget",
    "CheckpointPolicy",
    "Component",
    "Dependency",
    "GatewayPolicy",
    "Job",
    "Manifest",
    "Pipeline",
    "PipelineStage",
    "Placement",
    "Price",
    "RecoveryTarget",
    "Redundancy",
    "Replicas",
    "RestartPolicy",
    "RolloutPolicy",
    "Segment",
    "Service",
    "Slo",
    "SloAlerting",
    "VaultConfig",
    "WorkerSlot",
    "load",
    "loads",
    "schema",
]


def schema() -> dict[str, object]:
    """JSON Schema of the manifest, for editors: it accepts what ``bastion check`` accepts,
    except what needs the whole document (references between sections, cycles)."""
    out = Manifest.model_json_schema()
    _describe(out)
    out["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    out["title"] = "bastion.yaml"
    _closed_maps(out)
    return out


def _describe(doc: dict[str, object]) -> None:
    """Give each property the string under its field (``_model.attribute_docs``) where it
    has no description of its own."""
    from bastion.manifest import _model

    docs = _model.attribute_docs()
    defs = doc.get("$defs")
    where: dict[str, object] = dict(defs) if isinstance(defs, dict) else {}
    where[Manifest.__name__] = doc
    for name, node in where.items():
        cls = getattr(_model, name, None)
        if cls is None or not isinstance(node, dict):
            continue
        # the object itself, or the object among the forms a custom schema offers
        # (Dependency: an id, or {id, type})
        forms = [node, *(f for f in node.get("anyOf", ()) if isinstance(f, dict))]
        for form in forms:
            props = form.get("properties")
            if not isinstance(props, dict):
                continue
            for field, info in cls.model_fields.items():
                prop = props.get(info.alias or field)
                text = docs.get(name, {}).get(field)
                if isinstance(prop, dict) and text and "description" not in prop:
                    prop["description"] = text


# pydantic leaves a bound on an optional whole number (Field(ge=1) on ``Int | None``) in
# its own words, which JSON Schema does not know and so would not check.
_BOUNDS = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}


def _closed_maps(node: object) -> None:
    # A mapping keyed by id (jobs, services, recovery) gets patternProperties from
    # pydantic, which lets a key that breaks the pattern through; check refuses one.
    if isinstance(node, dict):
        if "patternProperties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        if node.get("type") in ("integer", "number"):
            for ours, theirs in _BOUNDS.items():
                if ours in node:
                    node[theirs] = node.pop(ours)
        for value in node.values():
            _closed_maps(value)
    elif isinstance(node, list):
        for value in node:
            _closed_maps(value)
