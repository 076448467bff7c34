"""Helpers the tests share (outside the production API, as trio keeps ``trio.testing``).

- ``run_bastion``: the real CLI in a child process, as a user runs it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

BASTION = [sys.executable, "-m", "bastion"]


def run_bastion(
    *args: str,
    cwd: Path | None = None,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bastion ARGS`` and return what it did (never raises on exit code)."""
    return subprocess.run(
        [*BASTION, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=dict(env) if env is not None else None,
        input=input,
    )
