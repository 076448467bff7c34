"""`bastion drill faults` and `bastion drill run` as a user runs them: real processes,
real exit codes, a journal on disk."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import EXAMPLE
from tests.helpers import run_bastion


def test_faults_lists_the_library(tmp_path: Path) -> None:
    done = run_bastion("drill", "faults", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    kinds = {row["kind"] for row in json.loads(done.stdout)}
    for kind in (
        "storage.flip_bytes",
        "ransomware.encrypt",
        "process.hang",
        "network.toxic",
        "http.fault",
        "data.label_flip",
        "model.corrupt_weights",
    ):
        assert kind in kinds


def test_run_example_experiment_writes_journal(example_copy: Path, seed: int) -> None:
    journal = example_copy / "journal.json"
    done = run_bastion(
        "drill",
        "run",
        "experiments/vendor-429.yaml",
        "--journal",
        str(journal),
        "--seed",
        str(seed),
        cwd=example_copy,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rto_s" in done.stdout
    assert "steady state" in done.stdout  # the recovery timeline
    assert "R steady state restored" in done.stdout
    saved = json.loads(journal.read_text())
    m = saved["bastion"]["measurements"]
    assert m["recovered"] is True
    assert m["rto_s"] > 1.0  # the vendor answered 429 for two seconds
    assert saved["status"] == "completed"


def test_run_refused_fault_exits_2(tmp_path: Path) -> None:
    (tmp_path / "inside").mkdir()
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(b"keep me")
    experiment = {
        "title": "aimed outside",
        "description": "x",
        "method": [
            {
                "type": "action",
                "name": "delete",
                "provider": {
                    "type": "python",
                    "module": "bastion.drill.actions",
                    "func": "inject",
                    "arguments": {"fault": "storage.delete", "targets": str(outside)},
                },
            }
        ],
        "extensions": [{"name": "bastion", "scope": {"paths": ["inside"]}}],
    }
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(experiment))
    done = run_bastion("drill", "run", str(path), "--no-live", cwd=tmp_path)
    assert done.returncode == 2
    assert "refused to touch" in done.stderr
    assert str(outside) in done.stderr.replace("\n", "")
    assert outside.read_bytes() == b"keep me"


def test_bad_experiment_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("title: [unclosed\n")
    done = run_bastion("drill", "run", str(path), cwd=tmp_path)
    assert done.returncode == 2
    assert "broken.yaml" in done.stderr


def test_example_experiments_are_valid() -> None:
    from bastion.drill.runner import load_experiment

    found = sorted((EXAMPLE / "experiments").glob("*.yaml"))
    assert len(found) >= 4
    for path in found:
        load_experiment(path)


def test_run_never_recovers_exits_1(tmp_path: Path) -> None:
    """The steady state breaks (the server is killed) and never comes back: exit 1."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    probe = {
        "type": "probe",
        "name": "answers",
        "tolerance": True,
        "provider": {
            "type": "python",
            "module": "bastion.drill.probes",
            "func": "tcp_ok",
            "arguments": {"port": port, "timeout_s": 0.3, "payload": "GET / HTTP/1.0\r\n\r\n"},
        },
    }

    def action(name: str, func: str, **arguments: object) -> dict[str, object]:
        return {
            "type": "action",
            "name": name,
            "provider": {
                "type": "python",
                "module": "bastion.drill.actions",
                "func": func,
                "arguments": arguments,
            },
        }

    experiment = {
        "title": "killed for good",
        "description": "nothing restarts it",
        "steady-state-hypothesis": {"title": "answers", "probes": [probe]},
        "method": [
            action("kill", "inject", fault="process.kill", process="web"),
            action("wait", "wait_recovered", timeout_s=1.0),
        ],
        "extensions": [
            {
                "name": "bastion",
                "frequency_s": 0.1,
                "processes": {
                    "web": {
                        "command": [
                            "python",
                            "-m",
                            "http.server",
                            str(port),
                            "--bind",
                            "127.0.0.1",
                        ],
                        "ready_port": port,
                    }
                },
            }
        ],
    }
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(experiment))
    journal = tmp_path / "j.json"
    done = run_bastion(
        "drill", "run", str(path), "--no-live", "--journal", str(journal), cwd=tmp_path
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "never recovered" in done.stdout
    assert json.loads(journal.read_text())["bastion"]["measurements"]["recovered"] is False
