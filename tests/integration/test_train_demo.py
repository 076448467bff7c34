"""The demo's training scene shows what it promises on a busy machine: two CPU hogs keep
both cores busy the whole time (as on the cold 2-core machine where the scene once could
not "reach step 1351 to inject the kill"), and both kills must still land during
training, the first during a checkpoint write, each with a recovery line."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from bastion.demo import DemoContext
from bastion.demo import train as scene_module


@pytest.fixture
def cpu_hogs() -> Iterator[None]:
    # Each hog spins only while its parent (this test run) lives: a run killed before its
    # teardown must not leave two cores busy for whatever runs next.
    spin = "import os\nparent = os.getppid()\nwhile os.getppid() == parent: pass"
    hogs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(2)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def test_train_scene_on_a_busy_machine(example_copy: Path, cpu_hogs: None) -> None:
    ctx = DemoContext(workdir=example_copy, console=Console(file=io.StringIO()))
    scene = scene_module.run(ctx)
    print("\n".join(scene.findings))
    assert scene.ok, scene.findings
    kills = [line for line in scene.findings if line.startswith("SIGKILL at step")]
    assert len(kills) == 2, scene.findings
    assert "during the checkpoint write of step" in kills[0]
    for line in kills:
        match = re.search(r"SIGKILL at step (\d+).*resumed from step (\d+)", line)
        assert match, line
        killed, resumed = int(match[1]), int(match[2])
        assert resumed < killed < scene_module.STEPS, line
    assert "bit-exact resume" in "\n".join(scene.findings)
