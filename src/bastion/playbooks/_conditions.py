"""The grammar of a playbook's trigger: which events a rule reacts to, and templates over them.

Owns: ``when`` conditions (a field of the event mapped to a value, a list of values or one
operator), the templates in ``incident`` and in action parameters (``{subject}``,
``{data.path}``), and whether ``on`` names a kind Bastion emits. Pure: the manifest loader
calls ``problems`` so a bad rule is a located manifest error, and the planner calls
``matches`` and ``render``.

Must never: evaluate code from the manifest (no eval, no Jinja): a condition is data.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from bastion import event_kinds as ek

__all__ = [
    "OPERATORS",
    "TemplateError",
    "field_value",
    "kind_problem",
    "matches",
    "problems",
    "render",
]

OPERATORS = ("eq", "ne", "gt", "ge", "lt", "le", "in", "contains", "matches", "exists")
_FIELDS = ("id", "kind", "subject", "segment", "day", "hour")
_TEMPLATE = re.compile(r"\{([^{}]*)\}")
_MISSING = object()


def kind_problem(on: str) -> str | None:
    """Why ``on`` names no event kind Bastion emits, or None when it does."""
    if ek.by_name(on) is not None:
        return None
    if any(c in on for c in "*?[") and any(fnmatch.fnmatchcase(k, on) for k in ek.ALL):
        return None
    import difflib

    hint = difflib.get_close_matches(on, sorted(ek.ALL), n=1, cutoff=0.6)
    extra = f" (did you mean {hint[0]!r}?)" if hint else " (docs/events.md lists them)"
    return f"unknown event kind {on!r}{extra}"


def _field_problem(name: str) -> str | None:
    if name in _FIELDS:
        return None
    if name.startswith("data.") and all(name[5:].split(".")):
        return None
    return (
        f"unknown event field {name!r}: use one of {', '.join(_FIELDS)} or data.<key> "
        "(e.g. data.reason)"
    )


def problems(when: Mapping[str, Any], templates: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """Each problem as (where, message): ``where`` is a key of ``when`` or of
    ``templates`` (a parameter's name)."""
    for name, cond in when.items():
        bad = _field_problem(str(name))
        if bad:
            yield str(name), bad
            continue
        if isinstance(cond, Mapping):
            if len(cond) != 1 or next(iter(cond)) not in OPERATORS:
                yield (
                    str(name),
                    f"a condition is a value, a list of values or one operator of "
                    f"{', '.join(OPERATORS)} (e.g. {{gt: 3}}); got {dict(cond)!r}",
                )
                continue
            op, arg = next(iter(cond.items()))
            if op == "matches":
                try:
                    re.compile(str(arg))
                except re.error as exc:
                    yield str(name), f"matches: {arg!r} is not a regular expression ({exc})"
            elif op == "in" and not isinstance(arg, list):
                yield str(name), f"in: needs a list of values, got {arg!r}"
            elif op in ("gt", "ge", "lt", "le") and (
                isinstance(arg, bool) or not isinstance(arg, int | float)
            ):
                yield str(name), f"{op}: needs a number, got {arg!r}"
            elif op == "exists" and not isinstance(arg, bool):
                yield str(name), f"exists: needs true or false, got {arg!r}"
    for where, text in templates.items():
        for match in _TEMPLATE.finditer(text):
            bad = _field_problem(match.group(1).strip())
            if bad:
                yield where, f"{{{match.group(1)}}}: {bad}"


def field_value(event: Mapping[str, Any], name: str) -> Any:
    """The value of ``name`` (``subject``, ``data.reason``, ``day``) in an event given as
    its JSON (``Event.to_json()``), or a sentinel that equals nothing when absent."""
    if name in ("day", "hour"):
        ts = event.get("ts")
        when = datetime.fromisoformat(ts) if isinstance(ts, str) else datetime.now(UTC)
        return when.strftime("%Y-%m-%d" if name == "day" else "%Y-%m-%dT%H")
    if not name.startswith("data."):
        return event.get(name, _MISSING)
    node: Any = event.get("data", {})
    for part in name[5:].split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _holds(value: Any, cond: Any) -> bool:
    if isinstance(cond, Mapping):
        op, arg = next(iter(cond.items()))
        if op == "exists":
            return (value is not _MISSING) is bool(arg)
        if value is _MISSING:
            return bool(op == "ne")
        if op == "eq":
            return bool(value == arg)
        if op == "ne":
            return bool(value != arg)
        if op == "in":
            return bool(value in arg)
        if op == "contains":
            return isinstance(value, str | list | tuple | dict) and bool(arg in value)
        if op == "matches":
            return isinstance(value, str) and re.search(str(arg), value) is not None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return bool(
            {
                "gt": value > arg,
                "ge": value >= arg,
                "lt": value < arg,
                "le": value <= arg,
            }[op]
        )
    if isinstance(cond, list):
        return value is not _MISSING and bool(value in cond)
    return value is not _MISSING and bool(value == cond)


def matches(on: str, when: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Whether the event (its JSON) triggers a rule with this ``on`` and ``when``."""
    kind = str(event.get("kind", ""))
    if kind != on and not fnmatch.fnmatchcase(kind, on):
        return False
    return all(_holds(field_value(event, str(k)), c) for k, c in when.items())


class TemplateError(ValueError):
    """A template names a field the event does not have."""


def render(text: str, event: Mapping[str, Any]) -> str:
    """``text`` with each ``{field}`` replaced by the event's value (TemplateError when
    the event lacks it)."""

    def one(match: re.Match[str]) -> str:
        value = field_value(event, match.group(1).strip())
        if value is _MISSING:
            raise TemplateError(f"the event has no {match.group(1).strip()} for {text!r}")
        return str(value)

    return _TEMPLATE.sub(one, text)
