"""Helpers the tests share (outside the production API, as trio keeps ``trio.testing``).

- ``run_bastion``: the real CLI in a child process, as a user runs it.
- ``write_model`` / ``commit_model``: an untrained digits MLP (``bastion.serve.replica``'s
  layout) in a directory, or committed to an example's vault as ``model/digits``.
- ``served``: an aiohttp app on a real 127.0.0.1 port, in its own event-loop thread.
- ``small_tmpfs``: a size-limited tmpfs mounted over a directory, to fill a disk for real.
- ``wait_for``: poll a condition until it holds, with a deadline (never a bare sleep).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bastion.aio import LoopThread, serve_app
from bastion.serve.replica import random_model

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


def write_model(directory: Path, seed: int) -> Path:
    """Write an untrained model with weights from ``seed`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in random_model(seed).items():
        (directory / name).write_bytes(data)
    return directory


def commit_model(example: Path, seed: int) -> None:
    """Commit an untrained model as ``model/digits`` to the vault of the example copy at
    ``example`` (making its keys and replica directories first)."""
    from bastion.manifest import load
    from bastion.starter import write_key
    from bastion.vault import Vault

    manifest = load(example / "bastion.yaml")
    assert manifest.vault is not None
    for key in (manifest.vault.key, manifest.vault.admin_key):
        assert key is not None
        write_key(key)
    for replica in manifest.vault.replicas:
        Path(replica).mkdir(parents=True, exist_ok=True)
    Vault.from_manifest(manifest).commit("model/digits", files=random_model(seed))


@contextlib.contextmanager
def served(app: web.Application) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (any free port) while the block runs; yields its URL."""
    thread = LoopThread("test-server")
    started = thread.start(serve_app(app))
    assert started is not None
    runner, port = started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        thread.stop(runner.cleanup())


def wait_for(
    cond: Callable[[], Any], what: str, seconds: float = 60.0, *, poll: float = 0.02
) -> Any:
    """Poll ``cond`` every ``poll`` seconds until it is truthy (return it), or fail naming
    ``what``."""
    deadline = time.monotonic() + seconds
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:g} s waiting for {what}")
        time.sleep(poll)


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``"4m"``) mounted over the directory ``where``, hiding what
    was there until it ends; the test is skipped where mounting is not allowed (not root)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("filling a size-limited location needs a small tmpfs (mount as root)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)
