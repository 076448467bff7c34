"""The built-in stages, each run as its own process: ``python -m bastion.pipeline._builtin``.

Owns: ``validate-data`` (the data gate, a signed verdict), ``evaluate`` (metrics of a
candidate on the held-out and golden sets, a ``run/...`` snapshot; non-finite outputs
fail it), ``gate`` (the model gate, a signed verdict) and ``promote`` (moves ``@prod``
through the promotion API, which requires a passing verdict for that exact snapshot).
The runner hands a stage its pinned inputs (``name@version``) and config in the JSON
file ``$BASTION_STAGE_SPEC``; the stage writes what it published to
``$BASTION_STAGE_RESULT``.

Exit codes: 0 the stage's gate passed and its output is published; 1 it failed (a
verdict that is not ``passed`` stops the stages after it; the verdict is still
recorded); 2 bad configuration.

Must never: read anything but the vault snapshots it was handed, or move a label
itself (promotion belongs to ``bastion.validate``).
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from bastion.errors import BastionError, UsageError

__all__ = ["main"]


def _data(vault: Any, inputs: dict[str, str], config: dict[str, Any], events: Any) -> Any:
    from bastion.validate import DataGateConfig, DriftConfig, validate_data

    drift = {k: config[k] for k in ("alpha", "min_rows", "numeric_effect") if k in config}
    run = validate_data(
        vault,
        inputs["data"],
        inputs["against"],
        schema=inputs.get("schema"),
        test=inputs.get("test"),
        label=config.get("label", "label"),
        config=DataGateConfig(drift=DriftConfig(**drift)),
        events=events,
    )
    return run.status, run.snapshot


def _thresholds(config: dict[str, Any], *, baseline: bool) -> dict[str, Any]:
    """The gate's thresholds (MLflow's MetricThreshold fields per metric). With no
    baseline yet (before the first promotion) only the absolute ``threshold`` of each
    applies; a gate left with none is a configuration error, never a pass."""
    from bastion.validate import DEFAULT_THRESHOLDS, METRICS, MetricThreshold

    given = config.get("thresholds")
    if not given:
        if not baseline:
            raise UsageError(
                "the gate has no baseline yet (its against input is absent) and no "
                "thresholds; give config.thresholds with an absolute threshold"
            )
        return dict(DEFAULT_THRESHOLDS)
    out = {}
    for name, given_rule in given.items():
        rule = given_rule
        metric = METRICS.get(name)
        if metric is None or not isinstance(rule, dict):
            raise UsageError(
                f"thresholds.{name}: expected a known metric ({', '.join(sorted(METRICS))}) "
                "with {threshold, min_absolute_change, min_relative_change}"
            )
        if not baseline:
            if rule.get("threshold") is None:
                continue
            rule = {"threshold": rule["threshold"]}
        out[name] = MetricThreshold(**rule, greater_is_better=metric.greater_is_better)
    if not out:
        raise UsageError(
            "the gate has no baseline yet and none of its thresholds is absolute; add a "
            "threshold (e.g. thresholds: {accuracy: {threshold: 0.85}})"
        )
    return out


def _gate(vault: Any, inputs: dict[str, str], config: dict[str, Any], events: Any) -> Any:
    from bastion.validate import ModelGateConfig, validate_model

    if "evaluation" in inputs:
        doc = json.loads(vault.read(inputs["evaluation"], "evaluation.json"))
        cand = vault.snapshot(inputs["candidate"])
        if doc.get("candidate", {}).get("id") != cand.id:
            raise UsageError(
                f"{inputs['evaluation']} evaluated {doc.get('candidate')}, not {cand.ref}"
            )
    run = validate_model(
        vault,
        inputs["candidate"],
        inputs.get("against"),
        holdout=inputs["holdout"],
        golden=inputs["golden"],
        label=config.get("label", "label"),
        config=ModelGateConfig(
            thresholds=_thresholds(config, baseline="against" in inputs),
            seed=int(config.get("seed", 0)),
            replicates=int(config.get("replicates", 2000)),
            min_examples=int(config.get("min_examples", 20)),
        ),
        events=events,
    )
    return run.status, run.snapshot


def _evaluate(
    vault: Any, inputs: dict[str, str], config: dict[str, Any], output: str
) -> tuple[Any, Any]:
    from bastion.validate import METRICS, Status, Table, canonical_json, evaluate, load_dataset
    from bastion.validate import load_model as load

    cand = vault.snapshot(inputs["candidate"])
    model = load(vault.read(cand, "model.safetensors"), vault.read(cand, "model.json"), cand.ref)
    label = config.get("label", "label")
    sets: dict[str, Any] = {}
    finite = model.nonfinite == {} or not any(model.nonfinite.values())
    for name in ("holdout", "golden"):
        snap, parts = load_dataset(vault, inputs[name])
        ev = evaluate(model, Table.concat(parts, source=snap.ref), label=label, name=name)
        metrics = {m: METRICS[m].value(ev) for m in sorted(METRICS)}
        finite = finite and ev.nonfinite == 0 and all(math.isfinite(v) for v in metrics.values())
        sets[name] = {
            "set": {"ref": snap.ref, "id": snap.id},
            "examples": ev.examples,
            "nonfinite": ev.nonfinite,
            "metrics": metrics,
        }
    doc = {
        "format": "bastion.evaluation/1",
        "candidate": {"ref": cand.ref, "id": cand.id},
        "nonfinite_weights": dict(model.nonfinite),
        "sets": sets,
        "finite": finite,
    }
    snap = vault.commit(
        output,
        {"evaluation.json": canonical_json(doc)},
        meta={"candidate": cand.ref, "candidate_id": cand.id, "finite": finite},
        lineage=[cand.ref, *(s["set"]["ref"] for s in sets.values())],
    )
    return (Status.PASSED if finite else Status.FAILED), snap


def _promote(vault: Any, inputs: dict[str, str], config: dict[str, Any], events: Any) -> Any:
    """``bastion.validate.promote``: ``@prod`` moves only with a passing model-gate
    verdict for this exact snapshot (judged against the ``@prod`` of now), and never for
    a model whose lineage holds a dataset the data gate stopped. A refusal is exit 1."""
    from bastion.validate import Status, promote

    model = vault.snapshot(inputs["model"])
    verdict = vault.snapshot(inputs["verdict"])
    if verdict.meta.get("subject_id") != model.id:
        raise UsageError(
            f"{verdict.ref} is a verdict on {verdict.meta.get('subject')}, not {model.ref}"
        )
    done = promote(vault, model.ref, events=events)
    print(f"promote: {model.ref} {'moved @prod' if done.moved else 'is @prod already'}")
    return Status.PASSED, model


def main() -> int:
    from bastion.events import EventLog
    from bastion.manifest import load
    from bastion.vault import Vault

    spec = json.loads(Path(os.environ["BASTION_STAGE_SPEC"]).read_text())
    manifest = load(spec["manifest"])
    events = EventLog.in_state_dir(manifest.state_dir)
    vault = Vault.from_manifest(manifest, events=events)
    uses, inputs, config = spec["uses"], spec["inputs"], spec["config"]
    if uses == "validate-data":
        status, snap = _data(vault, inputs, config, events)
    elif uses == "gate":
        status, snap = _gate(vault, inputs, config, events)
    elif uses == "evaluate":
        status, snap = _evaluate(vault, inputs, config, spec["output"])
    elif uses == "promote":
        status, snap = _promote(vault, inputs, config, events)
    else:
        raise UsageError(f"unknown built-in {uses!r}")
    result = {
        "status": str(status),
        "ref": snap.ref if snap else None,
        "id": snap.id if snap else None,
    }
    Path(os.environ["BASTION_STAGE_RESULT"]).write_text(json.dumps(result))
    print(f"{uses}: {status} ({result['ref']})", flush=True)
    return 0 if str(status) == "passed" else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BastionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code if exc.exit_code in (1, 2) else 1)
