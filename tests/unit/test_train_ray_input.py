"""Bad input for a Ray worker slot: located manifest errors, an address where no cluster
answers, and ray not installed. Each is exit 2 naming the place and the fix."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.vault import make_key
from tests.conftest import EXAMPLE

OLD = '    command: [python, train.py, --steps, "400"]\n'


def _manifest(target: Path, slot: str) -> Path:
    import shutil

    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".bastion", "__pycache__"))
    make_key(target / ".bastion/keys/signing.key")
    make_key(target / ".bastion/keys/admin.key")
    text = (target / "bastion.yaml").read_text()
    (target / "bastion.yaml").write_text(text.replace(OLD, OLD + f"    slots:\n      - {slot}\n"))
    return target / "bastion.yaml"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bastion(*args: str, pre: str = "") -> subprocess.CompletedProcess[str]:
    code = f"{pre}import sys; from bastion.cli.main import main; "
    code += f"sys.argv = ['bastion', *{list(args)!r}]; main()"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_ray_slot_without_address_is_a_located_manifest_error(tmp_path: Path) -> None:
    path = _manifest(tmp_path / "d", "{name: r, backend: ray}")
    done = _bastion("check", "-f", str(path))
    assert done.returncode == 2, done
    assert "jobs.train-digits.slots[0]" in done.stderr + done.stdout
    assert "backend ray needs address" in done.stderr + done.stdout


def test_no_cluster_at_the_address_exits_2_naming_the_slot(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    port = _closed_port()
    path = _manifest(tmp_path / "d", f"{{name: r, backend: ray, address: '127.0.0.1:{port}'}}")
    done = _bastion("train", "run", "-f", str(path), "train-digits")
    out = done.stderr + done.stdout
    assert done.returncode == 2, out
    assert "jobs.train-digits.slots[0].address" in out
    assert f"no Ray cluster answers at 127.0.0.1:{port}" in out


def test_ray_not_installed_names_the_extra(tmp_path: Path) -> None:
    path = _manifest(tmp_path / "d", "{name: r, backend: ray, address: '127.0.0.1:6379'}")
    # an import of ray fails as if it were not installed
    done = _bastion(
        "train",
        "run",
        "-f",
        str(path),
        "train-digits",
        pre="sys_ = __import__('sys'); sys_.modules['ray'] = None; ",
    )
    out = done.stderr + done.stdout
    assert done.returncode == 2, out
    assert "jobs.train-digits.slots[0]" in out
    assert "bastion[ray]" in out
