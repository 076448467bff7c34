"""What every CLI module shares: the console, the ``-f`` option, manifest loading."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bastion.events import EventLog
from bastion.manifest import DEFAULT_FILE, Manifest, load

__all__ = ["ManifestOption", "console", "err_console", "event_log", "load_manifest"]

# Piped or redirected, rich would lay tables out for 80 columns and cut identifiers
# (``ckpt/train-mlp/st…``); a reader of a pipe wants every name whole, so off a terminal
# the width is unbounded. ``COLUMNS`` still wins where a user sets it.
_WIDE = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 10_000
console = Console(highlight=False, width=_WIDE)
err_console = Console(
    stderr=True,
    highlight=False,
    width=None if sys.stderr.isatty() or "COLUMNS" in os.environ else 10_000,
)

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
