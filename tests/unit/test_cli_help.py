"""Every command's ``--help`` reads as help for a user (issue 12, item 3): no Python type
labels (``<bool>``, ``<list[str]>``, ``<str>``), no reStructuredText backticks, no
comments meant for the code's readers, and nothing rich markup swallowed. The whole
command tree is walked, so a command added later is checked too."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from bastion.cli.main import _GROUPS as GROUPS
from bastion.cli.main import command, registered

NOISE = re.compile(
    r"<(bool|str|int|float|path|list\[[^\]]*\]|[a-z_]+ range)>"  # Python types
    r"|``"  # reStructuredText literals
    r"|\bnoqa\b|\bTODO\b|\bXXX\b|\bFIXME\b|# type:|\bOwns:|\bMust never\b"  # for coders
    r"|\{[a-z_]+\}"  # typer's {name} for a required argument
)


def _walk(cmd: Any, path: list[str]) -> Iterator[list[str]]:
    yield path
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from _walk(sub, [*path, name])


ROOT = command()
PATHS = list(_walk(ROOT, []))


def _help(path: list[str], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLUMNS", "200")  # one line per option, so a match is not split
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        command().main(args=[*path, "--help"], prog_name="bastion", standalone_mode=False)
    return out.getvalue()


def test_the_walk_reaches_every_group() -> None:
    groups = {p[0] for p in PATHS if p}
    assert {"vault", "train", "serve", "check", "drill", "map", "model", "validate"} <= groups
    assert len(PATHS) > 30


@pytest.mark.parametrize("path", PATHS, ids=[" ".join(p) or "bastion" for p in PATHS])
def test_help_has_no_noise(path: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    text = _help(path, monkeypatch)
    assert "Usage: bastion" in text, text
    assert "Show this message and exit." in text
    found = [m.group(0) for m in NOISE.finditer(text)]
    assert not found, f"bastion {' '.join(path)} --help shows {found}:\n{text}"


def test_help_shows_what_to_type(monkeypatch: pytest.MonkeyPatch) -> None:
    put = _help(["vault", "put"], monkeypatch)
    assert "Usage: bastion vault put [OPTIONS] NAME PATH" in put
    assert re.search(r"--label\s+TEXT \(repeatable\)", put)
    assert re.search(r"--json\s+One JSON", _help(["vault", "ls"], monkeypatch))
    # square brackets in help are text, not markup to swallow
    assert "NAME[@REV]" in _help(["vault", "restore"], monkeypatch)
    # a docstring's line breaks are not kept: its first sentence is on one line
    assert (
        "Restore a snapshot bit-identical, every chunk verified, into a new or empty directory"
        in _help(["vault", "restore"], monkeypatch)
    )


def _loaded_after(code: str, modules: tuple[str, ...]) -> list[str]:
    import subprocess
    import sys

    probe = (
        f"import json, sys\n{code}\n"
        f"print(json.dumps(sorted(m for m in {modules!r} if m in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


#: what the CLI's start-up must not import: each is imported by the command that needs it
#: (issue 13: start-up is part of every command's latency).
HEAVY = (
    "networkx",
    "torch",
    "rich",
    "pydantic",
    "ruamel.yaml",
    "bastion.map",
    "bastion.vault",
    "bastion.manifest",
    "bastion.events",
    "bastion.pipeline",
    *(f"bastion.cli.{m}" for m in ("_common", *GROUPS)),
)


def test_the_cli_starts_without_the_heavy_capabilities() -> None:
    # `bastion --version`, and building the command tree, load none of them
    assert _loaded_after("from bastion.cli.main import command; command()", HEAVY) == []
    assert (
        _loaded_after(
            "from bastion.cli.main import main\ntry: main(['--version'])\nexcept SystemExit: pass",
            HEAVY,
        )
        == []
    )


def test_a_command_imports_only_its_own_group() -> None:
    code = (
        "import click; from bastion.cli.main import command; root = command()\n"
        "assert root.get_command(click.Context(root), 'pipeline') is not None\n"
        "import bastion.pipeline, bastion.vault"
    )
    loaded = _loaded_after(code, HEAVY)
    assert "bastion.cli.pipeline" in loaded
    others = [f"bastion.cli.{m}" for m in GROUPS if m != "pipeline"]
    assert [m for m in loaded if m in others] == []
    assert "networkx" not in loaded  # the pipeline's graph is plain code (issue 13)
    assert "torch" not in loaded


def test_the_lazy_table_names_what_each_group_registers() -> None:
    # the root lists names without importing their modules: the table must be true
    for module, names in GROUPS.items():
        assert tuple(registered(module)) == names, module
    listed = sorted(n for ns in GROUPS.values() for n in ns)
    assert [p[0] for p in PATHS if len(p) == 1] == listed


def test_the_maps_default_beta_is_the_libraries() -> None:
    from bastion.cli.map import DEFAULT_BETA as SHOWN
    from bastion.map import DEFAULT_BETA

    assert SHOWN == DEFAULT_BETA
