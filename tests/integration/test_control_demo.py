"""The demo's control-plane scene shows what it promises on a fresh copy of the example:
`bastion up` runs it and prints the dashboard's URL, a SIGKILLed replica is ejected, and
(with Debian's chromium) the open timeline shows the ejection, live, in a screenshot.
Without a browser the scene says so and still passes."""

from __future__ import annotations

import io
import random
import re
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from bastion.demo import DemoContext
from bastion.demo import control as scene_module
from bastion.manifest import load
from tests.helpers import commit_model


def test_control_scene(example_copy: Path, rng: random.Random) -> None:
    commit_model(example_copy, rng.randrange(2**31))
    out = io.StringIO()
    ctx = DemoContext(workdir=example_copy, console=Console(file=out))
    scene = scene_module.run(ctx)
    text = "\n".join(scene.findings)
    print(out.getvalue(), text)
    assert scene.ok, scene.findings
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/", out.getvalue())
    assert re.search(r"serve\.backend\.ejected in [\d.]+ s", text)
    shot = example_copy / "dashboard-ejection.png"
    if shutil.which("chromium") is None:
        assert "no screenshot:" in text
    else:
        assert "no reload (1 navigation)" in text, text
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert shot.stat().st_size > 10_000  # a page, not a blank
    # nothing left running: the scene's `bastion up` stopped what it started
    from bastion.control import status

    st = status(load(example_copy / "bastion.up.yaml"))
    assert not st["up"]["running"], st
    assert not any(c["running"] for c in st["children"].values()), st


def test_without_a_browser_the_scene_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scene_module, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setattr(scene_module.shutil, "which", lambda name: None)
    pw, browser, why = scene_module._browser()
    assert (pw, browser) == (None, None)
    assert "no Chromium at /nonexistent/chromium" in why
