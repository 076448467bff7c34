"""``bastion demo``: the example system, run scene by scene, saying plainly what it did.

Owns: copying the example to a fresh working directory and running the scenes in order.
Each scene is a module ``bastion.demo.<name>`` with ``TITLE`` and ``run(ctx) -> Scene``;
a capability adds its scene by adding its module to ``SCENES``. A scene whose module is
not there yet is skipped, so the demo shows exactly what exists.

Must never: touch the example in the source tree (the scenes work on a copy).
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from bastion.errors import UsageError
from bastion.events import EventLog
from bastion.manifest import Manifest, load

__all__ = ["SCENES", "DemoContext", "Scene", "find_example", "run"]

SCENES = (
    "check",
    "vault",
    "train",
    "serve",
    "map",
    "drill",
    "validate",
    "rollout",
    "outcomes",
    "control",
)


@dataclass
class Scene:
    """What a scene did: one line per finding, and whether it showed what it promised."""

    title: str
    findings: list[str] = field(default_factory=list)
    ok: bool = True


@dataclass
class DemoContext:
    workdir: Path
    console: Console

    @property
    def manifest_path(self) -> Path:
        return self.workdir / "bastion.yaml"

    def manifest(self) -> Manifest:
        return load(self.manifest_path)

    def events(self) -> EventLog:
        return EventLog.in_state_dir(self.manifest().state_dir)


def find_example(explicit: Path | None = None) -> Path:
    """The example directory: ``explicit``, ./examples/digits, or the source checkout's."""
    candidates = (
        [explicit]
        if explicit
        else [
            Path("examples/digits"),
            Path(__file__).resolve().parents[3] / "examples" / "digits",
        ]
    )
    for candidate in candidates:
        if candidate is not None and (candidate / "bastion.yaml").is_file():
            return candidate.resolve()
    raise UsageError(
        "the demo's example was not found (looked for examples/digits/bastion.yaml); "
        "run from the repository root or pass --example DIR"
    )


def run(
    example: Path, workdir: Path, console: Console, only: list[str] | None = None
) -> list[Scene]:
    """Copy ``example`` to ``workdir`` (fresh) and run every available scene."""
    if workdir.exists():
        shutil.rmtree(workdir)
    shutil.copytree(example, workdir, ignore=shutil.ignore_patterns(".bastion", "__pycache__"))
    ctx = DemoContext(workdir=workdir, console=console)
    results: list[Scene] = []
    for name in SCENES:
        if only and name not in only:
            continue
        module_name = f"bastion.demo.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        # off a terminal the CLI's console is unbounded (so piped names stay whole): a
        # rule across 10,000 columns is noise, so rules keep to a readable width
        console.print(Rule(f"[bold]{module.TITLE}"), width=min(console.width, 100))
        scene: Scene = module.run(ctx)
        results.append(scene)
        for line in scene.findings:
            console.print(f"  {line}")
    return results
