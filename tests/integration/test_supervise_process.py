"""Real processes under the supervisor: crash, budget, hang, grace, missing command."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from bastion.errors import UsageError
from bastion.events import Relay
from bastion.supervise import Backoff, Child, ProcessSpec, RestartBudget, Supervisor

FAST = Backoff(initial=0.01, factor=2.0, cap=0.05, jitter=0.0)


def _py(code: str, **kw: Any) -> ProcessSpec:
    return ProcessSpec(argv=[sys.executable, "-c", code], name="t", **kw)


def test_crash_every_time_exhausts_the_budget() -> None:
    events: list[str] = []
    sup = Supervisor(
        _py("raise SystemExit(3)"),
        backoff=FAST,
        budget=RestartBudget(max_restarts=2),
        events=Relay(lambda k, _s, _t, d: events.append(k)),
    )
    out = sup.run()
    assert out.state == "failed"
    assert out.attempts == 3
    assert out.last_exit is not None
    assert out.last_exit.code == 3
    assert "budget exhausted" in out.reason
    assert events.count("started") == 3
    assert events[-1] == "budget_exhausted"


def test_restart_until_success(tmp_path: Path) -> None:
    marker = tmp_path / "n"
    code = (
        "import pathlib,sys; p=pathlib.Path(sys.argv[1]); n=int(p.read_text() or 0) "
        "if p.exists() else 0; p.write_text(str(n+1)); sys.exit(0 if n>=2 else 1)"
    )
    spec = ProcessSpec(argv=[sys.executable, "-c", code, str(marker)], name="t")
    out = Supervisor(spec, backoff=FAST, budget=RestartBudget(max_restarts=5)).run()
    assert out.state == "succeeded"
    assert out.restarts == 2


def test_signal_death_is_reported_and_restarted() -> None:
    seen: list[dict[str, Any]] = []
    sup = Supervisor(
        _py("import os,signal; os.kill(os.getpid(), signal.SIGKILL)"),
        backoff=FAST,
        budget=RestartBudget(max_restarts=1),
        events=Relay(lambda k, _s, _t, d: seen.append(d) if k == "exited" else None),
    )
    out = sup.run()
    assert out.state == "failed"
    assert [d["signal"] for d in seen] == [signal.SIGKILL, signal.SIGKILL]
    assert seen[0]["reason"] in ("signal:SIGKILL", "oom_kill")


def test_hang_detected_by_heartbeat_and_restarted(tmp_path: Path) -> None:
    # The child beats once, then stops itself (SIGSTOP): a hung job. The supervisor must
    # notice the silent heartbeat, SIGTERM+SIGCONT it, and restart; the second run exits 0.
    marker = tmp_path / "ran"
    code = (
        "import os,signal,sys,pathlib\n"
        "from bastion.supervise import Heartbeat\n"
        "Heartbeat.from_env().beat(force=True)\n"
        "m=pathlib.Path(sys.argv[1])\n"
        "if not m.exists():\n"
        "    m.write_text('1'); os.kill(os.getpid(), signal.SIGSTOP)\n"
    )
    kinds: list[str] = []
    sup = Supervisor(
        ProcessSpec(argv=[sys.executable, "-c", code, str(marker)], name="t"),
        backoff=FAST,
        budget=RestartBudget(max_restarts=2),
        heartbeat_path=tmp_path / "hb",
        heartbeat_timeout_s=2.0,
        grace_s=1.0,
        events=Relay(lambda k, _s, _t, d: kinds.append(k)),
    )
    out = sup.run()
    assert out.state == "succeeded", out
    assert "hang" in kinds
    assert sup.hangs == 1


def test_terminate_escalates_to_sigkill_after_grace(tmp_path: Path) -> None:
    log = tmp_path / "log"
    code = (
        "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    child = Child(_py(code, log_path=log))
    # wait until the SIGTERM handler is installed (the child says so) before signalling
    assert _wait_for(lambda: log.exists() and "ready" in log.read_text())
    exit_ = child.terminate(grace_s=0.3)
    assert exit_.signal == signal.SIGKILL


def test_missing_command_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="not found"):
        Child(ProcessSpec(argv=["/nonexistent/bastion-nope"], name="job"))


def test_empty_command_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="empty"):
        ProcessSpec(argv=[], name="job")


def test_driven_from_asyncio_with_tick(tmp_path: Path) -> None:
    async def main() -> str:
        sup = Supervisor(
            _py("import time; time.sleep(0.1)"),
            restart_on="always",
            backoff=FAST,
            budget=RestartBudget(max_restarts=1),
        )
        while not sup.finished:
            sup.tick()
            await asyncio.sleep(0.01)
        return sup.state

    assert asyncio.run(main()) == "failed"


def test_stop_from_another_thread() -> None:
    kinds: list[str] = []
    sup = Supervisor(
        _py("import time; time.sleep(60)"),
        grace_s=2.0,
        events=Relay(lambda k, _s, _t, d: kinds.append(k)),
    )
    sup.start()
    assert _wait_for(lambda: "started" in kinds)
    out = sup.stop(timeout=10)
    assert out.state == "stopped"
    assert out.last_exit is not None
    assert out.last_exit.signal == signal.SIGTERM


def _wait_for(cond: Any, timeout: float = 10.0) -> bool:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_warm_standby_becomes_the_restarted_child(tmp_path: Path) -> None:
    # The script beats, then crashes the first time; the restart must reuse the standby
    # interpreter (started: warm=True), with the new attempt's argv, cwd and env.
    script = tmp_path / "job.py"
    script.write_text(
        "import os, pathlib, sys\n"
        "from bastion.supervise import Heartbeat\n"
        "Heartbeat.from_env().beat(1, force=True)\n"
        "out = pathlib.Path(sys.argv[1])\n"
        "if os.environ['BASTION_ATTEMPT'] == '1':\n"
        "    import time\n"
        "    time.sleep(30)\n"
        "out.write_text(f\"{os.environ['BASTION_ATTEMPT']} {os.getcwd()} {sys.argv[2]}\")\n"
    )
    out = tmp_path / "out"
    started: list[dict[str, Any]] = []
    sup = Supervisor(
        ProcessSpec(argv=[sys.executable, str(script), str(out), "x"], cwd=tmp_path, name="t"),
        backoff=FAST,
        budget=RestartBudget(max_restarts=2),
        heartbeat_path=tmp_path / "hb",
        warm_standby=True,
        preload=["json"],
        events=Relay(lambda k, _s, _t, d: started.append({**d, "kind": k})),
    )
    sup.start()
    # wait until the standby has done its imports, then crash the first child
    assert _wait_for(lambda: any(d["kind"] == "standby_ready" for d in started))
    assert sup.child is not None
    sup.child.signal(signal.SIGKILL)
    assert sup.wait(30)
    assert sup.state == "succeeded"
    assert out.read_text() == f"2 {tmp_path} x"
    warm = [d for d in started if d["kind"] == "started"]
    assert [d["warm"] for d in warm] == [False, True]
    assert sup.warm_starts == 1


def test_a_healthy_run_resets_backoff_and_budget(tmp_path: Path) -> None:
    # Each child runs past healthy_after_s, then crashes; six crashes with a budget of 2
    # must not fail the job, and every restart waits the first backoff step again.
    counter = tmp_path / "n"
    code = (
        "import pathlib, sys, time\n"
        f"p = pathlib.Path({str(counter)!r})\n"
        "n = int(p.read_text()) + 1 if p.exists() else 1\n"
        "p.write_text(str(n))\n"
        "time.sleep(0.3)\n"
        "sys.exit(0 if n > 6 else 3)\n"
    )
    restarting: list[dict[str, Any]] = []

    def run(healthy_after_s: float | None) -> str:
        counter.unlink(missing_ok=True)
        restarting.clear()
        sup = Supervisor(
            _py(code),
            backoff=Backoff(initial=0.01, factor=10.0, cap=5.0, jitter=0.0),
            budget=RestartBudget(max_restarts=2),
            healthy_after_s=healthy_after_s,
            events=Relay(lambda k, _s, _t, d: restarting.append(d) if k == "restarting" else None),
        )
        return sup.run().state

    assert run(healthy_after_s=0.25) == "succeeded"
    assert [d["streak"] for d in restarting] == [1] * 6
    assert all(d["reset"] for d in restarting)
    assert {d["delay_s"] for d in restarting} == {0.01}
    # without the reset, the same crashes exhaust the budget and the backoff grows
    assert run(healthy_after_s=None) == "failed"
    assert [d["delay_s"] for d in restarting] == [0.01, 0.1]


def test_warm_is_true_only_when_the_standby_had_finished_its_imports(tmp_path: Path) -> None:
    # The standby preloads a module that waits for a gate file: until the test opens the
    # gate, a restart takes over a standby that is not ready, and must not say warm.
    gate = tmp_path / "gate"
    (tmp_path / "gated.py").write_text(
        "import pathlib, time\n"
        f"while not pathlib.Path({str(gate)!r}).exists():\n"
        "    time.sleep(0.01)\n"
    )
    script = tmp_path / "job.py"
    script.write_text(
        "import time\n"
        "from bastion.supervise import Heartbeat\n"
        "Heartbeat.from_env().beat(1, force=True)\n"
        "time.sleep(60)\n"
    )
    seen: list[dict[str, Any]] = []
    sup = Supervisor(
        ProcessSpec(argv=[sys.executable, str(script)], cwd=tmp_path, name="t"),
        backoff=FAST,
        budget=RestartBudget(max_restarts=5),
        heartbeat_path=tmp_path / "hb",
        warm_standby=True,
        preload=["gated"],
        extra_env={"PYTHONPATH": str(tmp_path)},
        events=Relay(lambda k, _s, _t, d: seen.append({**d, "kind": k})),
    )
    sup.start()
    try:
        assert _wait_for(lambda: any(d["kind"] == "standby_started" for d in seen))
        assert sup.child is not None
        first = sup.child.pid
        sup.child.signal(signal.SIGKILL)  # the standby is still inside `import gated`
        assert _wait_for(lambda: sup.child is not None and sup.child.pid != first)
        assert _wait_for(lambda: sum(d["kind"] == "started" for d in seen) == 2)
        gate.write_text("open")
        assert _wait_for(lambda: any(d["kind"] == "standby_ready" for d in seen), 30)
        second = sup.child.pid
        sup.child.signal(signal.SIGKILL)
        assert _wait_for(lambda: sum(d["kind"] == "started" for d in seen) == 3, 30)
        assert second != sup.child.pid
    finally:
        sup.stop(timeout=10)
    assert [d["warm"] for d in seen if d["kind"] == "started"] == [False, False, True]
    assert sup.warm_starts == 1
