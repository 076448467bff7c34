"""What every CLI module shares: the console, the ``-f`` option, manifest loading."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bastion.events import EventLog
from bastion.manifest import DEFAULT_FILE, Manifest, load

__all__ = ["ManifestOption", "console", "err_console", "event_log", "load_manifest"]

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

ManifestOption = Annotated[
    Path,
    typer.Option(
        "-f", "--file", help="The manifest (relative paths in it resolve against its directory)."
    ),
]
DEFAULT_MANIFEST = Path(DEFAULT_FILE)


def load_manifest(path: Path) -> Manifest:
    return load(path)


def event_log(manifest: Manifest) -> EventLog:
    return EventLog.in_state_dir(manifest.state_dir)
