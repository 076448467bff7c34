"""The demo's map scene, run on a fresh copy of the example."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from bastion.demo import run
from tests.conftest import EXAMPLE


def test_map_scene_shows_spofs_and_availability_vs_objective(tmp_path: Path) -> None:
    with (tmp_path / "out.txt").open("w") as sink:
        (scene,) = run(EXAMPLE, tmp_path / "demo", Console(file=sink, width=200), only=["map"])
    assert scene.ok, scene.findings
    text = "\n".join(scene.findings)
    assert "SPOF cpu-pool: takes down train-digits, digits" in text
    assert "service digits: availability 0.999500 vs objective 0.999: met" in text
    assert (tmp_path / "demo" / "map.html").read_text().startswith("<!DOCTYPE html>")
