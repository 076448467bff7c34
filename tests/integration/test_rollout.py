"""Rollouts end to end, with real parts: real gateways (``Gateway`` in a ``GatewayThread``,
or a ``bastion serve`` process), real replica processes serving vault snapshots, load from
the real ``openai`` client and plain HTTP, the real ``bastion`` CLI.

- a good candidate (the stable weights committed again, with a passing model-gate
  verdict) is promoted: ``@prod`` moves to it, its replicas become the stable set, no
  client request fails across the promotion;
- no traffic is insufficient evidence: the step extends, then the rollout is aborted,
  never promoted;
- a ``bastion serve`` SIGKILLed at step 2 resumes there, at that weight, and goes on;
- bad rollout requests through the CLI exit 2 with a clear message; one user stays on one
  arm; an aborted rollout can be started again;
- shadow: clients are answered by the stable set only, copies are mirrored and their
  agreement recorded, a bad shadow candidate is rolled back unseen;
- blue-green: a check phase, then an atomic switch; a candidate that slows down after the
  switch (a ``TcpFaultProxy`` latency toxic) is switched back.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from bastion import event_kinds as ek
from bastion.drill.faults import FlipBytes, Scope, TcpFaultProxy, Toxic
from tests.helpers import run_bastion
from tests.rollout_world import (
    CANDIDATE_MARK,
    SERVICE,
    LibraryGateway,
    Load,
    RolloutWorld,
    bastion_serve,
    failing_checks,
    get_rollout,
    running_until,
    wait_for,
)

QUICK: dict[str, Any] = {
    "steps": [20, 50, 100],
    "interval_s": 0.5,
    "looks_per_step": 2,
    "min_samples": 30,
    "max_extensions": 12,
    "alpha": 0.05,
}


def _of(world: RolloutWorld, kind: str, rollout_id: str) -> list[Any]:
    return [e for e in world.events(kind) if e.data.get("rollout") == rollout_id]


def test_a_good_candidate_is_promoted_and_no_request_fails(tmp_path: Path, seed: int) -> None:
    # Wide latency tolerances: this model answers in about 1 ms, and on this shared
    # 2-core machine two replica processes of the same model differ by more than the
    # defaults (10% median, 25% p99) for seconds at a time: an identical candidate was
    # rolled back on its p99 (15 ms vs 7.45 ms, seed 4019445611; reported).
    world = RolloutWorld(tmp_path, {**QUICK, "latency_tolerance": 1.0, "tail_tolerance": 3.0})
    candidate = world.commit_good()
    with LibraryGateway(world) as gw, Load(gw.url, world.inputs, seed) as load:
        load.wait(30)
        rollout_id = gw.start(candidate)
        final = gw.wait_ended(90)
        assert final["status"] == "promoted", (final["status"], final["reason"])
        # the candidate's replica is the stable set now; the old one drains, then stops
        wait_for(
            lambda: (
                (arms := gw.arms())
                and all(CANDIDATE_MARK in n and a == "stable" for n, a in arms.items())
            ),
            "the candidate's replicas alone, as the stable set",
            30,
        )
        promoted_at = time.monotonic()
        load.wait(60)
        load.stop()
    after = load.sent_after(promoted_at)
    assert after
    assert all(CANDIDATE_MARK in a.backend for a in after)
    assert not load.failures, load.failures[:5]
    assert load.vias() == {"openai", "http"}
    assert world.prod_version() == 2
    promoted = _of(world, ek.ROLLOUT_PROMOTED, rollout_id)
    assert len(promoted) == 1
    assert promoted[0].data["candidate"] == candidate
    steps = [e.data["weight"] for e in _of(world, ek.ROLLOUT_STEP, rollout_id)]
    assert steps == [20.0, 50.0], steps
    verdicts = _of(world, ek.ROLLOUT_VERDICT, rollout_id)
    assert verdicts
    assert all(v.data["outcome"] != "fail" for v in verdicts)
    print(
        f"promoted {candidate} after {len(verdicts)} analyses; {load.count} client requests "
        f"({len(load.from_candidate())} answered by the candidate), 0 failed"
    )


def test_no_traffic_is_insufficient_evidence_and_never_promotes(tmp_path: Path, seed: int) -> None:
    world = RolloutWorld(tmp_path, {**QUICK, "interval_s": 0.3, "max_extensions": 3})
    candidate = world.commit_good()  # it would pass the gate: only evidence is missing
    with LibraryGateway(world) as gw:
        rollout_id = gw.start(candidate)
        final = gw.wait_ended(60)
    assert final["status"] == "aborted", final
    assert "insufficient evidence" in final["reason"]
    assert "never promoted" in final["reason"]
    verdicts = _of(world, ek.ROLLOUT_VERDICT, rollout_id)
    assert [v.data["outcome"] for v in verdicts] == ["insufficient"] * 4
    # every check lacked data, none read missing data as a pass
    for v in verdicts:
        measured = [c for c in v.data["checks"] if c["measured"]]
        assert measured
        assert all(c["outcome"] == "insufficient" for c in measured)
    assert len(_of(world, ek.ROLLOUT_ABORTED, rollout_id)) == 1
    assert not _of(world, ek.ROLLOUT_PROMOTED, rollout_id)
    assert world.prod_version() == 1
    print(f"seed {seed}: aborted after {len(verdicts)} insufficient looks: {final['reason'][:160]}")


def test_a_gateway_killed_mid_rollout_resumes_at_its_step(tmp_path: Path, seed: int) -> None:
    # steps of 4 looks of 0.5 s: the kill lands inside step 2 (50%). A wide location
    # tolerance: this model answers in about 1 ms, where the default 10% is 0.1 ms, and
    # the candidate's path measured ~0.3 ms slower at the client (reported).
    world = RolloutWorld(tmp_path, {**QUICK, "looks_per_step": 4, "latency_tolerance": 1.0})
    candidate = world.commit_good()
    url = f"http://127.0.0.1:{world.port}"
    with bastion_serve(world) as proc, Load(url, world.inputs, seed) as load:
        load.wait(30)
        started = run_bastion("rollout", "start", SERVICE, candidate, "--json", cwd=world.dir)
        assert started.returncode == 0, started.stdout + started.stderr
        rollout_id = json.loads(started.stdout)["rollout"]["id"]
        running_until(url, lambda r: r["step"] == 1, "step 2", 60)
        # the step's event is written off the event loop a moment after the record: the
        # kill comes once it is in the log (what is tested is the resume, from the record)
        wait_for(lambda: len(_of(world, ek.ROLLOUT_STEP, rollout_id)) == 2, "step 2's event", 30)
        proc.kill()  # SIGKILL: no cleanup, no goodbye
        proc.wait()
        load.stop()
    before = list(load.answers)
    assert len(_of(world, ek.ROLLOUT_STEP, rollout_id)) == 2
    with bastion_serve(world), Load(url, world.inputs, seed + 1) as load:
        now = get_rollout(url)
        assert (now["id"], now["status"], now["step"], now["weight"]) == (
            rollout_id,
            "running",
            1,
            50.0,
        ), now
        resumed = _of(world, ek.ROLLOUT_RESUMED, rollout_id)
        assert [(e.data["step"], e.data["weight"]) for e in resumed] == [(1, 50.0)]
        final = wait_for(
            lambda: (r := get_rollout(url))["status"] not in ("starting", "running") and r,
            "the resumed rollout to end",
            90,
        )
        load.wait(30)
        load.stop()
    # it went on: judged again at step 2, then ended by the analysis. Promotion is the
    # expected end; on this shared 2-core machine a fresh pair of replicas sometimes
    # differs in latency for a few seconds after a restart, and the analysis then rolls
    # the candidate back, which is also the rollout going on from where it was.
    after = [v for v in _of(world, ek.ROLLOUT_VERDICT, rollout_id) if v.id > resumed[0].id]
    assert after
    assert after[0].data["step"] == 1
    assert after[0].data["weight"] == 50.0
    assert final["status"] in ("promoted", "rolled_back"), (final["status"], final["reason"])
    assert world.prod_version() == (2 if final["status"] == "promoted" else 1)
    assert not load.failures, load.failures[:5]
    print(
        f"seed {seed}: killed at step 2 after {len(before)} answers, resumed at step 2 "
        f"(50%), {len(after)} analyses after the restart, then {final['status']}: "
        f"{final['reason'][:160]}; {load.count} requests after the restart, 0 failed"
    )


def test_bad_rollout_requests_exit_2_and_one_user_stays_on_one_arm(
    tmp_path: Path, seed: int
) -> None:
    # a long interval: the first step holds while the test asks its questions
    world = RolloutWorld(tmp_path, {**QUICK, "interval_s": 60.0})
    good = world.commit_good()
    damaged = world.commit_other()  # chunks of its own, so damaging them spares @prod
    snap = world.vault.snapshot(damaged)
    chunk = snap.files["model.safetensors"].chunks[0].id
    manifest = world.manifest()
    assert manifest.vault is not None
    objects = [Path(r) / "objects" / chunk[:2] / chunk for r in manifest.vault.replicas]
    FlipBytes(objects, scope=Scope.of(paths=objects), count=4, seed=seed, max_files=2).inject()
    url = f"http://127.0.0.1:{world.port}"

    def rollout(*args: str) -> tuple[int, str]:
        done = run_bastion("rollout", *args, cwd=world.dir)
        return done.returncode, done.stdout + done.stderr

    with bastion_serve(world):
        code, out = rollout("start", "nosuch", good)
        assert code == 2, out
        assert "service 'nosuch' is not in" in out
        code, out = rollout("start", SERVICE, damaged)
        assert code == 2, out
        assert f"rollout candidate {damaged} does not verify" in out
        code, out = rollout("start", SERVICE, good)
        assert code == 0, out
        code, out = rollout("start", SERVICE, good)
        assert code == 2, out
        assert "is rolling out model/digits@2 already" in out
        assert "bastion rollout abort digits" in out
        running_until(url, lambda r: r["status"] == "running", "the candidate's replica")
        # sticky: each user's requests all go to one arm, by openai and by plain HTTP
        with Load(url, world.inputs, seed, users=40) as load:
            load.wait(400)
        seen: dict[str, set[bool]] = defaultdict(set)
        for a in load.answers:
            seen[a.user].add(CANDIDATE_MARK in a.backend)
        assert not load.failures, load.failures[:5]
        assert len(seen) == 40
        assert all(len(arms) == 1 for arms in seen.values()), dict(seen)
        on_candidate = sum(1 for arms in seen.values() if True in arms)
        assert 0 < on_candidate < 40, on_candidate
        code, out = rollout("abort", SERVICE)
        assert code == 0, out
        assert "aborted" in out
    assert world.prod_version() == 1
    # steps that do not end at 100 are refused where they are written
    world.write_manifest({**QUICK, "steps": [20, 50]})
    for argv in (("check", "-f", "bastion.yaml"), ("serve", "-f", "bastion.yaml")):
        done = run_bastion(*argv, cwd=world.dir, timeout=60)
        out = done.stdout + done.stderr
        assert done.returncode == 2, out
        assert "bastion.yaml:" in out
        assert "services.digits.rollout.steps" in out
        assert "steps must end at 100" in out
    print(f"seed {seed}: {on_candidate} of 40 users on the candidate at 20%, each on one arm")


def test_shadow_mirrors_without_a_client_seeing_the_candidate(tmp_path: Path, seed: int) -> None:
    world = RolloutWorld(tmp_path, {**QUICK, "looks_per_step": 4})
    good = world.commit_good()
    bad = world.commit_swapped(seed)
    with LibraryGateway(world) as gw, Load(gw.url, world.inputs, seed) as load:
        load.wait(30)
        first = gw.start(good, strategy="shadow")
        shown = gw.wait_running(lambda r: r["mirrored"] >= 30, "mirrored copies")
        assert shown["strategy"] == "shadow"
        assert shown["agreement"] == 1.0, shown  # the same weights answer the same
        gw.thread.call(gw.controller.abort())
        second = gw.start(bad, strategy="shadow")
        final = gw.wait_ended(60)
        load.wait(30)
        load.stop()
    assert final["status"] == "rolled_back", (final["status"], final["reason"])
    assert final["agreement"] is not None
    assert final["agreement"] < 1.0
    events = _of(world, ek.ROLLOUT_ROLLED_BACK, second)
    assert len(events) == 1
    assert "predictions" in failing_checks(events[0].data)
    assert _of(world, ek.ROLLOUT_ABORTED, first)
    assert not load.from_candidate(), load.from_candidate()[:3]
    assert not load.failures, load.failures[:5]
    assert world.prod_version() == 1
    print(
        f"seed {seed}: good shadow agreed {shown['agreement']} over {shown['mirrored']} "
        f"copies; bad shadow agreed {final['agreement']} and was rolled back; "
        f"{load.count} client requests, none answered by a candidate, 0 failed"
    )


def test_blue_green_switches_at_once_and_back_when_the_candidate_slows(
    tmp_path: Path, seed: int
) -> None:
    # Wide latency tolerances: in the check phase the candidate's latencies are those of
    # mirrored copies, sent after the client's answer on a busy event loop, and on this
    # shared machine their median ran 2x and their p99 4x the primaries' (reported);
    # +50 ms on a few-ms median is still far beyond that.
    # The same for their spread, and the tail at its cap: mirrored copies delayed behind
    # the loop once made the spread 3x and the p99 19x the primaries' (149 ms vs 8 ms) and
    # rolled the check phase back. After the switch, the +50 ms is caught by the location
    # check.
    plan = {
        **QUICK,
        "looks_per_step": 4,
        "latency_tolerance": 2.0,
        "tail_tolerance": 10.0,
        "spread_tolerance": 9.0,
    }
    world = RolloutWorld(tmp_path, plan)
    candidate = world.commit_good()
    proxies: dict[str, TcpFaultProxy] = {}

    def through_proxy(name: str, port: int) -> str:
        proxy = TcpFaultProxy(
            upstream_port=port, scope=Scope.of(ports=[port]), name=name, seed=seed
        ).start()
        proxies["green" if CANDIDATE_MARK in name else "blue"] = proxy
        return f"http://127.0.0.1:{proxy.port}"

    try:
        # both sets behind a fault proxy, so the proxy's own cost is on both sides
        with (
            LibraryGateway(world, stable_url=through_proxy, candidate_url=through_proxy) as gw,
            # light load: the proxies, the gateway and the clients share this process's GIL,
            # and its scheduling noise is what the check phase would otherwise measure
            Load(gw.url, world.inputs, seed, http_threads=1) as load,
        ):
            load.wait(30)
            rollout_id = gw.start(candidate, strategy="blue-green")

            def checking() -> float | None:
                t = time.monotonic()  # requests sent before it were sent before the switch
                r = gw.status()
                assert r["status"] in ("starting", "running"), r["reason"]
                return t if r["weight"] == 0.0 and r["mirrored"] > 0 else None

            checked_at = wait_for(checking, "the check phase's mirrored copies", 60)
            gw.wait_running(lambda r: r["weight"] == 100.0, "the switch")
            switched_at = time.monotonic()
            # the candidate slows down once it has all the traffic
            proxies["green"].add_toxic(Toxic("latency", attributes={"latency_ms": 50}))
            final = gw.wait_ended(60)
            back_at = time.monotonic()
            load.wait(50)
            load.stop()
    finally:
        for proxy in proxies.values():
            proxy.stop()
    assert final["status"] == "rolled_back", (final["status"], final["reason"])
    phases = [e.data["phase"] for e in _of(world, ek.ROLLOUT_STEP, rollout_id)]
    assert phases == ["check", "switched"], phases
    events = _of(world, ek.ROLLOUT_ROLLED_BACK, rollout_id)
    checks = failing_checks(events[0].data)
    assert checks, events[0].data
    assert checks <= {"latency.location", "latency.spread", "latency.tail"}, checks
    before = load.sent_before(checked_at)
    during = [a for a in load.answers if switched_at < a.started < back_at]
    after = load.sent_after(back_at)
    # the check phase is mirrored: clients saw the blue set only; then green took it all
    assert not [a for a in before if CANDIDATE_MARK in a.backend]
    assert [a for a in during if CANDIDATE_MARK in a.backend]
    assert after
    assert not [a for a in after if CANDIDATE_MARK in a.backend]
    assert not load.failures, load.failures[:5]
    assert world.prod_version() == 1
    print(
        f"seed {seed}: switched to green, slowed by 50 ms, switched back; "
        f"{len(load.from_candidate())} of {load.count} requests answered by green, 0 failed"
    )


@pytest.fixture(autouse=True)
def _timing(request: pytest.FixtureRequest) -> Any:
    start = time.monotonic()
    yield
    print(f"[{request.node.name}] {time.monotonic() - start:.1f} s")
