"""Promotion through gates only: moving a model's ``@prod`` label, and moving it back.

Owns: deciding whether a model snapshot may become ``@prod`` (a passing model-gate
verdict for that exact snapshot id, judged against the ``@prod`` of now), ``--force``
(the vault's admin key, checked against the replicas' pins, and an event of its own),
and the promotion history that ``rollback`` walks back along. The history is a signed
snapshot ``run/promotion/<model name>`` (``promotion.json``: every promoted version in
order, and a log of every action), so it survives restarts and lives where the models
do, not on one host.

Which verdict counts: the newest ``verdict/<model name>`` snapshot whose signed meta
and ``verdict.json`` both name the candidate's snapshot id (not its name or version:
a version number can be reused by a rebuilt vault, a name always is). Its signature
is checked when the vault loads it, its bytes by their hashes when read. A newer
failing verdict for the same snapshot outranks an older pass. The verdict must have
been judged against the snapshot ``@prod`` points at now (or, with no ``@prod`` yet,
against nothing): a pass against a baseline that has since been replaced says nothing
about the new one. And a model trained on a dataset the data gate failed (a dataset in its
lineage whose newest data verdict did not pass) is refused however well it scores.

Must never: move ``@prod`` without a passing verdict or the admin key; read a missing,
unreadable or ``insufficient_evidence`` verdict as a pass; let a verdict for one
snapshot promote another.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bastion import event_kinds as ek
from bastion.errors import CheckFailed, IntegrityError, NotFoundError, UsageError
from bastion.events import Emit
from bastion.names import parse_ref
from bastion.validate._snapshots import VERDICT_FORMAT, canonical_json, verdict_name
from bastion.validate._verdict import Status

if TYPE_CHECKING:
    from bastion.vault import Snapshot, Vault

__all__ = [
    "PROD",
    "PROMOTION_FORMAT",
    "Promotion",
    "PromotionRecord",
    "PromotionRefused",
    "passing_verdict",
    "promote",
    "promotion_history",
    "promotion_name",
    "rollback",
]

PROD = "prod"
PROMOTION_FORMAT = "bastion.promotion/1"
_RECORD_FILE = "promotion.json"
_VERDICT_FILE = "verdict.json"


class PromotionRefused(CheckFailed):
    """``@prod`` was not moved: no passing verdict for that exact snapshot, or nothing to
    roll back to. ``reason`` says which, and how to get one (exit 1)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: @{PROD} not moved: {reason}")
        self.name = name
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Promotion:
    """What ``promote`` or ``rollback`` did.

    ``action``: ``promote``, ``force`` or ``rollback``. ``version`` / ``snapshot_id``:
    what ``@prod`` points at now; ``previous``: the version it pointed at before (None:
    there was no ``@prod``). ``verdict``: the verdict snapshot that allowed it (None for
    ``force`` and ``rollback``). ``moved``: False when ``@prod`` already pointed there.
    ``record``: the promotion history snapshot written.
    """

    name: str
    action: str
    version: int
    snapshot_id: str
    previous: int | None
    verdict: str | None
    moved: bool
    record: str | None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "action": self.action,
            "version": self.version,
            "snapshot_id": self.snapshot_id,
            "previous": self.previous,
            "verdict": self.verdict,
            "moved": self.moved,
            "record": self.record,
        }


@dataclass(frozen=True, slots=True)
class PromotionRecord:
    """The promotion history of one model: ``stack`` holds each promoted version in
    order (``{version, id, verdict, action}``), the one ``@prod`` points at last;
    ``rollback`` pops it. ``log`` is every action ever taken, rollbacks included. A
    ``@prod`` that was set before the first promotion is adopted as the first entry
    (``action: adopted``)."""

    name: str
    stack: tuple[Mapping[str, Any], ...] = ()
    log: tuple[Mapping[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PROMOTION_FORMAT,
            "name": self.name,
            "stack": [dict(e) for e in self.stack],
            "log": [dict(e) for e in self.log],
        }


def promotion_name(model: str) -> str:
    """``model/digits`` -> ``run/promotion/model/digits``."""
    return "run/promotion/" + parse_ref(model).name


def promotion_history(vault: Vault, model: str) -> PromotionRecord:
    """The model's promotion history (empty if it was never promoted)."""
    name = parse_ref(model).name
    try:
        snap = vault.snapshot(promotion_name(name))
    except NotFoundError:
        return PromotionRecord(name)
    where = f"{snap.ref}:{_RECORD_FILE}"
    try:
        doc = json.loads(vault.read(snap, _RECORD_FILE))
    except ValueError as exc:
        raise IntegrityError(f"{where}: not JSON ({exc})") from None
    if doc.get("format") != PROMOTION_FORMAT or doc.get("name") != name:
        raise IntegrityError(f"{where}: not a {PROMOTION_FORMAT} record for {name}")
    return PromotionRecord(name, tuple(doc.get("stack", ())), tuple(doc.get("log", ())))


def _model(vault: Vault, ref: str) -> Snapshot:
    parsed = parse_ref(ref)
    if parsed.kind != "model":
        raise UsageError(
            f"{ref}: only models are promoted (a ref like model/digits@3); "
            f"{parsed.kind}/ snapshots have no @{PROD}"
        )
    return vault.snapshot(ref)


def _prod(vault: Vault, name: str) -> Snapshot | None:
    version = vault.labels(name).get(PROD)
    return vault.snapshot(f"{name}@{version}") if version else None


def _read_verdict(vault: Vault, snap: Snapshot) -> dict[str, Any]:
    try:
        doc = json.loads(vault.read(snap, _VERDICT_FILE))
    except (ValueError, NotFoundError) as exc:
        raise IntegrityError(f"{snap.ref}:{_VERDICT_FILE} cannot be read ({exc})") from None
    if not isinstance(doc, dict):
        raise IntegrityError(f"{snap.ref}:{_VERDICT_FILE} is not a verdict document")
    return doc


def passing_verdict(vault: Vault, candidate: Snapshot, prod: Snapshot | None) -> Snapshot:
    """The verdict that lets ``candidate`` replace ``prod`` (see the module), or
    ``PromotionRefused`` saying what is missing."""
    name = candidate.name
    mine = [
        v
        for v in vault.versions(verdict_name(name))
        if v.meta.get("subject_id") == candidate.id and v.meta.get("gate") == "model"
    ]
    if not mine:
        raise PromotionRefused(
            name,
            f"no model-gate verdict names snapshot {candidate.ref} (id {candidate.id[:16]}); "
            f"run `bastion validate model {candidate.ref} --against {name}@{PROD} ...` first",
        )
    verdict = mine[-1]
    doc = _read_verdict(vault, verdict)
    subject = doc.get("subject") or {}
    if (
        doc.get("format") != VERDICT_FORMAT
        or doc.get("gate") != "model"
        or subject.get("id") != candidate.id
        or parse_ref(str(subject.get("ref", name))).name != name
    ):
        raise PromotionRefused(
            name, f"{verdict.ref} does not name snapshot {candidate.ref}; re-run the model gate"
        )
    status = doc.get("status")
    if status != Status.PASSED or verdict.meta.get("status") != Status.PASSED:
        raise PromotionRefused(
            name,
            f"the newest verdict for {candidate.ref}, {verdict.ref}, is {status} "
            "(only passed promotes)",
        )
    against = doc.get("against")
    against_id = against.get("id") if isinstance(against, dict) else None
    if prod is not None and against_id != prod.id:
        judged = against.get("ref") if isinstance(against, dict) else "no baseline"
        raise PromotionRefused(
            name,
            f"{verdict.ref} judged {candidate.ref} against {judged}, but @{PROD} is "
            f"{prod.ref}; re-run the gate with --against {name}@{PROD}",
        )
    return verdict


def _check_data(vault: Vault, candidate: Snapshot) -> None:
    """``PromotionRefused`` when a dataset named in ``candidate``'s lineage has a newest
    data-gate verdict (for that exact snapshot) that did not pass. A dataset never judged
    does not stop it (not every model's data goes through a gate)."""
    for ref in candidate.lineage:
        try:
            parsed = parse_ref(ref)
        except UsageError:
            continue
        if parsed.kind != "dataset":
            continue
        data = vault.snapshot(ref)
        judged = [
            v
            for v in vault.versions(verdict_name(data.name))
            if v.meta.get("subject_id") == data.id and v.meta.get("gate") == "data"
        ]
        if judged and judged[-1].meta.get("status") != Status.PASSED:
            raise PromotionRefused(
                candidate.name,
                f"{candidate.ref} was trained on {data.ref}, which the data gate judged "
                f"{judged[-1].meta.get('status')} ({judged[-1].ref}); a bad dataset never "
                "reaches @prod, however the model scores",
            )


def _entry(snap: Snapshot, action: str, verdict: str | None, **extra: Any) -> dict[str, Any]:
    return {"version": snap.version, "id": snap.id, "action": action, "verdict": verdict, **extra}


def _write_record(
    vault: Vault, record: PromotionRecord, lineage: Sequence[str], meta: Mapping[str, Any]
) -> Snapshot:
    return vault.commit(
        promotion_name(record.name),
        {_RECORD_FILE: canonical_json(record.to_json())},
        meta=dict(meta),
        lineage=list(lineage),
    )


def promote(
    vault: Vault,
    ref: str,
    *,
    force: bool = False,
    reason: str = "",
    events: Emit | None = None,
) -> Promotion:
    """Move ``<name>@prod`` to snapshot ``ref`` (e.g. ``model/digits@3``) if a passing
    model-gate verdict for that exact snapshot exists (see the module); otherwise
    ``PromotionRefused``, and ``@prod`` stays. ``force``: skip the verdict; needs the
    vault's admin key (``ScopeError`` without it) and is recorded as its own event with
    ``reason``. ``events``: default, the vault's."""
    from bastion.vault._admin import require_admin

    events = events if events is not None else vault.events
    candidate = _model(vault, ref)
    name = candidate.name
    prod = _prod(vault, name)
    history = promotion_history(vault, name)
    previous = prod.version if prod is not None else None
    action = "force" if force else "promote"
    if prod is not None and prod.id == candidate.id:
        return Promotion(
            name,
            action,
            candidate.version,
            candidate.id,
            previous,
            None,
            moved=False,
            record=None,
        )
    verdict_ref: str | None = None
    extra: dict[str, Any] = {}
    if force:
        admin = require_admin(vault.replicas, vault.admin_key_path)
        entry_bytes = canonical_json({"name": name, "id": candidate.id, "reason": reason})
        extra = {"reason": reason, "admin_signature": admin.sign(entry_bytes).hex()}
    else:
        try:
            _check_data(vault, candidate)
            verdict_ref = passing_verdict(vault, candidate, prod).ref
        except PromotionRefused as refused:
            events.emit(
                ek.MODEL_PROMOTION_REFUSED,
                name,
                ref=candidate.ref,
                reason=refused.reason,
                prod=prod.ref if prod is not None else None,
            )
            raise
    entry = _entry(candidate, action, verdict_ref, **extra)
    stack = history.stack
    if not stack and prod is not None:
        # a @prod set before any promotion (by `vault put --label prod`, an older
        # Bastion): adopt it, so the first rollback can return to it
        stack = (_entry(prod, "adopted", None),)
    if not stack or stack[-1].get("id") != candidate.id:
        stack = (*stack, entry)
    record = PromotionRecord(name, stack, (*history.log, {**entry, "from": previous}))
    lineage = [candidate.ref] + ([verdict_ref] if verdict_ref else [])
    # the history first, then the label: a crash between leaves a record one step ahead,
    # which a second promote or a rollback settles; never a @prod the history lacks
    written = _write_record(
        vault, record, lineage, {"action": action, "version": candidate.version}
    )
    vault.label(name, candidate.version, PROD)
    common: dict[str, Any] = {
        "ref": candidate.ref,
        "version": candidate.version,
        "from_version": previous,
    }
    if force:
        events.emit(ek.MODEL_PROMOTION_FORCED, name, reason=reason, **common)
    else:
        events.emit(ek.MODEL_PROMOTED, name, verdict=verdict_ref, **common)
    return Promotion(
        name,
        action,
        candidate.version,
        candidate.id,
        previous,
        verdict_ref,
        moved=True,
        record=written.ref,
    )


def rollback(vault: Vault, model: str, *, events: Emit | None = None) -> Promotion:
    """Move ``<name>@prod`` back to the version promoted before the current one (the
    history's previous entry; each rollback steps one further back). No verdict is
    needed: that version was promoted once. ``PromotionRefused`` when there is none."""
    events = events if events is not None else vault.events
    name = parse_ref(model).name
    if parse_ref(model).kind != "model":
        raise UsageError(f"{model}: only models have @{PROD} (e.g. model/digits)")
    history = promotion_history(vault, name)
    if len(history.stack) < 2:
        raise PromotionRefused(
            name,
            "no earlier promoted version to roll back to"
            + (
                f" (only {name}@{history.stack[0]['version']} was promoted)"
                if history.stack
                else ""
            ),
        )
    target_entry = history.stack[-2]
    target = vault.snapshot(f"{name}@{int(target_entry['version'])}")
    if target.id != target_entry.get("id"):
        raise IntegrityError(
            f"{target.ref} is not the snapshot that was promoted (id {target.id[:16]}, "
            f"history says {str(target_entry.get('id'))[:16]}); not rolling back to it"
        )
    prod = _prod(vault, name)
    previous = prod.version if prod is not None else None
    entry = _entry(target, "rollback", None, **{"from": previous})
    record = PromotionRecord(name, history.stack[:-1], (*history.log, entry))
    written = _write_record(
        vault, record, [target.ref], {"action": "rollback", "version": target.version}
    )
    vault.label(name, target.version, PROD)
    events.emit(
        ek.MODEL_ROLLED_BACK, name, ref=target.ref, version=target.version, from_version=previous
    )
    return Promotion(
        name,
        "rollback",
        target.version,
        target.id,
        previous,
        None,
        moved=previous != target.version,
        record=written.ref,
    )
