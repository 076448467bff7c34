"""The manifest, ``bastion.yaml``: one description of the AI system that every part reads.

``load(path)`` returns a checked ``Manifest`` or raises ``ManifestError`` listing every
problem with its file:line:column and field path.
"""

from bastion.manifest._load import DEFAULT_FILE, load, loads
from bastion.manifest._model import (
    Backend,
    CheckpointPolicy,
    Component,
    Dependency,
    GatewayPolicy,
    Job,
    Manifest,
    RecoveryTarget,
    Redundancy,
    Replicas,
    RestartPolicy,
    Service,
    Slo,
    VaultConfig,
    WorkerSlot,
)

__all__ = [
    "DEFAULT_FILE",
    "Backend",
    "CheckpointPolicy",
    "Component",
    "Dependency",
    "GatewayPolicy",
    "Job",
    "Manifest",
    "RecoveryTarget",
    "Redundancy",
    "Replicas",
    "RestartPolicy",
    "Service",
    "Slo",
    "VaultConfig",
    "WorkerSlot",
    "load",
    "loads",
    "schema",
]


def schema() -> dict[str, object]:
    """JSON Schema of the manifest, for editors."""
    out = Manifest.model_json_schema()
    out["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    out["title"] = "bastion.yaml"
    return out
