"""The demo's outcomes scene shows what it promises on a fresh copy of the example: the
drill suite's short version runs on a twin and every scenario that applies passes, the
readiness report over it is written and verifies, and an edited report does not. What the
scene says is checked against the files it wrote and production's event log."""

from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path

from rich.console import Console

from bastion import event_kinds as ek
from bastion.demo import DemoContext
from bastion.demo import outcomes as scene_module
from bastion.events import EventLog
from bastion.manifest import load
from bastion.vault import Vault
from tests.helpers import commit_model


def test_outcomes_scene(example_copy: Path, rng: random.Random) -> None:
    # what the demo's vault and train scenes leave before this one: a model, its dataset
    commit_model(example_copy, rng.randrange(2**31))
    shards = {p.name: p for p in sorted((example_copy / "dataset").glob("*.csv"))}
    Vault.from_manifest(load(example_copy / "bastion.yaml")).commit("dataset/digits", files=shards)
    ctx = DemoContext(workdir=example_copy, console=Console(file=io.StringIO()))
    scene = scene_module.run(ctx)
    text = "\n".join(scene.findings)
    print(text)
    assert scene.ok, scene.findings
    assert re.search(r"replica-killed: passed; detected [\d.]+ s", text)
    assert re.search(r"readiness report: score [\d.]+/100", text)
    assert "every file matches" in text
    assert "one edited byte in report.json: refused" in text

    doc = json.loads((example_copy / "report" / "report.json").read_text())
    suite = [d for d in doc["drills"] if d.get("suite")]
    assert suite
    assert all(d["verdict"] in ("pass", "skipped") for d in suite), suite
    assert 0 <= doc["score"]["value"] <= 100
    log = EventLog.in_state_dir(load(example_copy / "bastion.yaml").state_dir)
    finished = log.query(kind=ek.DRILL_SUITE_FINISHED)
    assert len(finished) == 1, finished
