"""Playbooks' pure parts and the ledger's decisions, with an injected clock: conditions,
templates, the plan and its keys, the token bucket per target, the blast-radius cap and
approvals (the ``log`` fixture: real SQLite in a temporary directory, and a real
PostgreSQL server, the ledger then in the log's database)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion.errors import NotFoundError, UsageError
from bastion.manifest import loads
from bastion.playbooks import Claim, Ledger, action_key, plan
from bastion.playbooks._conditions import TemplateError, matches, render
from tests.pg_server import LogTarget

EVENT: dict[str, Any] = {
    "id": 7,
    "ts": "2026-12-02T10:15:00+00:00",
    "kind": "train.exited",
    "subject": "train-digits",
    "segment": "staging",
    "data": {"code": 137, "oom": True, "slot": "a", "nested": {"x": "gpu-3"}},
}


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ({}, True),
        ({"subject": "train-digits"}, True),
        ({"subject": "other"}, False),
        ({"segment": ["prod", "staging"]}, True),
        ({"data.code": {"ge": 137}}, True),
        ({"data.code": {"lt": 137}}, False),
        ({"data.oom": True}, True),
        ({"data.oom": False}, False),
        ({"data.nested.x": {"matches": "^gpu-[0-9]$"}}, True),
        ({"data.missing": {"exists": False}}, True),
        ({"data.missing": "x"}, False),
        ({"data.missing": {"ne": "x"}}, True),
        ({"data.slot": {"in": ["b", "c"]}}, False),
        ({"data.nested.x": {"contains": "gpu"}}, True),
        ({"data.oom": {"gt": 0}}, False),  # a boolean is not a number
    ],
)
def test_conditions(when: dict[str, Any], expected: bool) -> None:
    assert matches("train.exited", when, EVENT) is expected


def test_kinds_match_exactly_or_by_glob() -> None:
    assert matches("train.*", {}, EVENT)
    assert not matches("train.exit", {}, EVENT)


def test_templates_fill_from_the_event_and_refuse_what_it_lacks() -> None:
    assert render("{subject}/{day}/{data.nested.x}", EVENT) == "train-digits/2026-12-02/gpu-3"
    with pytest.raises(TemplateError, match=r"no data\.nope"):
        render("{data.nope}", EVENT)


MANIFEST = """
version: 1
system: t
segments: [prod, staging]
playbooks:
  rules:
    oom:
      on: train.exited
      when: {data.oom: true}
      incident: "{subject}/{day}"
      actions:
        - {do: run, command: [sh, -c, "echo {data.slot}"]}
        - {do: quarantine, segment: "{segment}"}
    other:
      on: vault.put
      actions: [{do: run, command: ["true"]}]
"""


def test_the_plan_is_a_pure_function_of_manifest_and_event() -> None:
    playbooks = loads(MANIFEST).playbooks
    first, again = plan(playbooks, EVENT), plan(playbooks, dict(EVENT, id=99))
    (rule,) = first.rules
    assert rule.incident == "train-digits/2026-12-02"
    assert [a.target for a in rule.actions] == ["command:sh", "segment:staging"]
    assert rule.actions[0].params == {"command": ["sh", "-c", "echo a"]}
    # a replayed trigger of the same incident (another id) makes the same keys
    assert [a.key for a in again.rules[0].actions] == [a.key for a in rule.actions]
    assert rule.actions[1].key == action_key(
        "oom", rule.incident, 1, "quarantine", {"segment": "staging"}
    )
    # its own events never trigger the rule that wrote them
    own = {"kind": "playbook.escalated", "data": {"rule": "oom"}}
    assert plan(playbooks, own).rules == ()


def _claim(ledger: Ledger, key: str, target: str, **limits: Any) -> Claim:
    settings = {"burst": 2, "per_minute": 1.0, "blast_radius": 3, "blast_window_s": 3600.0}
    settings.update(limits)
    claim, _ = ledger.claim_action(
        key=key, rule="r", incident="i", index=0, action="run", target=target, params={},
        **settings,
    )  # fmt: skip
    return claim


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_runs_once_and_a_target_is_rate_limited_by_its_bucket(log: LogTarget) -> None:
    clock = Clock()
    with Ledger.in_state_dir(log.state_dir, clock=clock) as ledger:
        assert _claim(ledger, "k1", "service:a") is Claim.RUN
        assert _claim(ledger, "k1", "service:a") is Claim.DUPLICATE
        assert _claim(ledger, "k2", "service:a") is Claim.RUN
        assert _claim(ledger, "k3", "service:a") is Claim.RATE_LIMITED  # burst 2 spent
        assert _claim(ledger, "k4", "service:b") is Claim.RUN  # another target's bucket
        clock.now += 61  # one token back after a minute
        assert _claim(ledger, "k3", "service:a") is Claim.RUN
        assert _claim(ledger, "k5", "service:a") is Claim.RATE_LIMITED
        assert [r["key"] for r in ledger.actions()] == ["k1", "k2", "k4", "k3"]


def test_the_blast_radius_caps_distinct_targets_in_the_window(log: LogTarget) -> None:
    clock = Clock()
    with Ledger.in_state_dir(log.state_dir, clock=clock) as ledger:
        for n, target in enumerate(["job:a", "job:b", "job:c"]):
            assert _claim(ledger, f"k{n}", target) is Claim.RUN
        assert _claim(ledger, "k9", "job:d") is Claim.BLAST_RADIUS
        assert _claim(ledger, "k8", "job:a") is Claim.RUN  # a target already counted
        clock.now += 3601
        assert _claim(ledger, "k9", "job:d") is Claim.RUN  # the window has moved on


def test_approvals_time_out_to_denied_and_cannot_be_changed(log: LogTarget) -> None:
    clock = Clock()
    with Ledger.in_state_dir(log.state_dir, clock=clock) as ledger:
        common: dict[str, Any] = {
            "rule": "r",
            "incident": "i",
            "action": "run",
            "target": "t",
            "params": {},
        }
        ledger.request_approval(id="a1", key="k1", timeout_s=10, **common)
        ledger.request_approval(id="a2", key="k2", timeout_s=10, **common)
        assert ledger.decide("a1", approve=True, reason="ok").state == "approved"
        clock.now += 11
        with pytest.raises(UsageError, match="denied"):
            ledger.decide("a2", approve=True, reason="late")
        assert ledger.approval("a2").reason == "timeout"
        assert ledger.wait_decision("a2").state == "denied"
        with pytest.raises(UsageError, match="approved"):
            ledger.decide("a1", approve=False, reason="changed my mind")
        with pytest.raises(NotFoundError, match="no approval 'zz'"):
            ledger.decide("zz", approve=True, reason="")


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "playbooks" / "bastion.yaml"


@pytest.mark.parametrize(
    ("event", "rule", "actions"),
    [
        (
            {"kind": "vault.guard.ransomware", "subject": "data", "segment": "staging",
             "data": {"name": "dataset/raw", "dir": str(EXAMPLE.parent / "data"), "frozen": True}},
            "ransomware",
            ["restore", "quarantine", "notify"],
        ),
        (
            {"kind": "slo.burn.page", "subject": "digits-availability", "segment": "prod",
             "data": {"service": "digits"}},
            "slo-page",
            ["rollback", "failover"],
        ),
        (
            {"kind": "train.exited", "subject": "train-digits",
             "data": {"oom": True, "slot": "gpu-a"}},
            "train-oom",
            ["restart"],
        ),
    ],
)  # fmt: skip
def test_the_shipped_examples_plan_what_the_docs_say(
    event: dict[str, Any], rule: str, actions: list[str]
) -> None:
    from bastion.manifest import load

    (planned,) = plan(load(EXAMPLE).playbooks, {"id": 1, **event}).rules
    assert planned.rule == rule
    assert [a.do for a in planned.actions] == actions
    assert planned.error is None


def test_the_docs_dry_run_output_is_the_examples_plan() -> None:
    from bastion.manifest import load

    doc = (EXAMPLE.parents[2] / "docs" / "playbooks.md").read_text()
    oom = {
        "kind": "train.exited",
        "subject": "train-digits",
        "data": {"oom": True, "slot": "gpu-a"},
    }
    (planned,) = plan(load(EXAMPLE).playbooks, oom).rules
    assert f"key {planned.actions[0].key}" in doc


def test_playbooks_exports() -> None:
    import bastion.playbooks

    assert sorted(bastion.playbooks.__all__) == sorted([
        "SIGNATURE_HEADER", "ActionFailed", "Approval", "Claim", "Ledger", "Plan",
        "PlannedAction", "PlannedRule", "Runner", "action_key", "approve", "deny", "plan",
        "read_event", "sign",
    ])  # fmt: skip
