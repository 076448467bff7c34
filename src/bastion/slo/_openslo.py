"""OpenSLO (v1) YAML: the manifest's ``slos`` out, and back in as ``slos`` entries.

Owns: ``to_openslo`` (one ``kind: SLO`` document per manifest entry, its indicator inline,
a ratio metric whose source is ``type: bastion``) and ``from_openslo`` (documents of that
shape back to ``slos`` entries, as plain data to paste into a manifest).

Must never: import a document it cannot represent without saying which document and
field, and why (an unknown metric source, a window we do not keep, a second objective).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any

from bastion.errors import UsageError
from bastion.manifest import Slo

__all__ = ["from_openslo", "to_openslo"]


def to_openslo(slos: Iterable[Slo]) -> str:
    from ruamel.yaml import YAML

    docs = []
    for slo in slos:
        window: dict[str, Any]
        if slo.window == "month":
            window = {
                "duration": "1M",
                "isRolling": False,
                "calendar": {"startTime": "2020-01-01 00:00:00", "timeZone": "UTC"},
            }
        else:
            window = {"duration": slo.window, "isRolling": True}
        good: dict[str, Any] = {"service": slo.service}
        if slo.objective is not None:
            good["sli"] = "availability"
            target = slo.objective
        else:
            good["sli"] = "latency"
            good["threshold_ms"] = slo.p99_ms
            target = 0.99
        objective: dict[str, Any] = {"displayName": slo.id, "target": target}
        if slo.budgeting == "timeslices":
            objective["timeSliceTarget"] = slo.timeslice_target or target
            objective["timeSliceWindow"] = slo.timeslice
        spec = {
            "service": slo.service,
            "indicator": {
                "metadata": {"name": f"{slo.id}-sli"},
                "spec": {
                    "ratioMetric": {
                        "counter": True,
                        "good": {"metricSource": {"type": "bastion", "spec": good}},
                        "total": {
                            "metricSource": {"type": "bastion", "spec": {"service": slo.service}}
                        },
                    }
                },
            },
            "timeWindow": [window],
            "budgetingMethod": "Timeslices" if slo.budgeting == "timeslices" else "Occurrences",
            "objectives": [objective],
        }
        docs.append(
            {"apiVersion": "openslo/v1", "kind": "SLO", "metadata": {"name": slo.id}, "spec": spec}
        )
        if slo.objective is not None and slo.p99_ms is not None:
            latency = Slo.model_validate(
                {**slo.model_dump(), "id": f"{slo.id}-latency", "objective": None}
            )
            more = to_openslo([latency])
            docs.append(_load_all(more, "")[0])
    yaml = YAML()
    yaml.default_flow_style = False
    out = io.StringIO()
    yaml.dump_all(docs, out)
    return out.getvalue()


def _load_all(text: str, name: str) -> list[Any]:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        return [d for d in YAML(typ="safe").load_all(text) if d is not None]
    except YAMLError as exc:
        raise UsageError(f"{name}: not YAML: {exc}") from None


def _get(doc: Any, path: Sequence[str], where: str) -> Any:
    node = doc
    for i, key in enumerate(path):
        if not isinstance(node, dict) or key not in node:
            raise UsageError(f"{where}: missing {'.'.join(path[: i + 1])}")
        node = node[key]
    return node


def from_openslo(
    text: str, name: str, *, services: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """``slos`` entries from OpenSLO ``kind: SLO`` documents (other kinds are skipped).
    ``services``: the manifest's, to refuse an SLO about a service it does not have."""
    known = set(services) if services is not None else None
    out: list[dict[str, Any]] = []
    for i, doc in enumerate(_load_all(text, name)):
        where = f"{name}: document {i + 1}"
        if not isinstance(doc, dict) or doc.get("kind") != "SLO":
            continue
        if doc.get("apiVersion") != "openslo/v1":
            raise UsageError(f"{where}: apiVersion {doc.get('apiVersion')!r} is not openslo/v1")
        ident = _get(doc, ("metadata", "name"), where)
        spec = _get(doc, ("spec",), where)
        service = _get(spec, ("service",), where)
        if known is not None and service not in known:
            raise UsageError(
                f"{where}: spec.service: unknown service {service!r} "
                f"(the manifest's services: {', '.join(sorted(known)) or 'none'})"
            )
        good = _get(spec, ("indicator", "spec", "ratioMetric", "good", "metricSource"), where)
        if good.get("type") != "bastion":
            raise UsageError(
                f"{where}: indicator...good.metricSource.type {good.get('type')!r}: only "
                "type bastion (the gateway's own SLI rows) can be measured here"
            )
        objectives = _get(spec, ("objectives",), where)
        if not isinstance(objectives, list) or len(objectives) != 1:
            raise UsageError(f"{where}: spec.objectives: give exactly one objective")
        (objective,) = objectives
        target = float(_get(objective, ("target",), where))
        windows = _get(spec, ("timeWindow",), where)
        if not isinstance(windows, list) or len(windows) != 1:
            raise UsageError(f"{where}: spec.timeWindow: give exactly one window")
        (window,) = windows
        duration = str(_get(window, ("duration",), where))
        if window.get("isRolling", True):
            text_window = duration
        elif duration == "1M":
            text_window = "month"
        else:
            raise UsageError(
                f"{where}: spec.timeWindow[0]: a calendar window of {duration!r}; only 1M "
                "(the calendar month) is kept"
            )
        entry: dict[str, Any] = {"id": ident, "service": service, "window": text_window}
        kind = good.get("spec", {}).get("sli", "availability")
        if kind == "latency":
            entry["p99_ms"] = float(_get(good, ("spec", "threshold_ms"), where))
            if abs(target - 0.99) > 1e-9:
                raise UsageError(
                    f"{where}: spec.objectives[0].target: a latency objective here is a p99 "
                    f"(target 0.99), not {target}"
                )
        else:
            entry["objective"] = target
        if str(spec.get("budgetingMethod", "Occurrences")).lower() == "timeslices":
            entry["budgeting"] = "timeslices"
            if "timeSliceWindow" in objective:
                entry["timeslice"] = str(objective["timeSliceWindow"])
            if "timeSliceTarget" in objective:
                entry["timeslice_target"] = float(objective["timeSliceTarget"])
        try:
            Slo.model_validate(entry)
        except ValueError as exc:
            raise UsageError(f"{where}: {exc}") from None
        out.append(entry)
    return out
