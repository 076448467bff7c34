"""Secrets never reach the event log: by key, by shape, after a flag, in URLs, and by value
(the values of the manifest's ``*_env`` variables and of secret-looking env entries)."""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.events import EventLog, add_secret, redact
from bastion.manifest import loads
from tests.pg_server import LogTarget

SECRET_CHARS = string.ascii_letters + string.digits
secrets = st.text(SECRET_CHARS, min_size=20, max_size=40)


def _stored(log: LogTarget) -> str:
    return "\n".join(row[0] for row in log.sql("SELECT data FROM events"))


# no deadline: on PostgreSQL each example opens a connection, slow on a loaded machine
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    secret=secrets,
    flag=st.sampled_from(["--api-key", "--token", "--password", "--db-password", "-auth"]),
    joined=st.booleans(),
)
def test_a_secret_on_a_command_line_is_never_stored(
    log: LogTarget, secret: str, flag: str, joined: bool
) -> None:
    argv = ["python", "train.py", f"{flag}={secret}"] if joined else ["python", flag, secret]
    with EventLog(log.target) as opened:
        event = opened.emit("train.run.started", "job", command=argv, note=f"ran {' '.join(argv)}")
    assert secret not in json.dumps(event.data)
    assert secret not in _stored(log)


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


def test_values_of_the_manifests_env_variables_are_secrets(tmp_path: Path, log: LogTarget) -> None:
    env = {**os.environ, "VENDOR_KEY": "vendorsecret-9f8e7d6c", "PATH": os.environ["PATH"]}
    code = (
        "from bastion.manifest import loads\n"
        "from bastion.events import EventLog\n"
        "loads(open('m.yaml').read())\n"
        "import sys\n"
        "log = EventLog(sys.argv[1])\n"
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
        [sys.executable, "-c", code, log.target],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    stored = _stored(log)
    assert "vendorsecret-9f8e7d6c" not in stored
    assert "JOBSECRET-123456" not in stored
    assert "***" in stored


def test_secret_looking_environment_values_are_secrets(tmp_path: Path, log: LogTarget) -> None:
    env = {**os.environ, "MY_SERVICE_TOKEN": "tok-abcdef123456"}
    code = (
        "import sys\n"
        "from bastion.events import EventLog\n"
        "EventLog(sys.argv[1]).emit('serve.started', 's', cmd='run --x tok-abcdef123456')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, log.target],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "tok-abcdef123456" not in _stored(log)


def test_plain_values_are_left_alone(tmp_path: Path) -> None:
    add_secret("zz-registered-value")
    data = {"command": ["python", "train.py", "--max-tokens", "100", "--lr", "0.1"], "n": 3}
    assert redact(data) == data
    assert redact(["x zz-registered-value y"]) == ["x *** y"]
    manifest = loads("version: 1\nsystem: s\n", base_dir=tmp_path)
    assert manifest.system == "s"


def test_a_password_in_the_manifests_events_url_is_refused_without_echoing_it() -> None:
    from bastion.errors import ManifestError

    text = "version: 1\nsystem: s\nevents: postgresql://bob:hunter2-pw@db.example:5432/ev\n"
    try:
        loads(text)
    except ManifestError as exc:
        message = str(exc)
    else:
        raise AssertionError("a password in events: was accepted")
    assert "hunter2-pw" not in message
    assert "PGPASSWORD" in message
    assert ":3:" in message
    bad = "version: 1\nsystem: s\nevents: mysql://db/ev\n"
    try:
        loads(bad)
    except ManifestError as exc:
        assert "not a PostgreSQL URL" in str(exc)


def test_a_url_given_with_credentials_never_reaches_a_message(log: LogTarget) -> None:
    """Someone hands EventLog a URL with a password in it (not the manifest, which refuses
    it): the server is down, and the error names the server without the credentials."""
    from bastion.errors import UnavailableError

    url = "postgresql://bob:s3cret-in-url@127.0.0.1:1/nope"
    try:
        EventLog(url)
    except UnavailableError as exc:
        assert "s3cret-in-url" not in str(exc)
        assert "127.0.0.1:1" in str(exc)
    else:
        raise AssertionError("a log on a closed port opened")
