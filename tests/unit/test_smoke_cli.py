from __future__ import annotations

from tests.conftest import EXAMPLE
from tests.helpers import run_bastion


def test_check_example_manifest_exits_zero() -> None:
    proc = run_bastion("check", "-f", str(EXAMPLE / "bastion.yaml"))
    assert proc.returncode == 0, proc.stderr
    assert "system 'digits'" in proc.stdout


def test_version() -> None:
    from bastion import __version__

    proc = run_bastion("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"bastion {__version__}"
