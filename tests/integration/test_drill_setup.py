"""A drill as a user runs one on their own system (issue 12, item 13): the experiment's
``manifest:`` is honoured from any directory, ``ready_url`` waits for the primary
backends (not the fallback), ``chat_ok`` sends what the model accepts, ``http_load``
counts a 4xx as a failed request, and the fault modules run with ``-m`` without a
warning. Real processes and real HTTP servers on 127.0.0.1 throughout."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bastion.drill.probes import chat_ok
from bastion.drill.runner import run_experiment
from bastion.events import EventLog
from bastion.manifest import load
from tests.helpers import run_bastion

# A detector that is part of the system: it reads the system's manifest for its event log
# and reports every injected fault there, as a guard or a supervisor would.
DETECTOR = """\
from bastion.events import EventLog
from bastion.manifest import load
log = EventLog.in_state_dir(load("../bastion.yaml").state_dir)
for event in log.follow(kind="drill.fault.injected"):
    log.emit("test.detected", "detector", fault=event.data.get("kind"))
"""


def _action(title: str, func: str, /, **arguments: Any) -> dict[str, Any]:
    return {
        "type": "action",
        "name": title,
        "provider": {
            "type": "python",
            "module": "bastion.drill.actions",
            "func": func,
            "arguments": arguments,
        },
    }


def test_the_experiments_manifest_is_used_from_any_directory(tmp_path: Path, seed: int) -> None:
    system = tmp_path / "system"
    (system / "experiments").mkdir(parents=True)
    (system / "bastion.yaml").write_text("version: 1\nsystem: mine\nstate_dir: state\n")
    (system / "experiments" / "detector.py").write_text(DETECTOR)
    sleeper = ["python", "-c", "import time; time.sleep(120)"]
    experiment = {
        "title": "the system notices a killed worker",
        "description": "the detector reads the system's own event log",
        "method": [
            _action("kill", "inject", fault="process.kill", process="worker", name="kill"),
            {
                "type": "probe",
                "name": "noticed",
                "provider": {
                    "type": "python",
                    "module": "bastion.drill.probes",
                    "func": "wait_for_event",
                    "arguments": {"kind": "test.detected", "timeout_s": 30},
                },
            },
        ],
        "extensions": [
            {
                "name": "bastion",
                "manifest": "../bastion.yaml",
                "detect": ["test.detected"],
                "processes": {
                    "detector": {
                        "command": ["python", "detector.py"],
                        "ready_event": "drill.process.started",
                    },
                    "worker": {"command": sleeper},
                },
            }
        ],
    }
    path = system / "experiments" / "kill.json"
    path.write_text(json.dumps(experiment))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    journal = elsewhere / "journal.json"
    done = run_bastion(
        "drill",
        "run",
        str(path),
        "--no-live",
        "--journal",
        str(journal),
        "--seed",
        str(seed),
        cwd=elsewhere,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    measured = json.loads(journal.read_text())["bastion"]["measurements"]
    assert measured["detected_by"] == "test.detected"
    assert measured["time_to_detect_s"] is not None
    # Every event is in the system's log; no stray log was made next to the experiment
    # or where the command ran.
    with EventLog.in_state_dir(load(system / "bastion.yaml").state_dir) as log:
        kinds = {e.kind for e in log.query()}
    assert {"drill.started", "drill.fault.injected", "test.detected", "drill.finished"} <= kinds
    assert not (system / "experiments" / ".bastion").exists()
    assert not (elsewhere / ".bastion").exists()


# A stand-in Bastion gateway whose /healthz is 200 from the start (its fallback is up),
# while its primary backend comes up only after it has been asked for its status a few
# times: a drill that trusted /healthz alone would check its steady state too early.
GATEWAY = """\
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
asked = 0
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def reply(self, code, doc):
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        global asked
        primary_up = asked >= 5
        if self.path == "/healthz":
            self.reply(200, {"ok": True})
        elif self.path == "/bastion/status":
            asked += 1
            ups = [
                {"name": "local-0", "group": "local", "tier": 0, "needs_probe": not primary_up,
                 "breaker": {"state": "closed"}},
                {"name": "vendor", "group": "vendor", "tier": 1, "needs_probe": False,
                 "breaker": {"state": "closed"}},
            ]
            self.reply(200, {"service": "api", "pool": {"tiers": [], "upstreams": ups}})
        elif self.path == "/primary":
            self.reply(200 if primary_up else 503, {"primary": primary_up})
        else:
            self.reply(404, {})
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_ready_url_waits_for_the_primary_backends_not_the_fallback(
    tmp_path: Path, seed: int
) -> None:
    (tmp_path / "gateway.py").write_text(GATEWAY)
    experiment = {
        "title": "steady on the primary",
        "description": "the steady state is the primary's",
        "steady-state-hypothesis": {
            "title": "the primary answers",
            "probes": [
                {
                    "type": "probe",
                    "name": "primary",
                    "tolerance": True,
                    "provider": {
                        "type": "python",
                        "module": "bastion.drill.probes",
                        "func": "http_ok",
                        "arguments": {"url": "http://127.0.0.1:${gw_port}/primary"},
                    },
                }
            ],
        },
        "method": [_action("nothing", "revert")],
        "extensions": [
            {
                "name": "bastion",
                "free_ports": ["gw_port"],
                "processes": {
                    "gateway": {
                        "command": ["python", "gateway.py", "${gw_port}"],
                        "ready_url": "/healthz",
                        "ready_port": "${gw_port}",
                    }
                },
            }
        ],
    }
    result = run_experiment(experiment, base=tmp_path, seed=seed)
    assert result.exit_code == 0, result.problems
    assert result.journal["steady_states"]["before"]["steady_state_met"] is True


class _Chat(BaseHTTPRequestHandler):
    """A model that, like the example's digits model, reads comma-separated numbers and
    answers 400 to anything else; and a page that answers ``STATUS`` to every GET."""

    status = 404

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, code: int, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        content = request["messages"][-1]["content"]
        try:
            digits = [float(v) for v in content.split(",")]
        except ValueError:
            self._reply(400, {"error": {"message": "comma-separated numbers, please"}})
            return
        answer = {"message": {"role": "assistant", "content": str(len(digits))}}
        self._reply(200, {"choices": [answer]})

    def do_GET(self) -> None:
        self._reply(type(self).status, {})


@pytest.fixture
def chat_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Chat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_chat_ok_sends_the_content_the_model_accepts(chat_server: str) -> None:
    assert chat_ok(chat_server) is False  # "steady?" is not numbers: a 400
    assert chat_ok(chat_server, content=",".join(["0"] * 64)) is True
    messages = [{"role": "user", "content": "1,2,3"}]
    assert chat_ok(chat_server, messages=messages) is True


@pytest.mark.parametrize("status", [404, 429])
def test_http_load_counts_4xx_answers_as_failed_requests(
    tmp_path: Path, chat_server: str, seed: int, status: int
) -> None:
    _Chat.status = status
    experiment = {
        "title": "load on a page that refuses",
        "description": "every answer is a 4xx",
        "method": [_action("load", "http_load", url=f"{chat_server}/", duration_s=0.5, rps=20)],
        "extensions": [{"name": "bastion"}],
    }
    result = run_experiment(experiment, base=tmp_path, seed=seed)
    stats = result.journal["bastion"]["load"]["load"]
    assert stats["requests_ok"] == 0
    assert stats["requests_failed"] >= 1
    assert result.measurements["requests_failed"] == stats["requests_failed"]


@pytest.mark.parametrize("module", ["http", "network", "ransomware"])
def test_fault_modules_run_with_dash_m_without_a_warning(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-W", "error", "-m", f"bastion.drill.faults.{module}", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "RuntimeWarning" not in done.stderr
    assert done.stdout.startswith(f"usage: python -m bastion.drill.faults.{module}")
