"""The ``bastion`` entry point: builds the app from the command-group modules and turns
errors into one-line messages and exit codes (0 fine, 1 a check found a problem,
2 bad input, 3 internal error with where the log is)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import tempfile
import traceback
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.markup import escape

from bastion.cli._common import err_console
from bastion.errors import BastionError, ManifestError

__all__ = ["app", "main"]

app = typer.Typer(
    name="bastion",
    help="Keep AI workloads running through failures, and prove it by measuring recovery.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module registers its commands on the app. A group that is not built yet is simply
# absent, so the CLI only ever offers what exists.
_GROUPS = (
    "core",
    "demo",
    "vault",
    "train",
    "serve",
    "model",
    "map",
    "drill",
    "validate",
    "pipeline",
)


def _register() -> None:
    for name in _GROUPS:
        module_name = f"bastion.cli.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(app)


_register()


def _crash_log(exc: BaseException) -> Path:
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
        app(args=argv)
    except ManifestError as exc:
        for problem in exc.problems:
            err_console.print(escape(str(problem)), soft_wrap=True)
        err_console.print(f"[red]{len(exc.problems)} problem(s) in the manifest[/red]")
        sys.exit(exc.exit_code)
    except BastionError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        log = _crash_log(exc)
        err_console.print(
            f"[red]internal error:[/red] {escape(type(exc).__name__)}: {escape(str(exc))}\n"
            f"This is a bug in Bastion. The traceback is in {log}; please report it.",
            soft_wrap=True,
        )
        sys.exit(3)
