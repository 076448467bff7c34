"""Secrets never reach a file Bastion writes (issue 12, item 19): a key on a job's command
line is not in ``supervisor.json`` (or anywhere under the state dir), and an experiment's
process environment is not copied into the drill's journal. Real ``bastion`` processes;
every file they wrote is read back byte by byte."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from tests.helpers import run_bastion


def _files_holding(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def test_a_key_on_the_jobs_command_line_is_in_no_file_of_the_state_dir(tmp_path: Path) -> None:
    key = "sk-" + secrets.token_hex(16)
    other = secrets.token_hex(12)  # no known shape: only its flag's name says it is secret
    done = run_bastion(
        "train",
        "run",
        "--name",
        "keyed",
        "--",
        "python",
        "-c",
        "pass",
        f"--api-key={key}",
        "--token",
        other,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    state = tmp_path / ".bastion"
    recorded = json.loads((state / "train" / "keyed" / "supervisor.json").read_text())
    assert recorded["status"] == "succeeded"
    assert recorded["command"][-3:] == ["--api-key=***", "--token", "***"]
    for needle in (key, other):
        assert _files_holding(state, needle) == []
        assert needle not in done.stdout + done.stderr


def test_a_drill_journal_holds_env_names_never_their_values(tmp_path: Path, seed: int) -> None:
    vendor_key = secrets.token_hex(16)
    plain = "plain-" + secrets.token_hex(8)
    probe = "import os, sys; sys.exit(0 if os.environ['VENDOR_API_KEY'] else 1)"
    experiment = {
        "title": "env stays out of the journal",
        "description": "a process with a secret and a plain env value",
        "method": [
            {
                "type": "action",
                "name": "start-another",
                "provider": {
                    "type": "python",
                    "module": "bastion.drill.actions",
                    "func": "start_process",
                    "arguments": {
                        "name": "second",
                        "command": ["python", "-c", "import time; time.sleep(60)"],
                        "env": {"SECOND_SETTING": plain},
                    },
                },
            },
        ],
        "extensions": [
            {
                "name": "bastion",
                "processes": {
                    "worker": {
                        "command": ["python", "-c", probe + "; import time; time.sleep(60)"],
                        "env": {"VENDOR_API_KEY": vendor_key, "PLAIN_SETTING": plain},
                    },
                },
            }
        ],
    }
    path = tmp_path / "env.json"
    path.write_text(json.dumps(experiment))
    journal = tmp_path / "journal.json"
    done = run_bastion(
        "drill", "run", str(path), "--no-live", "--journal", str(journal), "--seed", str(seed)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    written = json.loads(journal.read_text())
    processes = written["experiment"]["extensions"][0]["processes"]
    assert processes["worker"]["env"] == {"VENDOR_API_KEY": "***", "PLAIN_SETTING": "***"}
    for needle in (vendor_key, plain):
        assert _files_holding(tmp_path, needle) == [path]  # only the user's own experiment
        assert needle not in done.stdout + done.stderr
