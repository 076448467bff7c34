"""`bastion up` as a real process tree (issue 17, part 1): a real SIGKILL of `bastion up`
under real client load, a restart that adopts what still runs, `bastion down` leaving no
process behind, `bastion reload` with a changed backend list under load, and bad input
(a broken manifest, a port in use) refused with the running system unchanged."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from ruamel.yaml import YAML

from bastion.serve.runner import spawn_server, stop_server
from tests.faults.test_gateway_faults import Load
from tests.helpers import commit_model

BASTION = [sys.executable, "-m", "bastion"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bastion(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BASTION, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _edit(path: Path, change: object) -> None:
    yaml = YAML()
    doc = yaml.load(path)
    change(doc)  # type: ignore[operator]
    yaml.dump(doc, path)


def _vendor() -> tuple[subprocess.Popen[str], str]:
    proc, port = spawn_server(["-m", "bastion.serve.standin", "--port", "0"])
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture
def system(example_copy: Path, seed: int) -> Iterator[tuple[Path, int]]:
    """The example with its own free ports, a committed model and no scrub soon; on the
    way out `bastion down`, and anything still carrying this manifest's path is killed."""
    commit_model(example_copy, seed)
    path = example_copy / "bastion.yaml"
    port = _free_port()

    def ports(doc: dict) -> None:  # type: ignore[type-arg]
        doc["services"]["digits"]["listen"] = f"127.0.0.1:{port}"
        doc["services"]["digits"]["backends"][1]["url"] = f"http://127.0.0.1:{_free_port()}"
        doc["control"] = {"listen": f"127.0.0.1:{_free_port()}", "scrub": None}

    _edit(path, ports)
    try:
        yield path, port
    finally:
        _bastion("down", "-f", str(path), timeout=120)
        for p in _ours(path):
            p.kill()


def _ours(path: Path) -> list[psutil.Process]:
    """Every live process whose command line names this manifest (or its replicas')."""
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if str(path) in " ".join(p.info["cmdline"] or []):
                out.append(p)
        except psutil.Error:
            continue
    return out


def _counts(path: Path) -> dict[str, int]:
    counts = {"up": 0, "serve": 0, "replica": 0}
    for p in _ours(path):
        try:
            line = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "bastion.serve.replica" in line:
            counts["replica"] += 1
        elif " serve " in f" {line} ":
            counts["serve"] += 1
        elif " up " in f" {line} ":
            counts["up"] += 1
    return counts


def _status(path: Path) -> dict:  # type: ignore[type-arg]
    done = _bastion("status", "--json", "-f", str(path), timeout=60)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _wait(cond: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g} s"
        time.sleep(0.05)


def _up_pid(path: Path) -> int:
    state = json.loads((path.parent / ".bastion" / "up" / "up.pid").read_text())
    return int(state["pid"])


def test_sigkill_of_up_then_restart_no_duplicate_and_gateway_answers_then_down_leaves_nothing(
    system: tuple[Path, int],
) -> None:
    path, port = system
    done = _bastion("up", "--detach", "-f", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "control API on http://127.0.0.1:" in done.stdout
    second = _bastion("up", "--detach", "-f", str(path))
    assert second.returncode == 2, second.stdout + second.stderr
    assert "already running" in second.stderr
    assert _counts(path) == {"up": 1, "serve": 1, "replica": 2}, _counts(path)
    children = json.loads((path.parent / ".bastion" / "up" / "children.json").read_text())
    serve_pid = children["serve:digits"]["pid"]
    replicas = sorted(
        p.pid
        for p in psutil.Process(serve_pid).children(recursive=True)
        if "bastion.serve.replica" in " ".join(p.cmdline())
    )
    assert len(replicas) == 2
    # state files are private
    up_dir = path.parent / ".bastion" / "up"
    assert up_dir.stat().st_mode & 0o077 == 0
    for f in up_dir.glob("*.json"):
        assert f.stat().st_mode & 0o077 == 0, f

    with Load(f"http://127.0.0.1:{port}", openai_clients=0) as load:
        load.wait_for(50)
        os.kill(_up_pid(path), signal.SIGKILL)
        _wait(lambda: _counts(path)["up"] == 0, "the SIGKILLed bastion up going away")
        # its children outlive it: the gateway keeps answering
        load.wait_for(50)
        assert _status(path)["up"]["running"] is False
        again = _bastion("up", "--detach", "-f", str(path))
        assert again.returncode == 0, again.stdout + again.stderr
        load.wait_for(50)
        assert _counts(path) == {"up": 1, "serve": 1, "replica": 2}, _counts(path)
        children = json.loads((up_dir / "children.json").read_text())
        assert children["serve:digits"]["pid"] == serve_pid  # adopted, not started again
        now = sorted(
            p.pid
            for p in psutil.Process(serve_pid).children(recursive=True)
            if "bastion.serve.replica" in " ".join(p.cmdline())
        )
        assert now == replicas
        st = _status(path)
        assert st["healthy"] is True, st
    assert load.failed == [], load.failed[:5]
    assert load.ok > 150

    from bastion.events import EventLog

    with EventLog.in_state_dir(path.parent / ".bastion") as log:
        adopted = log.query(kind="control.child.adopted")
    assert [e.subject for e in adopted] == ["serve:digits"]

    gone = _bastion("down", "-f", str(path), timeout=120)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    _wait(lambda: not _ours(path), "every process of this system stopping", timeout=30)
    assert not psutil.pid_exists(serve_pid) or psutil.Process(serve_pid).status() == "zombie"
    st = _status(path)
    assert st["up"]["running"] is False
    assert st["services"]["digits"]["healthy"] is False


def test_reload_changed_backends_under_load_and_bad_input_changes_nothing(
    system: tuple[Path, int],
) -> None:
    path, port = system
    vendor, vendor_url = _vendor()
    try:
        _edit(path, lambda d: d["services"]["digits"]["backends"][1].update(url=vendor_url))
        done = _bastion("up", "--detach", "-f", str(path))
        assert done.returncode == 0, done.stdout + done.stderr
        before = json.loads((path.parent / ".bastion" / "up" / "children.json").read_text())
        # the OpenAI client: a stand-in vendor speaks chat completions (not /v1/predict),
        # and a hedge may reach it
        with Load(f"http://127.0.0.1:{port}", http_concurrency=0, openai_clients=3) as load:
            load.wait_for(50)
            # a changed backend list: the vendor replaced by another, one more added,
            # the local replica bounds moved
            other, other_url = _vendor()
            try:

                def change(d: dict) -> None:  # type: ignore[type-arg]
                    backends = d["services"]["digits"]["backends"]
                    backends[1]["url"] = other_url
                    backends[1]["name"] = "vendor-c"
                    backends.append({"name": "vendor-d", "url": vendor_url, "tier": "fallback"})
                    backends[0]["replicas"] = {"min": 2, "max": 3}

                _edit(path, change)
                done = _bastion("reload", "--json", "-f", str(path))
                assert done.returncode == 0, done.stdout + done.stderr
                result = json.loads(done.stdout)
                assert result["ok"] is True, result
                assert result["reloaded"] == ["serve:digits"], result
                load.wait_for(50)
                ups = _gateway_upstreams(port)
                assert {"vendor-c", "vendor-d"} <= ups, ups
                assert "vendor-b" not in ups, ups

                # bad input 1: a manifest broken between reloads
                good = path.read_text()
                path.write_text(good.replace("policy: {timeout_ms", "policy: {timeot_ms"))
                bad = _bastion("reload", "-f", str(path))
                assert bad.returncode == 2, bad.stdout + bad.stderr
                assert "bastion.yaml:" in bad.stderr + bad.stdout  # located
                assert "timeot_ms" in bad.stderr + bad.stdout
                # bad input 2: a new service on a port that is taken
                path.write_text(good)
                with socket.socket() as taken:
                    taken.bind(("127.0.0.1", 0))
                    taken.listen()
                    busy = taken.getsockname()[1]

                    def add(d: dict) -> None:  # type: ignore[type-arg]
                        d["services"]["more"] = {
                            "listen": f"127.0.0.1:{busy}",
                            "backends": [{"name": "v", "url": vendor_url}],
                        }

                    _edit(path, add)
                    refused = _bastion("reload", "-f", str(path))
                out = refused.stdout + refused.stderr
                assert refused.returncode == 2, out
                assert f"127.0.0.1:{busy}" in out
                assert "'more'" in out
                assert "address already in use" in out
                load.wait_for(50)
            finally:
                path.write_text(good)
                stop_server(other)
        assert load.failed == [], load.failed[:5]
        after = json.loads((path.parent / ".bastion" / "up" / "children.json").read_text())
        assert after == before  # the same processes throughout: nothing restarted
        assert _counts(path) == {"up": 1, "serve": 1, "replica": 2}

        # a new service: started beside the running one, which is left alone
        more = _free_port()

        def add_service(d: dict) -> None:  # type: ignore[type-arg]
            d["services"]["more"] = {
                "listen": f"127.0.0.1:{more}",
                "backends": [{"name": "v", "url": vendor_url}],
            }

        _edit(path, add_service)
        done = _bastion("reload", "--json", "-f", str(path))
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["added"] == ["serve:more"]
        assert _status(path)["services"]["more"]["healthy"] is True
        grown = json.loads((path.parent / ".bastion" / "up" / "children.json").read_text())
        assert grown["serve:digits"] == before["serve:digits"]
        assert _counts(path) == {"up": 1, "serve": 2, "replica": 2}

        # changed `slos:`: the running gateway's evaluator takes them, no restart
        def slos(d: dict) -> None:  # type: ignore[type-arg]
            d["slos"] = [
                {"id": "digits-availability", "service": "digits", "objective": 0.99},
                {"id": "more-availability", "service": "more", "objective": 0.95},
            ]

        _edit(path, slos)
        done = _bastion("reload", "--json", "-f", str(path))
        assert done.returncode == 0, done.stdout + done.stderr
        result = json.loads(done.stdout)
        assert result["ok"] is True, result
        assert result["restarted"] == [], result
        assert result["slos"] == {
            "serve:digits": ["digits-availability"],
            "serve:more": ["more-availability"],
        }, result
        again = json.loads((path.parent / ".bastion" / "up" / "children.json").read_text())
        assert again == grown  # the same gateway processes: nothing restarted
    finally:
        stop_server(vendor)


def _gateway_upstreams(port: int) -> set[str]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/bastion/status", timeout=5) as r:
        return {u["name"] for u in json.loads(r.read())["pool"]["upstreams"]}


def test_a_port_in_use_is_a_clear_error_and_nothing_is_left_running(
    system: tuple[Path, int],
) -> None:
    path, port = system
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        done = _bastion("up", "-f", str(path), timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert f"127.0.0.1:{port}" in out
    assert "'digits'" in out
    assert "address already in use" in out
    assert "services.digits.listen" in out
    assert "internal error" not in out
    assert not _ours(path)


def test_the_api_port_in_use_is_a_clear_error_before_anything_starts(
    system: tuple[Path, int],
) -> None:
    path, _port = system
    api = YAML().load(path)["control"]["listen"]
    host, _, aport = api.rpartition(":")
    with socket.socket() as taken:
        taken.bind((host, int(aport)))
        taken.listen()
        done = _bastion("up", "--detach", "-f", str(path), timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert api in out
    assert "control.listen" in out
    assert not _ours(path)


def test_up_runs_the_guard_and_a_budgeted_scrub_on_schedule(system: tuple[Path, int]) -> None:
    path, _port = system
    data = path.parent / "protected"
    data.mkdir()
    (data / "a.csv").write_text("x,y\n1,2\n")
    done = _bastion("vault", "protect", str(data), "--name", "dataset/protected", "-f", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    _edit(
        path,
        lambda d: d["control"].update(scrub={"every_s": 10, "max_seconds": 2, "first_after_s": 0}),
    )
    done = _bastion("up", "--detach", "-f", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    from bastion.events import EventLog

    with EventLog.in_state_dir(path.parent / ".bastion") as log:
        _wait(lambda: log.query(kind="control.scrub.finished"), "a scheduled scrub", 60)
        finished = log.query(kind="control.scrub.finished")[0]
        assert finished.data["code"] == 0, finished.data
        assert log.query(kind="vault.scrub.completed")
    st = _status(path)
    assert st["children"]["guard"]["running"] is True, st
    assert "serve:digits" in st["children"]
    gone = _bastion("down", "-f", str(path), timeout=120)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    _wait(lambda: not _ours(path), "every process of this system stopping", timeout=30)
