"""The plan: which rules an event triggers and exactly which actions each would take.

Owns: ``plan(playbooks, event)``, the one function both ``bastion playbook test`` (the
dry run) and ``bastion playbook run`` call, so the dry run prints what the real run
executes; each action's target (what the rate limit and blast radius count) and its
idempotency key, the hash of rule, incident, action and parameters.

Pure: no I/O, no clock (``{day}`` and ``{hour}`` are the event's own time).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bastion.manifest._model import PLAYBOOK_PARAMS, PlaybookAction, PlaybookRule, Playbooks
from bastion.playbooks._conditions import TemplateError, matches, render

__all__ = ["Plan", "PlannedAction", "PlannedRule", "action_key", "plan"]


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


def action_key(rule: str, incident: str, index: int, do: str, params: Mapping[str, Any]) -> str:
    """The idempotency key: BLAKE2b over rule, incident, the action (its place and name)
    and its resolved parameters. Two triggers of one incident make the same keys."""
    body = _canonical(
        {"rule": rule, "incident": incident, "index": index, "do": do, "params": params}
    )
    return hashlib.blake2b(body, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class PlannedAction:
    """One action with its parameters filled in from the trigger."""

    index: int
    do: str
    target: str
    params: Mapping[str, Any]
    approve: bool
    approve_timeout_s: float
    check: Mapping[str, Any] | None
    key: str

    @property
    def approval_id(self) -> str:
        """What ``bastion playbook approve`` takes: the key's first 12 hex digits."""
        return self.key[:12]

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "do": self.do,
            "target": self.target,
            "params": dict(self.params),
            "approve": self.approve,
            "approve_timeout_s": self.approve_timeout_s,
            "check": dict(self.check) if self.check is not None else None,
            "key": self.key,
        }


@dataclass(frozen=True, slots=True)
class PlannedRule:
    """A rule the event triggered: its incident and the actions it will work through."""

    rule: str
    incident: str
    trigger: int
    strategy: str
    max_failures: int
    actions: tuple[PlannedAction, ...]
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "incident": self.incident,
            "trigger": self.trigger,
            "strategy": self.strategy,
            "max_failures": self.max_failures,
            "actions": [a.to_json() for a in self.actions],
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """Every rule one event triggers, in the manifest's order."""

    event: Mapping[str, Any]
    rules: tuple[PlannedRule, ...]

    def to_json(self) -> dict[str, Any]:
        return {"event": dict(self.event), "rules": [r.to_json() for r in self.rules]}


def _target(do: str, params: Mapping[str, Any]) -> str:
    if do == "restore":
        return f"path:{params['into']}"
    if do in ("rollback", "promote"):
        return f"model:{str(params['model']).split('@', 1)[0]}"
    if do == "quarantine":
        return f"segment:{params['segment']}"
    if do in ("failover", "scale"):
        return f"service:{params['service']}"
    if do == "restart":
        return f"job:{params['job']}"
    if do == "notify":
        return f"webhook:{urlsplit(str(params['url'])).netloc}"
    return f"command:{params['command'][0]}"


def _fill(value: Any, event: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return render(value, event)
    if isinstance(value, list):
        return [_fill(v, event) for v in value]
    return value


def _params(action: PlaybookAction, event: Mapping[str, Any]) -> dict[str, Any]:
    required, optional = PLAYBOOK_PARAMS[action.do]
    out: dict[str, Any] = {}
    for name in required + optional:
        value = getattr(action, name)
        if value is not None:
            out[name] = _fill(value, event)
    return out


def _rule(
    name: str, rule: PlaybookRule, playbooks: Playbooks, event: Mapping[str, Any]
) -> PlannedRule:
    trigger = int(event.get("id") or 0)
    try:
        incident = render(rule.incident, event)
        steps = []
        for i, action in enumerate(rule.actions):
            params = _params(action, event)
            check = action.check or rule.check
            steps.append(
                PlannedAction(
                    index=i,
                    do=action.do,
                    target=_target(action.do, params),
                    params=params,
                    approve=action.approve,
                    approve_timeout_s=action.approve_timeout_s
                    or playbooks.limits.approval_timeout_s,
                    check=check.model_dump(exclude_none=True, mode="json") if check else None,
                    key=action_key(name, incident, i, action.do, params),
                )
            )
    except TemplateError as exc:
        return PlannedRule(name, "", trigger, rule.strategy, rule.max_failures, (), str(exc))
    return PlannedRule(name, incident, trigger, rule.strategy, rule.max_failures, tuple(steps))


def plan(playbooks: Playbooks, event: Mapping[str, Any]) -> Plan:
    """The rules ``event`` (an ``Event.to_json()``) triggers and their filled-in actions.

    A playbook's own events never trigger the rule that wrote them (``data.rule``), so no
    rule can feed itself."""
    data = event.get("data")
    source = data.get("rule") if isinstance(data, Mapping) else None
    rules = tuple(
        _rule(name, rule, playbooks, event)
        for name, rule in playbooks.rules.items()
        if not (str(event.get("kind", "")).startswith("playbook.") and source == name)
        and matches(rule.on, rule.when, event)
    )
    return Plan(dict(event), rules)
