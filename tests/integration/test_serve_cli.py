"""`bastion serve` end to end on the example: the CLI runs the gateway with two supervised
replicas loaded from the vault; `bastion serve status` shows them; the `openai` client gets
answers; SIGTERM stops everything. Bad input exits 2 with a clear message."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import openai
from ruamel.yaml import YAML

from tests.helpers import commit_model

BASTION = [sys.executable, "-m", "bastion"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            data: dict[str, object] = json.loads(r.read())
            return data
    except OSError:
        return None


def test_bastion_serve_runs_replicas_and_answers(example_copy: Path, seed: int) -> None:
    commit_model(example_copy, seed)
    yaml = YAML()
    path = example_copy / "bastion.yaml"
    doc = yaml.load(path)
    port = _free_port()
    doc["services"]["digits"]["listen"] = f"127.0.0.1:{port}"
    doc["services"]["digits"]["backends"][1]["url"] = f"http://127.0.0.1:{_free_port()}"
    yaml.dump(doc, path)
    proc = subprocess.Popen(
        [*BASTION, "serve", "digits", "-f", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 40
        while True:
            status = _get(f"http://127.0.0.1:{port}/bastion/status")
            ups = status["pool"]["upstreams"] if status else []  # type: ignore[index]
            ready = [u for u in ups if u["group"] == "local" and not u["needs_probe"]]
            if len(ready) == 2:
                break
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, f"replicas never became ready: {ups}"
            time.sleep(0.1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(
            model="digits", messages=[{"role": "user", "content": ",".join(["4"] * 64)}]
        )
        assert reply.choices[0].message.content in [str(d) for d in range(10)]
        shown = subprocess.run(
            [*BASTION, "serve", "status", "digits", "-f", str(path)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "COLUMNS": "200"},
        ).stdout
        assert "local-0" in shown
        assert "local-1" in shown
        assert "closed" in shown
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert _get(f"http://127.0.0.1:{port}/healthz") is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_bad_input_exits_2_with_a_clear_message(example_copy: Path) -> None:
    path = example_copy / "bastion.yaml"
    out = subprocess.run(
        [*BASTION, "serve", "nope", "-f", str(path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 2
    assert "nope" in out.stdout + out.stderr
    out = subprocess.run(
        [*BASTION, "model", "serve", "../etc/passwd", "-f", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
