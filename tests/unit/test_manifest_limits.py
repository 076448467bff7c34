"""Manifest denial of service (issue 12, item 18): alias bombs, huge files and deep nesting
are refused with a located problem (exit 2) at once, and the loader, fuzzed, never fails
any other way.

The fuzz tests use fixed seeds (hypothesis ``@seed``) so a run can be repeated.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from bastion.errors import ManifestError, UsageError
from bastion.manifest import load, loads
from bastion.manifest._limits import MAX_ALIAS_NODES, MAX_BYTES, MAX_DEPTH
from tests.helpers import run_bastion
from tests.unit.test_manifest_errors import GOOD


def refused(text: str, *, within_s: float = 1.0) -> list[str]:
    start = time.perf_counter()
    with pytest.raises(ManifestError) as info:
        loads(text, filename="bastion.yaml")
    elapsed = time.perf_counter() - start
    print(f"refused in {elapsed:.3f} s")
    assert elapsed < within_s
    return [str(p) for p in info.value.problems]


LAUGHS = """\
version: 1
system: lol
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def _bomb_in_components(width: int, levels: int) -> str:
    # The bomb where a value is expected, built from mappings, so validation would copy it.
    lines = ["version: 1", "system: lol", "components:"]
    lines.append('  - {id: a, kind: compute, description: &l0 {x: "lol", y: "lol"}}')
    for level in range(1, levels + 1):
        refs = ", ".join(f"k{j}: *l{level - 1}" for j in range(width))
        lines.append(f"  - {{id: c{level}, kind: compute, domains: &l{level} {{{refs}}}}}")
    return "\n".join(lines) + "\n"


def _merge_bomb(levels: int) -> str:
    lines = ["version: 1", "system: lol", "x0: &m0 {a: [1, 2, 3, 4, 5, 6, 7, 8]}"]
    lines += [
        f"x{n}: &m{n} [*m{n - 1}, *m{n - 1}, *m{n - 1}, *m{n - 1}]" for n in range(1, levels + 1)
    ]
    lines.append(f"y:\n  <<: {{k: *m{levels}}}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "text",
    [LAUGHS, _bomb_in_components(10, 6), _merge_bomb(12)],
    ids=["billion-laughs", "bomb-in-components", "bomb-through-merge-key"],
)
def test_alias_bombs_are_refused_at_once_with_a_place(text: str) -> None:
    (problem,) = refused(text)
    assert problem.startswith("bastion.yaml:")
    assert f"YAML aliases expand the manifest past {MAX_ALIAS_NODES:,} more values" in problem


def test_a_few_aliases_are_fine() -> None:
    text = GOOD.replace(
        "  - id: data\n    kind: dataset\n    availability: 0.999\n",
        "  - &data\n    id: data\n    kind: dataset\n    availability: 0.999\n"
        "  - {<<: *data, id: data2}\n",
    )
    manifest = loads(text)
    assert [c.id for c in manifest.components][:2] == ["data", "data2"]
    assert manifest.components[1].availability == 0.999


def test_cli_refuses_billion_laughs_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text(LAUGHS, encoding="utf-8")
    start = time.monotonic()
    proc = run_bastion("check", "-f", str(path), timeout=60)
    elapsed = time.monotonic() - start
    print(
        f"bastion check exited {proc.returncode} after {elapsed:.2f} s (interpreter start included)"
    )
    assert proc.returncode == 2, proc.stderr
    assert f"{path}:" in proc.stderr
    assert "YAML aliases expand the manifest" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert elapsed < 10


def test_a_50mb_manifest_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    with path.open("wb") as handle:
        handle.write(GOOD.encode())
        handle.truncate(50 * 1024 * 1024)  # sparse: quick to make, 50 MB to read
    start = time.perf_counter()
    with pytest.raises(ManifestError) as info:
        load(path)
    assert time.perf_counter() - start < 0.5
    (problem,) = info.value.problems
    assert str(problem) == (
        f"{path}:1:1: the manifest is 52,428,800 bytes; a manifest is at most "
        f"{MAX_BYTES:,} bytes (128 KiB): is this the right file? (split generated parts out, "
        "or shorten descriptions)"
    )
    proc = run_bastion("check", "-f", str(path), timeout=60)
    assert proc.returncode == 2
    assert "52,428,800 bytes" in proc.stderr


def test_a_device_without_a_size_is_read_no_further_than_the_limit() -> None:
    with pytest.raises(ManifestError, match="bytes; a manifest is at most"):
        load("/dev/zero")


def test_a_manifest_just_over_the_limit_is_refused_and_one_at_it_loads() -> None:
    filler = "# " + "x" * 78 + "\n"
    body = GOOD + filler * ((MAX_BYTES - len(GOOD)) // len(filler))
    loads(body)
    (problem,) = refused(body + filler)
    assert "a manifest is at most" in problem


def test_not_utf8_is_located(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_bytes("version: 1\nsystem: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ManifestError) as info:
        load(path)
    assert str(info.value.problems[0]).startswith(f"{path}:2:12: byte 0xe9 is not UTF-8")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("version: 1\nsystem: s\nx: " + "[" * 20_000 + "]" * 20_000 + "\n", "bastion.yaml:3:"),
        ("version: 1\nsystem: s\nx: " + "{a: " * 5000 + "}" * 5000 + "\n", "bastion.yaml:3:"),
        (
            "version: 1\nsystem: s\nx:\n"
            + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(300)),
            "bastion.yaml:",
        ),
        ("version: 1\nsystem: s\nx:\n  " + "- " * 20_000 + "deep\n", "bastion.yaml:4:"),
    ],
    ids=["flow-sequences", "flow-mappings", "block-mappings", "dashes"],
)
def test_deep_nesting_is_refused_at_once(text: str, where: str) -> None:
    (problem,) = refused(text)
    assert problem.startswith(where)
    assert f"nests deeper than {MAX_DEPTH} levels" in problem


def test_brackets_in_text_are_not_nesting() -> None:
    descriptions = "".join(
        f"  - {{id: c{i}, kind: compute, description: 'see [{i}'}}\n" for i in range(MAX_DEPTH + 5)
    )
    block = "    description: |\n" + "".join("      [[[[[[[[[[ ascii art\n" for _ in range(10))
    text = (
        "version: 1\nsystem: s\ncomponents:\n"
        + descriptions
        + "  - id: art\n    kind: compute\n"
        + block
    )
    manifest = loads(text)
    assert len(manifest.components) == MAX_DEPTH + 6


def test_escaped_surrogates_pair_up_or_are_refused() -> None:
    head = "version: 1\nsystem: s\ncomponents:\n  - {id: a, kind: compute, description: "
    manifest = loads(head + '"\\ud835\\udc27"}\n')
    assert manifest.components[0].description == "\U0001d427"
    (problem,) = refused(
        'version: 1\nsystem: s\ncomponents:\n  - {id: a, kind: compute, description: "\\ud835"}\n'
    )
    assert problem.startswith("bastion.yaml:4:")
    assert "components[0].description: contains an escaped UTF-16 surrogate" in problem


# ------------------------------------------------------------------------- fuzzing

FRAGMENTS = [
    "version: 1\n",
    "system: s\n",
    "components:\n",
    "  - ",
    "{",
    "}",
    "[",
    "]",
    ", ",
    ": ",
    "\n",
    "  ",
    "- ",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "<<: ",
    "<<: *a\n",
    "id: x",
    "kind: compute",
    "depends_on: [x]",
    "redundancy: {members: [x, x]}",
    "jobs:\n",
    "  t: {command: [a]}\n",
    "services:\n",
    "  s: {backends: [{name: b, url: 'http://h:1'}]}\n",
    "'",
    '"',
    "\\ud800",
    "\\U0001F600",
    "#",
    "|\n",
    ">-\n",
    "\t",
    "?",
    "!!str ",
    "!!binary ",
    "!tag ",
    "%YAML 1.2\n",
    "---\n",
    "...\n",
    "~",
    "null",
    "1e999",
    "0x1F",
    "-.inf",
    ".nan",
    "é",
    "\u0430",
    "\u200b",
    "\x00",
    "\x85",
    "\ufeff",
    "9" * 5000,
]


@seed(12018)
@settings(
    max_examples=600,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow],
)
@given(parts=st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=8), max_size=60))
def test_fuzzed_yaml_is_a_manifest_or_located_problems(parts: list[str]) -> None:
    text = "".join(parts)
    try:
        loads(text, filename="bastion.yaml")
    except ManifestError as exc:
        for problem in exc.problems:
            assert problem.file == "bastion.yaml"
            assert problem.line >= 1
            assert problem.column >= 1
            str(problem).encode("utf-8")  # printable: no lone surrogate reaches a message
    except UsageError as exc:  # pragma: no cover - every text problem is a ManifestError
        pytest.fail(f"not located: {exc}")


@seed(12019)
@settings(
    max_examples=600,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(GOOD)), st.integers(0, 3), st.sampled_from(FRAGMENTS)),
        min_size=1,
        max_size=6,
    )
)
def test_mutated_good_manifest_is_a_manifest_or_located_problems(
    edits: list[tuple[int, int, str]],
) -> None:
    text = GOOD
    for position, cut, insert in edits:
        at = min(position, len(text))
        text = text[:at] + insert + text[at + cut :]
    try:
        loads(text, filename="bastion.yaml")
    except ManifestError as exc:
        for problem in exc.problems:
            assert problem.line >= 1
            str(problem).encode("utf-8")


VALUES = {
    "kind": ["compute", "computer", "1", "[x]"],
    "availability": ["0.9", "2", "high", "-1"],
    "location": ["cloud", "moon"],
    "depends_on": ["[a0]", "[nope]", "a0", "{id: a0, type: sometimes}"],
    "domains": ["{site: dc1}", "{planet: mars}"],
}


@st.composite
def anchored_components(draw: st.DrawFn) -> str:
    """Components that anchor, alias and merge one another, with good and bad values."""
    lines = ["version: 1", "system: s", "components:"]
    for i in range(draw(st.integers(1, 5))):
        keys = draw(st.lists(st.sampled_from(sorted(VALUES)), max_size=3, unique=True))
        fields = [f"id: a{i}", *(f"{k}: {draw(st.sampled_from(VALUES[k]))}" for k in keys)]
        if i and draw(st.booleans()):
            fields.insert(0, f"<<: *c{draw(st.integers(0, i - 1))}")
        lines.append(f"  - &c{i} {{{', '.join(fields)}}}")
    return "\n".join(lines) + "\n"


@seed(12020)
@settings(max_examples=300, deadline=timedelta(seconds=2))
@given(text=anchored_components())
def test_merge_keys_and_aliases_never_crash_the_locator(text: str) -> None:
    # A merged-in key has no line of its own in ruamel's tree: the locator used to raise
    # KeyError there (internal error, exit 3) when that key's value was wrong.
    try:
        loads(text, filename="bastion.yaml")
    except ManifestError as exc:
        assert all(p.line >= 1 for p in exc.problems)
