"""The control twin (issue 15, part 4; Netflix ChAP): an experiment runs beside a control
given the same load; their KPIs are compared side by side, and the run is aborted the
moment they diverge.

Two real gateways over two real upstreams stand in for the experiment's and the
control's twins. A fault that makes the experiment's upstream fail aborts the drill
during its method, naming the divergence; a harmless fault runs to the end, with both
twins' KPIs in the journal and no divergence.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from bastion.drill.faults.http import FaultyUpstream
from bastion.drill.kpi import KpiBounds, KpiComparison, Kpis, diverged
from bastion.drill.runner import run_experiment
from bastion.errors import UsageError
from bastion.manifest import GatewayPolicy
from bastion.serve import Gateway, GatewayThread, UpstreamSpec

# the experiment's actions reach the upstreams through this module (Chaos Toolkit
# imports it by name)
UPSTREAMS: dict[str, FaultyUpstream] = {}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
BOUNDS = KpiBounds(window_s=0.4, windows=2, min_requests=4)


def break_experiment() -> str:
    UPSTREAMS["experiment"].set_fault(status=500)
    return "experiment upstream answers 500"


def harmless() -> str:
    UPSTREAMS["experiment"].set_fault(first_byte_delay_s=0.002)  # 2 ms: no harm done
    return "nothing changed"


def heal() -> str:
    UPSTREAMS["experiment"].clear_fault()
    return "healed"


@pytest.fixture
def twins(seed: int) -> Iterator[dict[str, str]]:
    """Two gateways, each over its own upstream: host:port by role."""
    out: dict[str, str] = {}
    with ExitStack() as stack:
        for i, role in enumerate(("experiment", "control")):
            up = FaultyUpstream(name=f"{role}-up", seed=seed + i).start()
            stack.callback(up.stop)
            UPSTREAMS[role] = up
            gw = Gateway(role, GatewayPolicy(timeout_ms=3000, max_attempts=1), probe_interval_s=30)
            gw.add_upstream(UpstreamSpec(name="b0", url=up.url))
            thread = stack.enter_context(GatewayThread(gw))
            out[role] = thread.url.removeprefix("http://")
        yield out
    UPSTREAMS.clear()


def _experiment(tmp_path: Path, action: str, pause_s: float) -> dict[str, Any]:
    here = __name__
    return {
        "title": f"control twin: {action}",
        "description": "a fault on the experiment twin, the control twin beside it",
        "method": [
            {
                "type": "action",
                "name": action,
                "provider": {"type": "python", "module": here, "func": action},
                "pauses": {"after": pause_s},
            },
            {
                "type": "action",
                "name": "the-method-ended",
                "provider": {"type": "python", "module": here, "func": "heal"},
            },
        ],
        "rollbacks": [
            {
                "type": "action",
                "name": "heal",
                "provider": {"type": "python", "module": here, "func": "heal"},
            }
        ],
        "extensions": [{"name": "bastion", "scope": {"paths": [str(tmp_path)]}}],
    }


def test_a_fault_that_hurts_the_kpis_aborts_early_naming_the_divergence(
    tmp_path: Path, twins: dict[str, str], seed: int
) -> None:
    compare = KpiComparison(
        twins["experiment"],
        twins["control"],
        rate=40,
        path="/v1/chat/completions",
        body=CHAT,
        seed=seed,
        bounds=BOUNDS,
    )
    result = run_experiment(
        _experiment(tmp_path, "break_experiment", 30.0),
        base=tmp_path,
        state_dir=tmp_path / "state",
        seed=seed,
        control_twin=compare,
    )
    bastion = result.journal["bastion"]
    kpis = bastion["kpis"]
    assert kpis["divergence"] is not None
    assert "error rate" in kpis["divergence"]
    assert bastion["aborted"] is not None
    assert "diverged from the control" in bastion["aborted"]
    assert result.exit_code == 1
    # stopped during the method: the step after the 30 s pause never ran
    ran = [r["activity"]["name"] for r in result.journal.get("run") or []]
    assert "the-method-ended" not in ran
    assert kpis["experiment"]["error_rate"] > kpis["control"]["error_rate"]
    assert kpis["control"]["failed"] == 0
    assert any(w["diverged"] for w in kpis["windows"])


def test_a_harmless_fault_runs_to_the_end_with_both_kpis_and_no_divergence(
    tmp_path: Path, twins: dict[str, str], seed: int
) -> None:
    compare = KpiComparison(
        twins["experiment"],
        twins["control"],
        rate=40,
        path="/v1/chat/completions",
        body=CHAT,
        seed=seed,
        bounds=BOUNDS,
    )
    result = run_experiment(
        _experiment(tmp_path, "harmless", 2.0),
        base=tmp_path,
        state_dir=tmp_path / "state",
        seed=seed,
        control_twin=compare,
    )
    bastion = result.journal["bastion"]
    kpis = bastion["kpis"]
    assert kpis["divergence"] is None, kpis["windows"]
    assert bastion["aborted"] is None
    assert result.status == "completed", result.problems
    ran = [r["activity"]["name"] for r in result.journal.get("run") or []]
    assert "the-method-ended" in ran
    for side in ("experiment", "control"):
        assert kpis[side]["requests"] > 0
        assert kpis[side]["failed"] == 0
        assert kpis[side]["p99_ms"] is not None
        assert kpis[side]["goodput_rps"] > 0


def test_divergence_is_judged_only_on_windows_big_enough() -> None:
    bounds = KpiBounds(min_requests=10)
    fine = Kpis(requests=20, failed=0, error_rate=0.0, p99_ms=10.0, goodput_rps=20.0)
    bad = Kpis(requests=20, failed=10, error_rate=0.5, p99_ms=10.0, goodput_rps=10.0)
    small = Kpis(requests=3, failed=3, error_rate=1.0, p99_ms=None, goodput_rps=0.0)
    assert diverged(fine, fine, bounds) is None
    assert "error rate 50.0%" in str(diverged(bad, fine, bounds))
    assert diverged(small, fine, bounds) is None
    slow = Kpis(requests=20, failed=0, error_rate=0.0, p99_ms=400.0, goodput_rps=20.0)
    assert "latency p99" in str(diverged(slow, fine, bounds))
    with pytest.raises(UsageError, match="control twin's gateway is the experiment's"):
        KpiComparison("127.0.0.1:1", "127.0.0.1:1")
    json.dumps(bounds.__dict__)  # the bounds go into the journal as they are


def test_control_without_twin_is_exit_2_saying_what_to_add(tmp_path: Path) -> None:
    from tests.helpers import run_bastion

    experiment = tmp_path / "e.json"
    revert = {"type": "python", "module": "bastion.drill.actions", "func": "revert"}
    doc = {
        "title": "t",
        "description": "d",
        "method": [{"type": "action", "name": "r", "provider": revert}],
    }
    experiment.write_text(json.dumps(doc))
    done = run_bastion(
        "drill", "run", str(experiment), "--control", "ctl", "--no-live", cwd=tmp_path
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--control needs --twin" in done.stderr
