"""The ``bastion`` entry point: builds the app from the command-group modules and turns
errors into one-line messages and exit codes (0 fine, 1 a check found a problem,
2 bad input, 3 internal error with where the log is)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import typer

from bastion.errors import BastionError, ManifestError

# Start-up is part of every command's latency (issue 13: a cached pipeline re-run in
# <= 1 s, CLI included), so this module imports only typer: each command group's module
# (and with it rich, pydantic, the manifest, the vault ...) is imported when one of its
# commands runs, or when help lists them. tests/unit/test_cli_help.py checks both.

__all__ = ["app", "command", "main"]

app = typer.Typer(
    name="bastion",
    help="Keep AI workloads running through failures, and prove it by measuring recovery.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module registers its commands on the app; these are the top-level names each one
# registers, in the order help lists them (a test checks the table against what the
# modules register). A group that is not built yet is simply absent, so the CLI only
# ever offers what exists.
_GROUPS: dict[str, tuple[str, ...]] = {
    "core": ("check", "init", "schema", "events"),
    "demo": ("demo",),
    "vault": ("vault",),
    "train": ("train",),
    "serve": ("serve",),
    "cost": ("cost",),
    "model": ("model",),
    "map": ("map",),
    "drill": ("drill",),
    "validate": ("validate",),
    "pipeline": ("pipeline",),
    "rollout": ("rollout",),
    "slo": ("slo",),
    "twin": ("twin",),
    "control": ("up", "down", "status", "reload", "token"),
    "playbook": ("playbook",),
    "report": ("report",),
    "segment": ("segment",),
}


def registered(module: str) -> dict[str, Any]:
    """The click commands ``bastion.cli.<module>`` registers, by top-level name (its
    help labels made plain)."""
    sub = typer.Typer()
    importlib.import_module(f"bastion.cli.{module}").register(sub)
    found = dict(typer.main.get_group(sub).commands)
    for cmd in found.values():
        _plain_help(cmd)
    return found


class _LazyCommands(MutableMapping[str, Any]):
    """The root group's ``commands``: every name is listed from ``_GROUPS``; a command's
    module is imported the first time the command itself is looked up (click resolves
    only the one being run; help and completion walk them all)."""

    def __init__(self) -> None:
        self._loaded: dict[str, Any] = {}
        self._pending: dict[str, str] = {}
        for module, names in _GROUPS.items():
            if importlib.util.find_spec(f"bastion.cli.{module}") is not None:
                self._pending.update(dict.fromkeys(names, module))

    def __getitem__(self, name: str) -> Any:
        module = self._pending.get(name)
        if module is not None and name not in self._loaded:
            for each in [n for n, m in self._pending.items() if m == module]:
                del self._pending[each]
            self._loaded.update(registered(module))
        return self._loaded[name]

    def __setitem__(self, name: str, cmd: Any) -> None:
        self._pending.pop(name, None)
        self._loaded[name] = cmd

    def __delitem__(self, name: str) -> None:
        if self._pending.pop(name, None) is None:
            del self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        yield from dict.fromkeys([*self._pending, *self._loaded])

    def __len__(self) -> int:
        return len(set(self._pending) | set(self._loaded))

    def __contains__(self, name: object) -> bool:
        return name in self._pending or name in self._loaded


# Typer (0.2x) labels every option with its Python type: ``--json <bool>``, ``--label
# <list[str]>``, ``{name} <str>``. That reads as noise to someone who never wrote the
# annotation; the help shows what to type instead (TEXT, PATH, a choice), and nothing
# for a flag.
_PLAIN = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "bool": ""}


def _plain_type(label: str | None, said_repeat: bool = False) -> str | None:
    if not label or not (label.startswith("<") and label.endswith(">")):
        return label
    inner = label[1:-1]
    repeat = inner.startswith("list[") and inner.endswith("]")
    if repeat:
        inner = inner[5:-1]
    inner = inner.removesuffix(" range")
    shown = _PLAIN.get(inner, f"[{inner}]" if "|" in inner else inner.upper())
    if not shown:
        return None
    return f"{shown} (repeatable)" if repeat and not said_repeat else shown


def _reflow(text: str | None) -> str | None:
    """A docstring's paragraphs each on one line: rich help keeps every line break of the
    source, which wraps a terminal's lines at random places."""
    if not text:
        return text
    flowed = "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(text).split("\n\n"))
    if "[" not in flowed and not flowed.endswith("\\"):
        return flowed  # nothing rich would read as markup (and no need to import rich)
    from rich.markup import escape

    # escaped: help is read as rich markup, which would swallow "NAME[@REV]"'s "[@REV]"
    return escape(flowed)


def _plain_param(param: Any) -> None:
    shown = getattr(param, "display_type_rich", None)
    if shown is None:
        return  # a Typer without type labels: nothing to clean
    if getattr(param, "param_type_name", "") == "argument":
        param.metavar = (param.metavar or param.name or "").upper()
        param.display_type_rich = lambda ctx: None
        if hasattr(param, "_usage_display_name"):
            param._usage_display_name = lambda p=param: (
                p.metavar if p.required else f"[{p.metavar}]"
            )
    else:
        said = "repeat" in (getattr(param, "help", None) or "")  # "(repeatable)" once
        param.display_type_rich = lambda ctx, shown=shown: _plain_type(shown(ctx), said)


def _plain_help(command: Any) -> None:
    """Give every parameter of ``command`` and its subcommands the plain labels above,
    and its help text reflowed."""
    command.help = _reflow(command.help)
    if getattr(command, "short_help", None):
        command.short_help = _reflow(command.short_help)
    for param in getattr(command, "params", []):
        if getattr(param, "help", None):
            param.help = _reflow(param.help)
        _plain_param(param)
    get_help_option = getattr(command, "get_help_option", None)
    if get_help_option is not None:

        def help_option(ctx: Any, get: Any = get_help_option) -> Any:
            option = get(ctx)
            if option is not None and not getattr(option, "_bastion_plain", False):
                _plain_param(option)
                option._bastion_plain = True
            return option

        command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        _plain_help(sub)


def command() -> Any:
    """The click command ``bastion`` runs (the Typer app, its help labels made plain)."""
    built = typer.main.get_command(app)
    _plain_help(built)
    lazy = _LazyCommands()
    lazy.update(built.commands)  # type: ignore[attr-defined]  # any put on ``app`` itself
    built.commands = lazy  # type: ignore[attr-defined]
    return built


def _crash_log(exc: BaseException) -> Path:
    import tempfile
    import traceback
    from datetime import UTC, datetime

    # A traceback can hold paths, arguments and values: private to its owner (0600), in a
    # file of its own that no other user can have placed there first (mkstemp).
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    fd, name = tempfile.mkstemp(prefix=f"bastion-crash-{stamp}-", suffix=".log")
    with os.fdopen(fd, "w", encoding="utf-8") as log:
        log.write("".join(traceback.format_exception(exc)))
    return Path(name)


def _version(value: bool) -> None:
    if value:
        from bastion import __version__

        typer.echo(f"bastion {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Keep AI workloads running through failures, and prove it by measuring recovery."""


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; never shows a traceback for a user's mistake."""
    try:
        # Standalone mode: typer reports its own usage errors (exit 2) and exits; our
        # errors propagate to here because pretty exceptions are off.
        command()(args=argv, prog_name="bastion")
    except ManifestError as exc:
        from rich.markup import escape

        from bastion.cli._common import err_console

        for problem in exc.problems:
            err_console.print(escape(str(problem)), soft_wrap=True)
        err_console.print(f"[red]{len(exc.problems)} problem(s) in the manifest[/red]")
        sys.exit(exc.exit_code)
    except BastionError as exc:
        from rich.markup import escape

        from bastion.cli._common import err_console

        err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        from rich.markup import escape

        from bastion.cli._common import err_console

        log = _crash_log(exc)
        err_console.print(
            f"[red]internal error:[/red] {escape(type(exc).__name__)}: {escape(str(exc))}\n"
            f"This is a bug in Bastion. The traceback is in {log}; please report it.",
            soft_wrap=True,
        )
        sys.exit(3)
