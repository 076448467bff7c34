"""Plain ``chaos run`` of a Bastion experiment never reports a pass that did not happen
(issue 12, item 14). The real Chaos Toolkit CLI (the ``chaostoolkit`` package) runs the
experiments; Bastion's activities, called outside ``bastion drill run``, stop the run
(status "interrupted", exit 1) and say how to run it instead."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLE

pytest.importorskip("chaostoolkit", reason="the chaos CLI comes with the dev extra")


def chaos_run(experiment: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    journal = experiment.parent / "journal.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "chaostoolkit",
            "--no-log-file",
            "run",
            "--journal-path",
            str(journal),
            str(experiment),
        ],
        cwd=experiment.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    saved = json.loads(journal.read_text()) if journal.exists() else {}
    return done, saved


ADVICE = "run it with `bastion drill run EXPERIMENT`"


def test_plain_chaos_run_of_the_example_experiment_does_not_pass(tmp_path: Path) -> None:
    path = tmp_path / "vendor-429.yaml"
    shutil.copy(EXAMPLE / "experiments" / "vendor-429.yaml", path)
    done, journal = chaos_run(path)
    print(done.stdout[-2000:], done.stderr[-2000:])
    assert done.returncode != 0
    assert journal.get("status") != "completed"


def _experiment(method: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    always = {"type": "python", "module": "os.path", "func": "isdir", "arguments": {"s": "/"}}
    return {
        "version": "1.0.0",
        "title": "a Bastion fault under plain chaos",
        "description": "Bastion's activities need a drill",
        "steady-state-hypothesis": {
            "title": "always holds",
            "probes": [{"type": "probe", "name": "root", "tolerance": True, "provider": always}],
        },
        "method": method,
        **extra,
    }


def _bastion(name: str, func: str, **arguments: Any) -> dict[str, Any]:
    provider = {"type": "python", "module": "bastion.drill.actions", "func": func}
    return {"type": "action", "name": name, "provider": {**provider, "arguments": arguments}}


@pytest.mark.parametrize(
    "method",
    [
        [_bastion("rate-limit", "inject", fault="http.fault", upstream="vendor-b", status=429)],
        [_bastion("kill", "inject", fault="process.kill", process="web")],
        [_bastion("load", "http_load", url="http://127.0.0.1:1/", duration_s=1)],
        [_bastion("wait", "wait_recovered", timeout_s=1)],
    ],
    ids=["http-fault", "process-kill", "http-load", "wait-recovered"],
)
def test_a_bastion_action_under_plain_chaos_interrupts_the_run(
    tmp_path: Path, method: list[dict[str, Any]]
) -> None:
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(_experiment(method)))
    done, journal = chaos_run(path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert journal["status"] == "interrupted"
    assert ADVICE in done.stdout + done.stderr


def test_bastion_abort_control_under_plain_chaos_stops_before_the_method(tmp_path: Path) -> None:
    harmless = {"type": "python", "module": "os.path", "func": "isdir", "arguments": {"s": "/"}}
    control = {
        "name": "bastion-abort",
        "provider": {
            "type": "python",
            "module": "bastion.drill.control",
            "arguments": {
                "conditions": [
                    {
                        "type": "probe",
                        "name": "few-locked",
                        "tolerance": {"type": "range", "range": [0, 3]},
                        "provider": {
                            "type": "python",
                            "module": "bastion.drill.probes",
                            "func": "count_files",
                            "arguments": {"root": ".", "pattern": "*.locked"},
                        },
                    }
                ]
            },
        },
    }
    experiment = _experiment(
        [{"type": "action", "name": "harmless", "provider": harmless}], controls=[control]
    )
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(experiment))
    done, journal = chaos_run(path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert journal.get("status") != "completed"
    assert ADVICE in done.stdout + done.stderr
