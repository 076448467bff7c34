"""The declared map against what ran: dependencies the event log saw that nobody declared.

Owns: reading ``dep.used`` events (subject = the service or job id; data ``target``: what
it used, ``via``: ``backend`` or ``input``) and matching each against the manifest.

A use is declared when its target is, for a service: one of its backends (by name, url,
model ref, provider or component; a backend that names its component confirms that
component) or one of its ``depends_on`` ids; for a job: one of its inputs (the
same artifact name, any revision) or ``depends_on`` ids. Anything else is undeclared, and
so is any use by a subject the manifest does not know.

Must never: write to the log, or count an undeclared use as declared because it looks
similar (matching is exact, except for an input's revision).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bastion import event_kinds as ek
from bastion.errors import InvalidNameError
from bastion.events import EventLog
from bastion.manifest import Manifest
from bastion.names import parse_ref

__all__ = ["ObservedDependency", "ObservedReport", "observed_dependencies"]

KIND = ek.DEP_USED


@dataclass
class ObservedDependency:
    subject: str
    target: str
    via: str
    count: int = 0
    first_ts: float = 0.0
    last_ts: float = 0.0


@dataclass
class ObservedReport:
    events: int = 0
    undeclared: list[ObservedDependency] = field(default_factory=list)
    confirmed: list[ObservedDependency] = field(default_factory=list)
    never_seen: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        def row(d: ObservedDependency) -> dict[str, object]:
            return {
                "subject": d.subject,
                "target": d.target,
                "via": d.via,
                "count": d.count,
                "first_ts": d.first_ts,
                "last_ts": d.last_ts,
            }

        return {
            "events": self.events,
            "undeclared": [row(d) for d in self.undeclared],
            "confirmed": [row(d) for d in self.confirmed],
            "never_seen": [{"subject": s, "target": t} for s, t in self.never_seen],
        }


def _artifact(ref: str) -> str | None:
    try:
        return str(parse_ref(ref).name)
    except InvalidNameError:
        return None


def _declared(manifest: Manifest) -> dict[str, dict[str, str]]:
    """For each subject: every target string that counts as declared -> its canonical name."""
    out: dict[str, dict[str, str]] = {}
    for name, svc in manifest.services.items():
        known: dict[str, str] = {d.id: d.id for d in svc.depends_on}
        for b in svc.backends:
            # A backend that names its component is that component: using it confirms it.
            canonical = b.component if b.component else f"backend {b.name}"
            for alias in (b.name, b.url, b.model, b.provider, b.component):
                if alias:
                    known[alias] = canonical
        out[name] = known
    for name, job in manifest.jobs.items():
        known = {d.id: d.id for d in job.depends_on}
        for input_name, ref in job.inputs.items():
            known[ref] = f"input {input_name}"
            known[input_name] = f"input {input_name}"
            artifact = _artifact(ref)
            if artifact:
                known[artifact] = f"input {input_name}"
        out[name] = known
    return out


def observed_dependencies(
    manifest: Manifest, log: EventLog, *, since: float | None = None
) -> ObservedReport:
    declared = _declared(manifest)
    seen: dict[tuple[str, str, str], ObservedDependency] = {}
    report = ObservedReport()
    for event in log.query(kind=KIND, since=since):
        report.events += 1
        target = str(event.data.get("target", ""))
        via = str(event.data.get("via", ""))
        key = (event.subject, target, via)
        dep = seen.get(key)
        if dep is None:
            dep = seen[key] = ObservedDependency(event.subject, target, via, 0, event.ts)
        dep.count += 1
        dep.last_ts = event.ts
    used: set[tuple[str, str]] = set()
    for (subject, target, _via), dep in sorted(seen.items()):
        known = declared.get(subject, {})
        canonical = known.get(target)
        if canonical is None and "@" in target:
            artifact = _artifact(target)
            canonical = known.get(artifact) if artifact else None
        if canonical is None:
            report.undeclared.append(dep)
        else:
            report.confirmed.append(dep)
            used.add((subject, canonical))
    for subject, known in sorted(declared.items()):
        for canonical in sorted(set(known.values())):
            if (subject, canonical) not in used:
                report.never_seen.append((subject, canonical))
    return report
