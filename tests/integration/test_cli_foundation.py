"""The foundation's commands, run as a user runs them: a real subprocess each."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE


def bastion(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
    )


def test_init_makes_a_checkable_manifest_vault_and_private_keys(tmp_path: Path) -> None:
    proc = bastion("init", str(tmp_path / "sys"), "--system", "shop")
    assert proc.returncode == 0, proc.stderr
    root = tmp_path / "sys"
    assert (root / ".bastion" / "vault" / "a").is_dir()
    assert (root / ".bastion" / "vault" / "b").is_dir()
    key = root / ".bastion" / "keys" / "signing.key"
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    check = bastion("check", "-f", str(root / "bastion.yaml"))
    assert check.returncode == 0, check.stderr
    assert "system 'shop'" in check.stdout
    # again: the manifest exists, so it is left alone and nothing is missing to make
    manifest = (root / "bastion.yaml").read_bytes()
    pem = key.read_bytes()
    again = bastion("init", str(root))
    assert again.returncode == 0, again.stderr
    assert "created" not in again.stdout
    assert "--force" in again.stdout
    assert (root / "bastion.yaml").read_bytes() == manifest
    assert key.read_bytes() == pem


def test_init_beside_an_existing_manifest_makes_only_what_its_vault_lacks(
    example_copy: Path,
) -> None:
    manifest = (example_copy / "bastion.yaml").read_bytes()
    (example_copy / ".bastion/vault/a").mkdir(parents=True)
    proc = bastion("init", str(example_copy))
    assert proc.returncode == 0, proc.stderr
    made = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("created")]
    assert [Path(m).relative_to(example_copy) for m in made] == [
        Path(".bastion/vault/b"),
        Path(".bastion/keys/signing.key"),
        Path(".bastion/keys/admin.key"),
    ]
    assert (example_copy / "bastion.yaml").read_bytes() == manifest
    for key in ("signing.key", "admin.key"):
        path = example_copy / ".bastion/keys" / key
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert (example_copy / ".bastion/keys" / f"{key}.pub").exists()
    pems = {k: (example_copy / ".bastion/keys" / k).read_bytes() for k in ("signing.key",)}
    again = bastion("init", str(example_copy))
    assert again.returncode == 0, again.stderr
    assert "created" not in again.stdout
    assert "keys and replicas are all there" in again.stdout
    assert (example_copy / ".bastion/keys/signing.key").read_bytes() == pems["signing.key"]
    assert (example_copy / "bastion.yaml").read_bytes() == manifest


def test_init_will_not_make_a_new_signing_key_for_a_vault_with_snapshots(
    example_copy: Path,
) -> None:
    # the key is lost but the vault is not: a new key could never verify what is there
    assert bastion("init", str(example_copy)).returncode == 0
    put = bastion(
        "vault",
        "put",
        "dataset/digits",
        "dataset/",
        "-f",
        str(example_copy / "bastion.yaml"),
        cwd=example_copy,
    )
    assert put.returncode == 0, put.stderr
    (example_copy / ".bastion/keys/signing.key").unlink()
    (example_copy / ".bastion/keys/signing.key.pub").unlink()
    proc = bastion("init", str(example_copy))
    assert proc.returncode == 2
    assert "already holds snapshots signed with it" in proc.stderr
    assert "from your backup" in proc.stderr
    assert not (example_copy / ".bastion/keys/signing.key").exists()


def test_schema_is_json_schema_with_every_section() -> None:
    proc = bastion("schema")
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    assert schema["$schema"].endswith("2020-12/schema")
    for section in (
        "version",
        "system",
        "state_dir",
        "vault",
        "segments",
        "components",
        "jobs",
        "services",
        "slos",
        "recovery",
    ):
        assert section in schema["properties"], section
    assert schema["additionalProperties"] is False


def test_example_manifest_checks() -> None:
    proc = bastion("check", "-f", str(EXAMPLE / "bastion.yaml"))
    assert proc.returncode == 0, proc.stderr


def test_usage_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    proc = bastion("check", "--no-such-flag")
    assert proc.returncode == 2
    missing = bastion("check", "-f", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr
    assert "nope.yaml" in missing.stderr


def test_unusable_state_dir_is_a_clear_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = bastion("events", "--state-dir", str(blocker / "sub"))
    assert proc.returncode == 2, proc.stderr
    assert "cannot open the event log" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_internal_error_exits_3_and_names_the_log(capsys: pytest.CaptureFixture[str]) -> None:
    from bastion.cli.main import app, main

    @app.command("crash-for-test", hidden=True)
    def crash() -> None:
        raise RuntimeError("boom")

    with pytest.raises(SystemExit) as info:
        main(["crash-for-test"])
    assert info.value.code == 3
    err = capsys.readouterr().err
    assert "internal error" in err
    assert "RuntimeError: boom" in err
    log = err.split("traceback is in ")[1].split(";")[0].strip()
    assert "Traceback" in Path(log).read_text()


def test_cli_works_without_pytorch(tmp_path: Path) -> None:
    # torch is an extra: every command but the training script's side must run without it.
    # sys.modules[name] = None makes `import torch` fail as if it were not installed.
    for args in (["check"], ["train", "status"], ["map", "--format", "json"]):
        code = (
            "import sys; sys.modules['torch'] = None; "
            "from bastion.cli.main import main; "
            f"main({[*args, '-f', str(EXAMPLE / 'bastion.yaml')]!r})"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=tmp_path
        )
        assert proc.returncode in (0, 1), (args, proc.stderr)
        assert "internal error" not in proc.stderr, (args, proc.stderr)
