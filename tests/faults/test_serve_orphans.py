"""Starting and stopping ``bastion serve`` (issue 12, item 9): a real ``bastion serve``
killed with a real SIGKILL takes its replica processes with it (no orphans), and a port
that is already taken is a clear error (exit 2) naming the service and the address,
given before anything says it is serving and before any replica is started."""

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

import psutil
from ruamel.yaml import YAML

from tests.helpers import commit_model

BASTION = [sys.executable, "-m", "bastion"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listen_on(example: Path, port: int, *, min_replicas: int | None = None) -> Path:
    yaml = YAML()
    path = example / "bastion.yaml"
    doc = yaml.load(path)
    service = doc["services"]["digits"]
    service["listen"] = f"127.0.0.1:{port}"
    service["backends"][1]["url"] = f"http://127.0.0.1:{_free_port()}"
    if min_replicas is not None:
        service["backends"][0]["replicas"] = {"min": min_replicas, "max": min_replicas}
    yaml.dump(doc, path)
    return path


def _ready_local(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/bastion/status", timeout=2) as r:
            ups = json.loads(r.read())["pool"]["upstreams"]
    except OSError:
        return 0
    return len([u for u in ups if u["group"] == "local" and not u["needs_probe"]])


def _replicas(serve: psutil.Process) -> list[psutil.Process]:
    return [
        p
        for p in serve.children(recursive=True)
        if "bastion.serve.replica" in " ".join(p.cmdline())
    ]


def _still_there(proc: psutil.Process) -> bool:
    """The same process (pid and start time) is alive and not a zombie."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_sigkill_of_bastion_serve_leaves_no_replica_behind(example_copy: Path, seed: int) -> None:
    commit_model(example_copy, seed)
    port = _free_port()
    path = _listen_on(example_copy, port)
    proc = subprocess.Popen(
        [*BASTION, "serve", "digits", "-f", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    replicas: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 60
        while _ready_local(port) < 2:
            assert proc.poll() is None, f"bastion serve exited {proc.returncode}"
            assert time.monotonic() < deadline, "the replicas never became ready"
            time.sleep(0.1)
        replicas = _replicas(psutil.Process(proc.pid))
        assert len(replicas) == 2, replicas
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
        deadline = time.monotonic() + 20
        while any(_still_there(r) for r in replicas):
            assert time.monotonic() < deadline, (
                "replicas outlived their SIGKILLed supervisor: "
                f"{[r.pid for r in replicas if _still_there(r)]}"
            )
            time.sleep(0.05)
        # and the gateway's port is free again for the next `bastion serve` (which binds
        # with SO_REUSEADDR, as aiohttp does, past the polls' TIME_WAIT)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for r in replicas:  # only if the assertion above failed: leave nothing running
            if _still_there(r):
                r.kill()


def test_a_port_in_use_is_exit_2_naming_the_service_and_address(example_copy: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = _listen_on(example_copy, port)
        done = subprocess.run(
            [*BASTION, "serve", "digits", "-f", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "serving" not in out
    assert "internal error" not in out
    assert f"127.0.0.1:{port}" in out
    assert "'digits'" in out
    assert "address already in use" in out
    assert "services.digits.listen" in out  # the fix
    assert not (example_copy / ".bastion" / "serve" / "digits").exists()  # no replica ran
