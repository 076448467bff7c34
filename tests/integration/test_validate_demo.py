"""The demo's validation scene shows what it promises on a fresh copy of the example, with
two CPU hogs keeping both cores busy the whole time (the scene waits for states, never
for times): the poisoned dataset is stopped and @prod stays, the clean one's model is
promoted, the replica whose model was swapped is caught by golden probes and ejected,
and no client request fails."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console

from bastion.demo import DemoContext
from bastion.demo import validate as scene_module
from bastion.manifest import load
from bastion.validate import promotion_history
from bastion.vault import Vault
from tests.integration.test_train_demo import cpu_hogs

__all__ = ["cpu_hogs"]  # the fixture, shared with the training scene's test


def test_validate_scene_on_a_busy_machine(example_copy: Path, cpu_hogs: None) -> None:
    ctx = DemoContext(workdir=example_copy, console=Console(file=io.StringIO()))
    scene = scene_module.run(ctx)
    text = "\n".join(scene.findings)
    print(text)
    assert scene.ok, scene.findings
    assert re.search(r"poisoned dataset/digits@\d+ \(labels flipped\): FAILED", text)
    assert "model/digits@prod is still @1" in text
    assert re.search(
        r"promoted model/digits@prod @1 -> @2 \(verdict verdict/model/digits@\d+\)", text
    )
    assert re.search(r"ejected [\d.]+ s \([\d.]+ probe intervals\) after it rejoined", text)
    assert re.search(r"\d+ answered, 0 failed", text)
    # what the scene said is what the vault holds: @prod went through one promotion
    vault = Vault.from_manifest(load(example_copy / "bastion.yaml"))
    assert vault.labels("model/digits")["prod"] == 2
    history = promotion_history(vault, "model/digits")
    assert [(e["version"], e["action"]) for e in history.stack] == [(1, "adopted"), (2, "promote")]
