from __future__ import annotations

import subprocess
import sys

from tests.conftest import EXAMPLE


def test_check_example_manifest_exits_zero() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bastion", "check", "-f", str(EXAMPLE / "bastion.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "system 'digits'" in proc.stdout
