"""``bastion demo``: run the example system scene by scene."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli._common import console
from bastion.errors import CheckFailed

__all__ = ["register"]


def demo(
    example: Annotated[
        Path | None, typer.Option(help="The example to run (default examples/digits).")
    ] = None,
    workdir: Annotated[
        Path | None, typer.Option(help="Where to run it (default: a fresh temporary directory).")
    ] = None,
    scene: Annotated[list[str] | None, typer.Option(help="Run only these scenes.")] = None,
) -> None:
    """Run the bundled example: what works today, shown and measured."""
    from bastion import demo as demo_lib

    source = demo_lib.find_example(example)
    target = workdir or Path(tempfile.mkdtemp(prefix="bastion-demo-")) / source.name
    console.print(f"[bold]Bastion demo[/bold]: {source} copied to {target}")
    results = demo_lib.run(source, target, console, only=scene)
    failed = [r.title for r in results if not r.ok]
    console.print()
    console.print(f"The demo ran {len(results)} scene(s): " + "; ".join(r.title for r in results))
    if failed:
        raise CheckFailed(f"scene(s) did not show what they promised: {', '.join(failed)}")


def register(app: typer.Typer) -> None:
    app.command()(demo)
