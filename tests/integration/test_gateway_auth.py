"""Client API keys (``services.<s>.auth.keys_env``), end to end through ``bastion serve``:
401 OpenAI-shaped JSON for a missing or wrong key, ``/bastion/status`` behind the key,
liveness and metrics open, the key in no log line and no event; a gateway meant to need
keys refuses to start without them.

Real parts: the CLI in a child process, the ``openai`` client, a stand-in vendor on
127.0.0.1, the event log on disk.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest

from bastion.serve._auth import ClientKeys, client_keys
from bastion.serve.gateway import exposed
from bastion.serve.standin import make_app
from tests.helpers import run_bastion, served

KEYS = "sk-bastion-alpha-0123456789,sk-bastion-beta-9876543210"
ALPHA, BETA = KEYS.split(",")
MESSAGES: Any = [{"role": "user", "content": "hello"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _manifest(tmp_path: Path, port: int, vendor_url: str) -> Path:
    path = tmp_path / "bastion.yaml"
    path.write_text(
        "version: 1\nsystem: authtest\nservices:\n  chat:\n"
        f"    listen: 127.0.0.1:{port}\n"
        "    auth: {keys_env: CHAT_KEYS}\n"
        "    backends:\n      - name: vendor\n"
        f"        url: {vendor_url}\n"
    )
    return path


def _status(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return 0, b""


def test_client_keys_gate_every_route_but_health_and_metrics(tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "CHAT_KEYS": KEYS}
    with served(make_app(name="vendor")) as vendor_url:
        path = _manifest(tmp_path, port, vendor_url)
        proc = subprocess.Popen(
            [sys.executable, "-m", "bastion", "serve", "--log-level", "info", "-f", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            deadline = time.monotonic() + 30
            while _status(base + "/healthz")[0] != 200:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the gateway did not become healthy"
                time.sleep(0.05)

            code, text = _status(base + "/v1/models")  # no Authorization at all
            assert code == 401
            missing = json.loads(text)["error"]
            assert missing["code"] == "invalid_api_key"
            assert "Authorization: Bearer" in missing["message"]
            wrong = openai.OpenAI(base_url=base + "/v1", api_key=ALPHA + "x", max_retries=0)
            with pytest.raises(openai.AuthenticationError) as bad:
                wrong.chat.completions.create(model="chat", messages=MESSAGES)
            assert bad.value.status_code == 401
            body = bad.value.body
            assert isinstance(body, dict)
            assert set(body) == {"message", "type", "param", "code"}
            assert ALPHA not in json.dumps(body)

            for key in (ALPHA, BETA):
                client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
                reply = client.chat.completions.create(model="chat", messages=MESSAGES)
                assert reply.choices[0].message.content

            code, text = _status(base + "/bastion/status")
            assert code == 401
            assert vendor_url.encode() not in text
            code, text = _status(base + "/bastion/status", {"Authorization": f"Bearer {BETA}"})
            assert code == 200
            assert vendor_url.encode() in text
            assert _status(base + "/metrics")[0] == 200
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET /pot HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
                assert sock.recv(65536).split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")

            shown = run_bastion("serve", "status", "-f", str(path), env=env)
            assert shown.returncode == 0, shown.stderr
            assert "vendor" in shown.stdout
            unset = {k: v for k, v in env.items() if k != "CHAT_KEYS"}
            refused = run_bastion("serve", "status", "-f", str(path), env=unset)
            assert refused.returncode == 2
            assert "CHAT_KEYS" in refused.stderr + refused.stdout
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
    logged = out + err
    assert "POST /v1/chat/completions" in logged  # the access log is on at --log-level info
    # The malformed request is one line, no aiohttp traceback.
    bad_lines = [line for line in logged.splitlines() if "Error handling request" in line]
    assert len(bad_lines) == 1, logged
    assert "Traceback" not in logged
    for key in (ALPHA, BETA):
        assert key not in logged
    events = tmp_path / ".bastion" / "events.db"
    with sqlite3.connect(events) as db:
        rows = " ".join(str(row) for row in db.execute("select * from events"))
    assert "serve" in rows
    for key in (ALPHA, BETA):
        assert key not in rows


def test_a_gateway_that_needs_keys_does_not_start_without_them(tmp_path: Path) -> None:
    path = _manifest(tmp_path, _free_port(), "http://127.0.0.1:9")
    env = {k: v for k, v in os.environ.items() if k != "CHAT_KEYS"}
    done = run_bastion("serve", "-f", str(path), env={**env, "CHAT_KEYS": " , "})
    assert done.returncode == 2
    assert "services.chat.auth.keys_env: $CHAT_KEYS is empty" in done.stderr + done.stdout


def test_client_keys_are_registered_as_secrets_and_checked_exactly() -> None:
    from bastion.events import redact

    keys = client_keys("chat", "K", {"K": " sk-one-abcdef , sk-two-ghijkl "})
    assert keys == ("sk-one-abcdef", "sk-two-ghijkl")
    assert "sk-two-ghijkl" not in json.dumps(redact({"note": "got sk-two-ghijkl here"}))
    check = ClientKeys(keys)
    assert check.allows("Bearer sk-one-abcdef")
    assert check.allows("bearer sk-two-ghijkl")
    for header in (None, "", "sk-one-abcdef", "Basic sk-one-abcdef", "Bearer sk-one-abcde"):
        assert not check.allows(header)
    assert not ClientKeys().enabled
    assert client_keys("chat", None) == ()


@pytest.mark.parametrize(
    ("host", "beyond"),
    [("127.0.0.1", False), ("::1", False), ("localhost", False), ("0.0.0.0", True),
     ("::", True), ("", True), ("10.1.2.3", True), ("gpu-box.internal", True)],
)  # fmt: skip
def test_listening_beyond_loopback_is_recognised(host: str, beyond: bool) -> None:
    assert exposed(host) is beyond
