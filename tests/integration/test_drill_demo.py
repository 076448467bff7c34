"""The demo's drill scene shows what it promises on a fresh copy of the example."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from bastion.demo import DemoContext
from bastion.demo import drill as scene_module


def test_drill_scene(example_copy: Path) -> None:
    ctx = DemoContext(workdir=example_copy, console=Console(file=io.StringIO()))
    scene = scene_module.run(ctx)
    print("\n".join(scene.findings))
    assert scene.ok, scene.findings
    text = "\n".join(scene.findings)
    assert "process-hang: exit 0" in text
    assert "ransomware-abort: exit 1" in text
    assert "files lost 0" in text
    assert "bit-identical" in text
