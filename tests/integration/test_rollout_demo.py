"""The demo's rollout scene shows what it promises on a fresh copy of the example (run
alone, it makes @prod and the held-out and golden sets the way the validation scene
does): the degraded candidate is rolled back under load on its wrong answers, @prod does
not move, the good candidate is promoted through the gate, and no client request fails.
What the scene says is checked against the vault and the event log."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console

from bastion import event_kinds as ek
from bastion.demo import DemoContext
from bastion.demo import rollout as scene_module
from bastion.events import EventLog
from bastion.manifest import load
from bastion.validate import promotion_history
from bastion.vault import Vault


def test_rollout_scene(example_copy: Path) -> None:
    ctx = DemoContext(workdir=example_copy, console=Console(file=io.StringIO()))
    scene = scene_module.run(ctx)
    text = "\n".join(scene.findings)
    print(text)
    assert scene.ok, scene.findings
    assert "model gate on model/digits@3 against model/digits@1: PASSED" in text
    assert re.search(r"canary of model/digits@2 .*: ROLLED BACK [\d.]+ s", text)
    assert "why: regression: predictions" in text
    assert "model/digits@1 stayed @prod (@prod is @1)" in text
    assert re.search(r"canary of model/digits@3: PROMOTED after \d+ analyses", text)
    assert "@prod is now @3" in text
    assert re.search(r"in all: \d+ client requests answered, 0 failed", text)

    manifest = load(example_copy / "bastion.yaml")
    vault = Vault.from_manifest(manifest)
    assert vault.labels("model/digits")["prod"] == 3
    history = promotion_history(vault, "model/digits")
    assert [(e["version"], e["action"]) for e in history.stack] == [(1, "adopted"), (3, "promote")]
    with EventLog.in_state_dir(manifest.state_dir) as log:
        ends = [(e.kind, e.data.get("candidate")) for e in log.query(kind="rollout.*")]
    assert (ek.ROLLOUT_ROLLED_BACK, "model/digits@2") in ends
    assert (ek.ROLLOUT_PROMOTED, "model/digits@3") in ends
    assert not any(kind == ek.ROLLOUT_ABORTED for kind, _ in ends)
