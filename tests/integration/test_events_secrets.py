"""Secrets never reach the event log: by key, by shape, after a flag, in URLs, and by value
(the values of the manifest's ``*_env`` variables and of secret-looking env entries)."""

from __future__ import annotations

import json
import os
import sqlite3
import string
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.events import EventLog, add_secret, redact
from bastion.manifest import loads

SECRET_CHARS = string.ascii_letters + string.digits
secrets = st.text(SECRET_CHARS, min_size=20, max_size=40)


def _stored(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return "\n".join(row[0] for row in conn.execute("SELECT data FROM events"))


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    secret=secrets,
    flag=st.sampled_from(["--api-key", "--token", "--password", "--db-password", "-auth"]),
    joined=st.booleans(),
)
def test_a_secret_on_a_command_line_is_never_stored(
    tmp_path: Path, secret: str, flag: str, joined: bool
) -> None:
    argv = ["python", "train.py", f"{flag}={secret}"] if joined else ["python", flag, secret]
    with EventLog(tmp_path / "events.db") as log:
        event = log.emit("train.run.started", "job", command=argv, note=f"ran {' '.join(argv)}")
    assert secret not in json.dumps(event.data)
    assert secret not in _stored(tmp_path / "events.db")


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.sampled_from(
        [
            "sk-{s}",
            "AKIA{S}",
            "ghp_{s}",
            "xoxb-{s}",
            "Bearer {s}",
            "postgres://bob:{s}@db:5432/x",
            "eyJ{s}.eyJ{s}.{s}",
        ]
    ),
    secret=secrets,
)
def test_known_secret_shapes_are_redacted_anywhere_in_text(body: str, secret: str) -> None:
    upper = (secret.upper() + "A" * 16)[:16]
    value = body.format(s=secret, S=upper)
    out = redact({"message": f"connecting with {value} now", "items": [value]})
    assert secret not in json.dumps(out)
    if "{S}" in body:
        assert upper not in json.dumps(out)


def test_values_of_the_manifests_env_variables_are_secrets(tmp_path: Path) -> None:
    env = {**os.environ, "VENDOR_KEY": "vendorsecret-9f8e7d6c", "PATH": os.environ["PATH"]}
    code = (
        "from bastion.manifest import loads\n"
        "from bastion.events import EventLog\n"
        "loads(open('m.yaml').read())\n"
        "log = EventLog('events.db')\n"
        "log.emit('serve.started', 'svc', argv=['curl', '-H', 'x: vendorsecret-9f8e7d6c'],"
        " extra='job env JOBSECRET-123456 here')\n"
    )
    (tmp_path / "m.yaml").write_text(
        "version: 1\nsystem: s\n"
        "jobs:\n  j:\n    command: [python, t.py]\n"
        "    env: {HF_TOKEN: JOBSECRET-123456, LR: '0.1'}\n"
        "services:\n  svc:\n    listen: 127.0.0.1:8799\n    backends:\n"
        "      - {name: v, url: 'http://127.0.0.1:9', api_key_env: VENDOR_KEY}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    stored = _stored(tmp_path / "events.db")
    assert "vendorsecret-9f8e7d6c" not in stored
    assert "JOBSECRET-123456" not in stored
    assert "***" in stored


def test_secret_looking_environment_values_are_secrets(tmp_path: Path) -> None:
    env = {**os.environ, "MY_SERVICE_TOKEN": "tok-abcdef123456"}
    code = (
        "from bastion.events import EventLog\n"
        "EventLog('events.db').emit('serve.started', 's', cmd='run --x tok-abcdef123456')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "tok-abcdef123456" not in _stored(tmp_path / "events.db")


def test_plain_values_are_left_alone(tmp_path: Path) -> None:
    add_secret("zz-registered-value")
    data = {"command": ["python", "train.py", "--max-tokens", "100", "--lr", "0.1"], "n": 3}
    assert redact(data) == data
    assert redact(["x zz-registered-value y"]) == ["x *** y"]
    manifest = loads("version: 1\nsystem: s\n", base_dir=tmp_path)
    assert manifest.system == "s"
