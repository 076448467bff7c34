"""The gates' edge: datasets, schemas, models and verdicts as vault snapshots.

Owns: reading a dataset snapshot's tabular files into tables (every byte verified by
the vault on the way), finding the schema inferred from a reference snapshot or
inferring and storing it (``schema/<name>``, lineage: the reference), loading a model
snapshot, and recording a verdict as a signed snapshot (``verdict/<subject name>``,
lineage: the subject first, then everything the verdict was judged against) whose
``verdict.json`` is canonical JSON with no time in it, so the same inputs give the same
bytes. ``validate_data`` and ``validate_model`` are the two calls the CLI makes (and a
pipeline stage will).

Must never: decide anything (the pure gates do), write anything but a schema or a
verdict, or record a verdict for a snapshot other than the one it judged (the subject's
snapshot id is in the verdict).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bastion import event_kinds as ek
from bastion.errors import NotFoundError, UsageError
from bastion.events import NO_EVENTS, Emit
from bastion.names import parse_ref
from bastion.validate._conform import SchemaReport
from bastion.validate._data_gate import DataGateConfig, DataVerdict, check_data
from bastion.validate._model_gate import ModelGateConfig, ModelVerdict, check_model
from bastion.validate._models import LoadedModel, evaluate, load_model
from bastion.validate._schema import Schema, infer_schema
from bastion.validate._table import SUFFIXES, Table, TableError, read_table
from bastion.validate._verdict import Finding, Status

if TYPE_CHECKING:
    from bastion.vault import Snapshot, Vault

__all__ = [
    "VERDICT_FORMAT",
    "GateRun",
    "canonical_json",
    "load_dataset",
    "schema_for",
    "schema_name",
    "validate_data",
    "validate_model",
    "verdict_name",
]

VERDICT_FORMAT = "bastion.verdict/1"
_SCHEMA_FILE = "schema.json"
_VERDICT_FILE = "verdict.json"


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as the strings ``NaN``, ``Infinity``."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def canonical_json(doc: Mapping[str, Any]) -> bytes:
    """Sorted keys, no spaces, non-finite numbers as strings: the same document always
    gives the same bytes."""
    return json.dumps(_finite(doc), sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _about(snap: Snapshot) -> dict[str, Any]:
    return {"ref": snap.ref, "id": snap.id}


def schema_name(dataset: str) -> str:
    """``dataset/digits`` -> ``schema/digits``."""
    return "schema/" + parse_ref(dataset).name.split("/", 1)[1]


def verdict_name(subject: str) -> str:
    """``model/digits`` -> ``verdict/model/digits``."""
    return "verdict/" + parse_ref(subject).name


# ------------------------------------------------------------------------ datasets


def load_dataset(vault: Vault, ref: str | Snapshot) -> tuple[Snapshot, list[Table]]:
    """The snapshot and one table per tabular file in it (``.csv``, ``.parquet``,
    ``.npy``, ``.npz``), in path order. A file that cannot be read is a ``TableError``."""
    snap = vault.snapshot(ref)
    paths = [p for p in sorted(snap.files) if p.lower().endswith(SUFFIXES)]
    if not paths:
        raise UsageError(
            f"{snap.ref}: no tabular files ({', '.join(SUFFIXES)}); it holds "
            f"{', '.join(sorted(snap.files)[:5]) or 'nothing'}"
        )
    return snap, [read_table(p, vault.read(snap, p), source=f"{snap.ref}:{p}") for p in paths]


def _read_schema(vault: Vault, snap: Snapshot) -> Schema:
    raw = vault.read(snap, _SCHEMA_FILE)
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"{snap.ref}:{_SCHEMA_FILE}: not JSON ({exc})") from None
    return Schema.from_json(doc, where=f"{snap.ref}:{_SCHEMA_FILE}")


def schema_for(
    vault: Vault,
    reference: Snapshot,
    table: Table,
    *,
    label: str | None = "label",
    events: Emit = NO_EVENTS,
) -> tuple[Schema, Snapshot, bool]:
    """The schema inferred from ``reference`` (the newest ``schema/<name>`` whose source
    is that exact snapshot), or a new one inferred from ``table`` and stored. Returns
    the schema, its snapshot, and whether it was made now."""
    name = schema_name(reference.name)
    for snap in reversed(vault.versions(name)):
        if snap.meta.get("source_id") == reference.id:
            return _read_schema(vault, snap), snap, False
    schema = infer_schema(table, label=label, source=_about(reference))
    snap = vault.commit(
        name,
        {_SCHEMA_FILE: canonical_json(schema.to_json())},
        meta={"source": reference.ref, "source_id": reference.id},
        lineage=[reference.ref],
    )
    events.emit(
        ek.VALIDATE_SCHEMA_STORED,
        reference.ref,
        ref=snap.ref,
        source=reference.ref,
        columns=len(schema.columns),
    )
    return schema, snap, True


# ------------------------------------------------------------------------ verdicts


@dataclass(frozen=True, slots=True)
class GateRun:
    """What ``validate_data`` or ``validate_model`` did: the verdict, the document it
    recorded (``verdict.json``'s content), the verdict snapshot (None with
    ``record=False``), and, for the data gate, the schema snapshot and whether it was
    inferred now."""

    status: Status
    document: Mapping[str, Any]
    verdict: DataVerdict | ModelVerdict
    snapshot: Snapshot | None
    schema: Snapshot | None = None
    schema_created: bool = False


def _versions() -> dict[str, str]:
    import numpy
    import scipy

    from bastion import __version__

    return {"bastion": __version__, "numpy": numpy.__version__, "scipy": scipy.__version__}


def _record(
    vault: Vault,
    subject: Snapshot,
    document: Mapping[str, Any],
    lineage: Sequence[str],
    gate: str,
) -> Snapshot:
    return vault.commit(
        verdict_name(subject.name),
        {_VERDICT_FILE: canonical_json(document)},
        meta={
            "gate": gate,
            "status": document["status"],
            "subject": subject.ref,
            "subject_id": subject.id,
        },
        lineage=[subject.ref, *(r for r in lineage if r != subject.ref)],
    )


def validate_data(
    vault: Vault,
    ref: str,
    against: str,
    *,
    schema: str | None = None,
    test: str | None = None,
    label: str | None = "label",
    config: DataGateConfig | None = None,
    record: bool = True,
    events: Emit | None = None,
) -> GateRun:
    """The data gate on snapshot ``ref`` against snapshot ``against`` (the schema
    inferred from it, or ``schema``: a ``schema/...`` ref); ``test``: a held-out dataset
    whose rows must not appear in ``ref``. ``events``: default, the vault's."""
    cfg = config or DataGateConfig()
    events = events if events is not None else vault.events
    ref_snap, ref_parts = _load_reference(vault, against)
    ref_table = Table.concat(ref_parts, source=ref_snap.ref)
    if schema is not None:
        schema_snap = vault.snapshot(schema)
        rules, created = _read_schema(vault, schema_snap), False
    else:
        rules, schema_snap, created = schema_for(
            vault, ref_snap, ref_table, label=label, events=events
        )
    subject = vault.snapshot(ref)
    test_snap = None
    test_table = None
    if test is not None:
        test_snap, test_parts = _load_reference(vault, test, what="test set")
        test_table = Table.concat(test_parts, source=test_snap.ref)
    try:
        _, parts = load_dataset(vault, subject)
        verdict = check_data(parts, ref_table, rules, test=test_table, config=cfg)
    except TableError as exc:
        finding = Finding("schema.file", str(exc))
        verdict = DataVerdict(
            Status.FAILED, (finding,), SchemaReport((finding,), stopped=True, table=None)
        )
    inputs: dict[str, Any] = {"schema": _about(schema_snap)}
    if test_snap is not None:
        inputs["test"] = _about(test_snap)
    document = {
        "format": VERDICT_FORMAT,
        "gate": "data",
        "subject": _about(subject),
        "against": _about(ref_snap),
        "inputs": inputs,
        "config": cfg.to_json(),
        "versions": _versions(),
        **verdict.to_json(),
    }
    snap = None
    if record:
        lineage = [ref_snap.ref, schema_snap.ref] + ([test_snap.ref] if test_snap else [])
        snap = _record(vault, subject, document, lineage, "data")
    drifted = len(verdict.drift.drifted) if verdict.drift is not None else 0
    events.emit(
        ek.VALIDATE_DATA_CHECKED,
        subject.ref,
        status=str(verdict.status),
        against=ref_snap.ref,
        verdict=snap.ref if snap is not None else None,
        findings=len(verdict.findings),
        drifted=drifted,
    )
    return GateRun(verdict.status, document, verdict, snap, schema_snap, created)


def _load_reference(
    vault: Vault, ref: str, *, what: str = "reference"
) -> tuple[Snapshot, list[Table]]:
    try:
        return load_dataset(vault, ref)
    except TableError as exc:
        raise UsageError(
            f"the {what} cannot be read as a table: {exc}; point at a snapshot that can"
        ) from None


# -------------------------------------------------------------------------- models


def _load_model(vault: Vault, snap: Snapshot) -> LoadedModel:
    for needed in ("model.safetensors", "model.json"):
        if needed not in snap.files:
            raise UsageError(
                f"{snap.ref}: no {needed}; a model snapshot holds model.safetensors and "
                "model.json (as examples/digits/train.py stores them)"
            )
    return load_model(
        vault.read(snap, "model.safetensors"), vault.read(snap, "model.json"), snap.ref
    )


def validate_model(
    vault: Vault,
    candidate: str,
    against: str | None,
    *,
    holdout: str,
    golden: str,
    label: str = "label",
    config: ModelGateConfig | None = None,
    record: bool = True,
    events: Emit | None = None,
) -> GateRun:
    """The model gate on snapshot ``candidate`` against the model ``against`` (None: no
    baseline, so only absolute thresholds), evaluated on the ``holdout`` and ``golden``
    dataset snapshots. ``events``: default, the vault's."""
    cfg = config or ModelGateConfig()
    events = events if events is not None else vault.events
    cand_snap = vault.snapshot(candidate)
    try:
        base_snap = vault.snapshot(against) if against is not None else None
    except NotFoundError as exc:
        raise NotFoundError(
            f"{exc}; for a first model give only absolute thresholds and no --against"
        ) from None
    cand_model = _load_model(vault, cand_snap)
    base_model = _load_model(vault, base_snap) if base_snap is not None else None
    sets: list[tuple[str, Snapshot, Table]] = []
    for name, ref in (("holdout", holdout), ("golden", golden)):
        snap, parts = _load_reference(vault, ref, what=f"{name} set")
        sets.append((name, snap, Table.concat(parts, source=snap.ref)))
    cand_evals = [evaluate(cand_model, t, label=label, name=n) for n, _, t in sets]
    base_evals = (
        [evaluate(base_model, t, label=label, name=n) for n, _, t in sets]
        if base_model is not None
        else None
    )
    verdict = check_model(
        cand_evals, base_evals, config=cfg, nonfinite_weights=cand_model.nonfinite
    )
    document = {
        "format": VERDICT_FORMAT,
        "gate": "model",
        "subject": _about(cand_snap),
        "against": _about(base_snap) if base_snap is not None else None,
        "inputs": {name: _about(snap) for name, snap, _ in sets},
        "config": cfg.to_json(),
        "versions": _versions(),
        **verdict.to_json(),
    }
    recorded = None
    if record:
        lineage = [s.ref for _, s, _ in sets]
        if base_snap is not None:
            lineage.insert(0, base_snap.ref)
        recorded = _record(vault, cand_snap, document, lineage, "model")
    events.emit(
        ek.VALIDATE_MODEL_CHECKED,
        cand_snap.ref,
        status=str(verdict.status),
        against=base_snap.ref if base_snap is not None else None,
        verdict=recorded.ref if recorded is not None else None,
        findings=len(verdict.findings),
    )
    return GateRun(verdict.status, document, verdict, recorded)
