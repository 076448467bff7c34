"""Artifact names and references: ``dataset/digits@3``, ``model/digits@prod``,
``ckpt/train-digits/step-000400``.

Owns: the grammar of names and refs, and the rules that keep a name from escaping the
directory it is stored under. The manifest checks references with it; the vault stores
by it.

Must never: accept a name with ``..``, an absolute path, a backslash or a NUL byte, or
anything else that could resolve outside its root.

Grammar::

    ref      = name [ "@" rev ]
    name     = kind "/" segment { "/" segment }
    kind     = one of KINDS
    segment  = [A-Za-z0-9] [A-Za-z0-9._-]*        (no "..", at most 128 characters)
    rev      = digits (a version number)  |  label (a movable ref: latest, prod, ...)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bastion.errors import InvalidNameError

__all__ = ["KINDS", "Ref", "parse_name", "parse_ref"]

KINDS = ("dataset", "model", "ckpt", "code", "config", "run", "dir", "schema", "verdict")
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_LABEL = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}\Z")


@dataclass(frozen=True, slots=True)
class Ref:
    """A parsed reference. ``rev`` is an int version, a label such as ``latest``, or None."""

    name: str
    rev: int | str | None = None

    @property
    def kind(self) -> str:
        return self.name.split("/", 1)[0]

    def __str__(self) -> str:
        return self.name if self.rev is None else f"{self.name}@{self.rev}"


def parse_name(text: str) -> str:
    """Check an artifact name and return it unchanged; raise InvalidNameError if unsafe."""
    if not isinstance(text, str) or not text:
        raise InvalidNameError("artifact name is empty (expected e.g. dataset/digits)")
    if "\x00" in text:
        raise InvalidNameError(f"artifact name {text!r} contains a NUL byte")
    if text.startswith("/") or "\\" in text or (len(text) > 1 and text[1] == ":"):
        raise InvalidNameError(
            f"artifact name {text!r} is an absolute path; names are relative, e.g. dataset/digits"
        )
    parts = text.split("/")
    if any(p in ("..", ".") for p in parts):
        raise InvalidNameError(
            f"artifact name {text!r} contains '..' or '.'; it would escape its root"
        )
    kind = parts[0]
    if kind not in KINDS:
        raise InvalidNameError(
            f"artifact name {text!r} must start with one of {', '.join(KINDS)} "
            f"(e.g. dataset/{kind or 'digits'})"
        )
    if len(parts) < 2:
        raise InvalidNameError(
            f"artifact name {text!r} has a kind but no name (e.g. {kind}/digits)"
        )
    for part in parts[1:]:
        if not _SEGMENT.match(part) or ".." in part:
            raise InvalidNameError(
                f"artifact name {text!r}: segment {part!r} must be letters, digits, '.', '_' "
                "or '-', start with a letter or digit, and be at most 128 characters"
            )
    return text


def parse_ref(text: str) -> Ref:
    """Parse ``name[@rev]``; ``rev`` becomes an int when it is all digits."""
    if not isinstance(text, str):
        raise InvalidNameError(f"artifact reference {text!r} is not a string")
    name, sep, rev = text.partition("@")
    parse_name(name)
    if not sep:
        return Ref(name)
    if rev.isdigit():
        return Ref(name, int(rev))
    if not _LABEL.match(rev):
        raise InvalidNameError(
            f"artifact reference {text!r}: revision {rev!r} must be a number or a label "
            "such as latest or prod"
        )
    return Ref(name, rev)
