"""A small, cheap pipeline the pipeline tests share: real stage processes (a short Python
script), real vault, real events; each stage's output is a pure function of its inputs,
its name and its config, so runs can be compared by content.

    a --> b --> d --> e
     \\--> c --/
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from bastion.events import EventLog
from bastion.manifest import load
from bastion.pipeline import output_digest, read_run
from bastion.vault import Vault

STAGE = textwrap.dedent(
    """
    import hashlib, json, os, sys, time
    from pathlib import Path

    name = sys.argv[1]
    inputs = Path(os.environ["BASTION_STAGE_INPUTS"])
    config = json.loads(Path(os.environ["BASTION_STAGE_CONFIG"]).read_text())
    h = hashlib.sha256(name.encode() + json.dumps(config, sort_keys=True).encode())
    for path in sorted(p for p in inputs.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(inputs)).encode() + path.read_bytes())
    h.update(os.environ.get("STAGE_SALT", "").encode())
    time.sleep(float(config.get("sleep", 0)))
    hold = config.get("hold")
    while hold and Path(hold).exists():  # a test holds the stage here until it removes the file
        time.sleep(0.01)
    if config.get("fail"):
        sys.exit(int(config["fail"]))
    flaky = config.get("flaky")
    if flaky and int(os.environ.get("BASTION_ATTEMPT", "1")) <= int(flaky):
        sys.exit(1)
    Path(os.environ["BASTION_STAGE_OUTPUT"], "out.txt").write_text(h.hexdigest() + "\\n")
    """
)

DIAMOND = {
    "a": {"raw": "dataset/raw@latest"},
    "b": {"x": "dataset/a"},
    "c": {"x": "dataset/a"},
    "d": {"x": "dataset/b", "y": "dataset/c"},
    "e": {"x": "dataset/d"},
}


def manifest_text(
    stages: dict[str, dict[str, str]] | None = None,
    *,
    config: dict[str, dict[str, Any]] | None = None,
    extra: dict[str, str] | None = None,
) -> str:
    """The manifest of a pipeline ``p`` over ``stages`` (name -> inputs); each stage runs
    ``stage.py NAME`` and outputs ``dataset/NAME``."""
    import json

    stages = stages if stages is not None else DIAMOND
    config = config or {}
    extra = extra or {}
    lines = [
        "version: 1",
        "system: pipes",
        "state_dir: state",
        "vault:",
        "  replicas: [state/vault/a, state/vault/b]",
        "  key: state/keys/signing.key",
        "  admin_key: state/keys/admin.key",
        "pipelines:",
        "  p:",
        "    sources: [dataset/raw@latest]",
        "    stages:",
    ]
    for name, inputs in stages.items():
        lines += [
            f"      {name}:",
            f"        command: [python, stage.py, {name}]",
            f"        inputs: {json.dumps(inputs)}",
            f"        output: dataset/{name}",
            f"        config: {json.dumps(config.get(name, {}))}",
            "        retries: 1",
            "        backoff_s: 0.01",
        ]
        if name in extra:
            lines.append(f"        {extra[name]}")
    return "\n".join(lines) + "\n"


def make_world(root: Path, text: str | None = None, *, raw: bytes = b"raw data\n") -> Path:
    """A directory with the manifest, the stage script, keys and ``dataset/raw@1``."""
    from bastion.starter import init

    root.mkdir(parents=True, exist_ok=True)
    (root / "stage.py").write_text(STAGE)
    (root / "bastion.yaml").write_text(text if text is not None else manifest_text())
    init(root)
    vault, log = open_vault(root)
    vault.commit("dataset/raw", {"raw.txt": raw})
    log.close()
    return root


def open_vault(root: Path) -> tuple[Vault, EventLog]:
    manifest = load(root / "bastion.yaml")
    log = EventLog.in_state_dir(manifest.state_dir)
    return Vault.from_manifest(manifest, events=log), log


def outputs(root: Path) -> dict[str, str]:
    """Stage -> the content digest of the output the latest run recorded."""
    manifest = load(root / "bastion.yaml")
    record = read_run(manifest.state_dir, "p")
    assert record is not None
    vault, log = open_vault(root)
    try:
        out = {}
        for name, rec in record.stages.items():
            assert rec.output is not None, f"stage {name}: no output ({rec.state}, {rec.reason})"
            out[name] = output_digest(vault.snapshot(rec.output["ref"]))
        return out
    finally:
        log.close()


def stage_events(root: Path, kind: str, run_id: str | None = None) -> list[str]:
    """The stages with an event of ``kind`` (in the run ``run_id``, or any)."""
    db = load(root / "bastion.yaml").state_dir / "events.db"
    assert db.exists(), f"no event log at {db}"
    log = EventLog(db)
    try:
        return [
            ev.subject.split("/", 1)[1]
            for ev in log.query(kind=kind)
            if run_id is None or ev.data.get("run_id") == run_id
        ]
    finally:
        log.close()
