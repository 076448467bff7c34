"""Coordinated response playbooks: event -> condition -> actions, exactly once.

The manifest's ``playbooks:`` (``bastion.manifest.Playbooks``) says which event kinds, with
which conditions on their data, trigger which actions. This package owns::

    from bastion.playbooks import Runner, plan, test_event, approve, deny

- ``plan(playbooks, event)``: pure; the rules an event triggers and their filled-in
  actions with idempotency keys. ``bastion playbook test`` prints it, ``Runner`` executes
  it: one function, so the dry run is the real run's plan.
- ``Ledger``: claims (a ``UNIQUE`` idempotency key per action), token buckets per
  target, the blast radius, approvals and cursors, in the event log's database.
- ``Runner``: follows the log (``bastion playbook run``); every decision is an event
  (``playbook.*``, docs/events.md).
- ``approve`` / ``deny``: a person's decision on an ``approve: true`` action.

It sits in orchestration: it drives the vault, validate's promotion, supervise and (when
present) ``bastion.segment``, and nothing below imports it (the manifest loader calls its
pure ``_conditions`` to locate a bad rule, as it calls pipeline's ``_dag``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bastion import event_kinds as ek
from bastion.errors import UsageError
from bastion.events import EventLog
from bastion.playbooks._actions import SIGNATURE_HEADER, ActionFailed, sign
from bastion.playbooks._ledger import Approval, Claim, Ledger
from bastion.playbooks._plan import Plan, PlannedAction, PlannedRule, action_key, plan
from bastion.playbooks._runner import Runner

__all__ = [
    "SIGNATURE_HEADER",
    "ActionFailed",
    "Approval",
    "Claim",
    "Ledger",
    "Plan",
    "PlannedAction",
    "PlannedRule",
    "Runner",
    "action_key",
    "approve",
    "deny",
    "plan",
    "read_event",
    "sign",
]

_EVENT_KEYS = {"id", "ts", "mono_ns", "kind", "subject", "segment", "data"}


def read_event(path: Path) -> dict[str, Any]:
    """An event from a JSON file (one line of ``bastion events --json``, or just
    ``{kind, subject, segment, data}``); ``UsageError`` naming what is wrong."""
    try:
        event = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the event ({exc.strerror})") from None
    except ValueError as exc:
        raise UsageError(f"{path}: not JSON ({exc}); give one event as JSON") from None
    if not isinstance(event, dict):
        raise UsageError(f'{path}: an event is a JSON object, e.g. {{"kind": "train.exited"}}')
    unknown = sorted(set(event) - _EVENT_KEYS)
    if unknown:
        raise UsageError(
            f"{path}: unknown key(s) {', '.join(unknown)} "
            f"(an event has {', '.join(sorted(_EVENT_KEYS))})"
        )
    if not isinstance(event.get("kind"), str) or ek.by_name(event["kind"]) is None:
        raise UsageError(
            f"{path}: kind {event.get('kind')!r} is not an event kind Bastion emits "
            "(docs/events.md lists them)"
        )
    if not isinstance(event.get("data", {}), dict):
        raise UsageError(f"{path}: data must be a JSON object")
    for key in ("subject", "segment"):
        if not isinstance(event.get(key, ""), str):
            raise UsageError(f"{path}: {key} must be a string")
    event.setdefault("id", 0)
    event.setdefault("subject", "")
    event.setdefault("segment", "")
    event.setdefault("data", {})
    return event


def approve(state_dir: Path, id: str, *, by: str = "") -> Approval:
    """Approve a waiting action (``UsageError`` if it was decided or timed out already)."""
    with Ledger.in_state_dir(state_dir) as ledger:
        found = ledger.decide(id, approve=True, reason=f"approved by {by}" if by else "approved")
    with EventLog.in_state_dir(state_dir) as log:
        log.emit(
            ek.PLAYBOOK_APPROVAL_GRANTED,
            found.rule,
            id=id,
            by=by,
            rule=found.rule,
            incident=found.incident,
            action=found.action,
            key=found.key,
        )
    return found


def deny(state_dir: Path, id: str, *, by: str = "") -> Approval:
    """Deny a waiting action; its playbook escalates and stops."""
    with Ledger.in_state_dir(state_dir) as ledger:
        found = ledger.decide(id, approve=False, reason=f"denied by {by}" if by else "denied")
    with EventLog.in_state_dir(state_dir) as log:
        log.emit(
            ek.PLAYBOOK_APPROVAL_DENIED,
            found.rule,
            id=id,
            by=by,
            reason="denied",
            rule=found.rule,
            incident=found.incident,
            action=found.action,
            key=found.key,
        )
    return found
