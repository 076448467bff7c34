"""Experiments run end to end through Chaos Toolkit's runner with Bastion's faults.

Each test runs a real process (an HTTP server), real faults and real probes, and reads
the journal: exit code, status, measurements taken from events.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.drill.runner import run_experiment
from bastion.events import EventLog


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = _free_port()
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("ok")
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield proc, url
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _probe(url: str) -> dict[str, Any]:
    return {
        "type": "probe",
        "name": "service-answers",
        "tolerance": True,
        "provider": {
            "type": "python",
            "module": "bastion.drill.probes",
            "func": "http_ok",
            "arguments": {"url": url, "timeout_s": 0.3},
        },
    }


def _action(title: str, module: str, func: str, /, **arguments: Any) -> dict[str, Any]:
    return {
        "type": "action",
        "name": title,
        "provider": {"type": "python", "module": module, "func": func, "arguments": arguments},
    }


def _experiment(url: str, method: list[dict[str, Any]], **bastion: Any) -> dict[str, Any]:
    return {
        "title": "the service survives",
        "description": "test",
        "steady-state-hypothesis": {"title": "service answers", "probes": [_probe(url)]},
        "method": method,
        "rollbacks": [_action("revert-everything", "bastion.drill.actions", "revert")],
        "extensions": [{"name": "bastion", "frequency_s": 0.1, **bastion}],
    }


def test_hang_breaks_steady_state_and_recovery_is_measured(
    server: tuple[subprocess.Popen[bytes], str], tmp_path: Path, seed: int
) -> None:
    proc, url = server
    hang = _action(
        "hang-the-server",
        "bastion.drill.actions",
        "inject",
        fault="process.hang",
        pid=proc.pid,
        name="hang",
    )
    hang["pauses"] = {"after": 1.0}
    method = [
        hang,
        _action("wake-it", "bastion.drill.actions", "revert", name="hang"),
        _action("wait", "bastion.drill.actions", "wait_recovered", timeout_s=20),
    ]
    journal_path = tmp_path / "journal.json"
    result = run_experiment(
        _experiment(url, method, scope={"pids": [proc.pid]}, targets={"rto_s": 60}),
        base=tmp_path,
        journal_path=journal_path,
        seed=seed,
    )
    m = result.measurements
    print(json.dumps(m, indent=1))
    assert result.exit_code == 0, result.problems
    assert m["steady_state_broken"] is True
    assert m["recovered"] is True
    assert m["detected_by"] == "drill.steady_state.broken"
    assert 0 < m["time_to_detect_s"] < m["rto_s"]
    assert m["rto_s"] >= 0.5  # the hang lasted one second before the revert
    saved = json.loads(journal_path.read_text())
    assert saved["bastion"]["measurements"]["rto_s"] == m["rto_s"]
    assert saved["steady_states"]["during"]
    kinds = [e["kind"] for e in saved["bastion"]["events"]]
    for kind in (
        "drill.fault.injected",
        "drill.steady_state.broken",
        "drill.fault.reverted",
        "drill.steady_state.restored",
    ):
        assert kind in kinds
    assert proc.poll() is None


def test_steady_state_never_recovers_exit_1(
    server: tuple[subprocess.Popen[bytes], str], tmp_path: Path, seed: int
) -> None:
    proc, url = server
    method = [
        _action("kill", "bastion.drill.actions", "inject", fault="process.kill", pid=proc.pid),
        _action("wait", "bastion.drill.actions", "wait_recovered", timeout_s=1.0),
    ]
    result = run_experiment(
        _experiment(url, method, scope={"pids": [proc.pid]}), base=tmp_path, seed=seed
    )
    assert result.exit_code == 1
    assert result.measurements["recovered"] is False
    assert result.measurements["rto_s"] is None
    assert any("never recovered" in p for p in result.problems)
    assert result.journal["deviated"] is True
    with EventLog.in_state_dir(tmp_path / ".bastion") as log:
        finished = log.query(kind="drill.finished")[-1]
    assert finished.data["exit_code"] == 1


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_abort_condition_stops_a_runaway_and_rollbacks_run(tmp_path: Path, seed: int) -> None:
    import random

    rng = random.Random(seed)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(60):
        (data / f"f{i:02d}.csv").write_bytes(rng.randbytes(200))
    before = _digests(data)
    experiment = {
        "title": "runaway ransomware",
        "description": "an attack with no guard must be stopped by the abort condition",
        "method": [
            _action(
                "encrypt-everything",
                "bastion.drill.actions",
                "inject",
                fault="ransomware.encrypt",
                root="data",
                files_per_s=20,
                max_files=60,
                keyfile=str(tmp_path / "journal.jsonl"),
                name="attack",
            )
        ],
        "rollbacks": [_action("decrypt", "bastion.drill.actions", "revert")],
        "controls": [
            {
                "name": "bastion-abort",
                "provider": {
                    "type": "python",
                    "module": "bastion.drill.control",
                    "arguments": {
                        "frequency_s": 0.05,
                        "max_duration_s": 60,
                        "conditions": [
                            {
                                "type": "probe",
                                "name": "at-most-3-locked-files",
                                "tolerance": {"type": "range", "range": [0, 3]},
                                "provider": {
                                    "type": "python",
                                    "module": "bastion.drill.probes",
                                    "func": "count_files",
                                    "arguments": {"root": "data", "pattern": "*.locked"},
                                },
                            }
                        ],
                    },
                },
            }
        ],
        "extensions": [{"name": "bastion", "scope": {"paths": ["data"]}}],
    }
    result = run_experiment(experiment, base=tmp_path, seed=seed)
    assert result.aborted is not None
    assert "at-most-3-locked-files" in result.aborted
    assert result.exit_code == 1
    assert result.journal["status"] == "interrupted"
    rollbacks = result.journal["rollbacks"]
    assert [r["status"] for r in rollbacks] == ["succeeded"]
    assert not list(data.glob("*.locked"))
    assert _digests(data) == before  # every file decrypted, names restored
    with EventLog.in_state_dir(tmp_path / ".bastion") as log:
        aborted = log.query(kind="drill.aborted")
        reverted = log.query(kind="drill.fault.reverted")
    assert len(aborted) == 1
    assert reverted
    assert reverted[-1].data["restored"] < 60


def test_fault_outside_scope_refuses_exit_2(tmp_path: Path, seed: int) -> None:
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    victim = outside / "precious.bin"
    victim.write_bytes(b"precious")
    experiment = {
        "title": "misaimed",
        "description": "points a fault outside its scope",
        "method": [
            _action(
                "flip",
                "bastion.drill.actions",
                "inject",
                fault="storage.flip_bytes",
                targets=str(victim),
            )
        ],
        "extensions": [{"name": "bastion", "scope": {"paths": ["inside"]}}],
    }
    result = run_experiment(experiment, base=tmp_path, seed=seed)
    assert result.exit_code == 2
    assert str(victim) in result.problems[0]
    assert "outside scope" in result.problems[0]
    assert victim.read_bytes() == b"precious"


def test_invalid_experiment_is_a_usage_error(tmp_path: Path) -> None:
    from bastion.errors import UsageError

    bad = tmp_path / "bad.yaml"
    bad.write_text("title: x\nmethod: not-a-list\n")
    with pytest.raises(UsageError, match=r"bad\.yaml"):
        run_experiment(bad)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "title",
                        "method",
                        "rollbacks",
                        "steady-state-hypothesis",
                        "type",
                        "name",
                        "provider",
                        "probes",
                        "controls",
                        "tolerance",
                        "module",
                        "func",
                    ]
                ),
                children,
                max_size=4,
            )
        ),
        max_leaves=12,
    )
)
@settings(max_examples=60, deadline=None)
def test_experiment_validation_fuzz(document: Any) -> None:
    """Whatever the file holds, validation answers a UsageError or accepts it."""
    from bastion.drill.runner import validate
    from bastion.errors import UsageError

    if not isinstance(document, dict):
        return
    with contextlib.suppress(UsageError):
        validate(document)


def test_background_load_counts_failed_requests_and_restart_adopts_the_name(
    tmp_path: Path, seed: int
) -> None:
    """RPO of a service drill: requests failed under background load, from its event."""
    (tmp_path / "www").mkdir()
    web = [sys.executable, "-m", "http.server", "${web_port}", "--bind", "127.0.0.1"]
    load = _action(
        "background-load",
        "bastion.drill.actions",
        "http_load",
        url="http://127.0.0.1:${web_port}/",
        duration_s=3.0,
        rps=20,
        timeout_s=0.3,
    )
    load["background"] = True
    hang = _action(
        "hang",
        "bastion.drill.actions",
        "inject",
        fault="process.hang",
        process="web",
        name="hang",
    )
    hang["pauses"] = {"before": 0.5, "after": 1.0}
    restart = _action(
        "restart",
        "bastion.drill.actions",
        "inject",
        fault="process.restart",
        process="web",
        command=web,
        cwd="www",
        name="restart",
    )
    experiment = _experiment(
        "http://127.0.0.1:${web_port}/",
        [
            load,
            hang,
            _action("wake", "bastion.drill.actions", "revert", name="hang"),
            restart,
            _action("wait", "bastion.drill.actions", "wait_recovered", timeout_s=20),
        ],
        free_ports=["web_port"],
        processes={"web": {"command": web, "cwd": "www", "ready_port": "${web_port}"}},
        scope={"paths": ["www"]},
    )
    result = run_experiment(experiment, base=tmp_path, seed=seed)
    assert result.exit_code == 0, result.problems
    m = result.measurements
    stats = result.journal["bastion"]["load"]["load"]
    print(m, stats)
    assert m["requests_failed"] == stats["requests_failed"]
    assert m["requests_failed"] >= 1  # the hang made some requests time out
    assert stats["requests_ok"] >= 1
    runs = {r["activity"]["name"]: r for r in result.journal["run"]}
    assert runs["restart"]["status"] == "succeeded"
    assert runs["restart"]["output"]["new_pid"] != runs["hang"]["output"]["pid"]
