"""docs/serving.md's commands work as written: its export script (PyTorch's default,
dynamo, exporter) and its handler file are saved from the page, its shell lines run in a
fresh `bastion init` directory, and the committed snapshots load verified from the vault
and answer what the page shows. `bastion model serve` lines are served in-process
instead (they run until killed); a `curl` line is sent over HTTP and its answer compared
with the line the page prints after it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from bastion.serve.replica import load_vault, make_app
from tests.conftest import REPO
from tests.helpers import served

DOC = (REPO / "docs" / "serving.md").read_text()
BIN = Path(sys.executable).parent


def _block(first_line: str) -> str:
    match = re.search(r"```python\n" + re.escape(first_line) + r"\n(.*?)```", DOC, re.S)
    assert match, f"docs/serving.md has no python block starting {first_line!r}"
    return match.group(1)


def _console(after: str) -> list[tuple[str, str]]:
    """The ``$`` lines of the first console block after ``after``, each with the line
    the page prints after it (or "")."""
    start = DOC.index(after)
    block = DOC[DOC.index("```console\n", start) + 11 :]
    lines = block[: block.index("```")].splitlines()
    out = []
    for i, line in enumerate(lines):
        if line.startswith("$ "):
            shown = lines[i + 1] if i + 1 < len(lines) and not lines[i + 1].startswith("$") else ""
            out.append((line[2:], shown))
    return out


def _sh(command: str, cwd: Path) -> None:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, (command, done.stdout, done.stderr)


def _curl(line: str, url: str) -> object:
    path = re.search(r"localhost:\d+(\S+)", line)
    body = re.search(r"-d '(.*)'", line)
    assert path, line
    assert body, line
    request = urllib.request.Request(
        url + path.group(1), data=body.group(1).encode(), headers={"Content-Type": "x"}
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.loads(resp.read())


def _run_section(after: str, cwd: Path, ref: str) -> None:
    model = None
    for command, shown in _console(after):
        if command.startswith("bastion model serve"):
            model = load_vault(cwd / "bastion.yaml", ref)
        elif command.startswith("curl"):
            assert model is not None
            with served(make_app(model)) as url:
                assert _curl(command, url) == json.loads(shown)
        else:
            _sh(command, cwd)
    assert model is not None, f"the section {after!r} serves nothing"


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    _sh("bastion init .", tmp_path)
    return tmp_path


@pytest.mark.slow
def test_the_onnx_section_runs_as_written(fresh: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    (fresh / "export.py").write_text(_block("# export.py"))
    _run_section("### `onnx`", fresh, "model/mynet@latest")
    model = load_vault(fresh / "bastion.yaml", "model/mynet@latest")
    assert model.format == "onnx"
    assert model.predict([[5.1, 3.5, 1.4, 0.2]], "inputs")[0] in [
        "setosa",
        "versicolor",
        "virginica",
    ]


def test_the_handler_section_runs_as_written(fresh: Path) -> None:
    (fresh / "sentiment").mkdir()
    (fresh / "sentiment" / "predictor.py").write_text(
        _block("# sentiment/predictor.py (mkdir sentiment first)")
    )
    _run_section("### `handler`", fresh, "model/sentiment@latest")
