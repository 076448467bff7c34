"""The events table in docs/events.md is the constants of ``bastion.event_kinds``, no more,
no fewer; and source code names kinds through those constants, never as literals."""

from __future__ import annotations

import re
from pathlib import Path

from bastion import event_kinds as ek

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "events.md"
BEGIN, END = "<!-- kinds:begin -->", "<!-- kinds:end -->"


def render() -> str:
    rows = ["| kind | meaning |", "| --- | --- |"]
    rows += [f"| `{name}` | {kind.meaning} |" for name, kind in sorted(ek.ALL.items())]
    return "\n".join(rows)


def test_docs_table_matches_the_constants() -> None:
    text = DOC.read_text()
    assert BEGIN in text, f"{DOC} lost its {BEGIN} marker"
    assert END in text, f"{DOC} lost its {END} marker"
    table = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    expected = render()
    assert table == expected, (
        f"{DOC} is out of date with bastion/event_kinds.py; replace the table between the "
        f"markers with:\n{expected}"
    )


def test_constant_names_are_the_kinds_in_upper_snake_case() -> None:
    for attr in dir(ek):
        value = getattr(ek, attr)
        if isinstance(value, ek.Kind):
            assert attr == value.replace(".", "_").upper(), attr
            assert ek.by_name(str(value)) is value
            assert value.meaning.strip(), attr


def test_every_kind_is_dotted_lower_case_and_meaningful() -> None:
    for name, kind in ek.ALL.items():
        assert re.fullmatch(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)+", name), name
        assert len(kind.meaning) >= 10, name
