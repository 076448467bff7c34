"""The rollout's split, pure: sticky buckets spread evenly, each strategy sends each
request where docs/rollout.md says, the arms' recorders keep what the analysis needs
(bounded), shadow agreement is counted exactly and within a tolerance, and the durable
record refuses a damaged file and steps that do not end at 100."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.errors import UsageError
from bastion.manifest import RolloutPolicy
from bastion.rollout import ArmRecorder, TrafficSplit, bucket, prediction_of
from bastion.rollout._state import RolloutRecord, read_record, record_path, write_record
from bastion.serve.metrics import BackendMetrics
from bastion.serve.pool import Pool, Upstream, UpstreamSpec


def _split(strategy: str, weight: float) -> TrafficSplit:
    pool = Pool("svc")
    split = TrafficSplit(pool, rollout_id="r1", strategy=strategy, sticky_header="x-bastion-user")
    split.weight = weight
    return split


def test_buckets_are_sticky_per_rollout_and_spread_evenly(seed: int) -> None:
    salt, other = b"rollout-a", b"rollout-b"
    keys = [f"user-{seed}-{i}" for i in range(20_000)]
    first = [bucket(salt, k) for k in keys]
    assert first == [bucket(salt, k) for k in keys]  # one user, one bucket, every time
    assert first != [bucket(other, k) for k in keys]  # a new rollout reshuffles
    tenths = Counter(b * 10 // 10_000 for b in first)
    for n in tenths.values():  # each tenth of the buckets holds about a tenth of the users
        assert 1_700 < n < 2_300, tenths


@pytest.mark.parametrize("weight", [5.0, 25.0, 50.0, 80.0])
def test_canary_sends_its_share_and_measures_a_baseline_of_the_same_share(
    weight: float, seed: int
) -> None:
    split = _split("canary", weight)
    labels = Counter()
    for i in range(20_000):
        a = split.assign({"x-bastion-user": f"{seed}-{i}"}, "10.0.0.1")
        labels[a.label] += 1
        if a.label == "candidate":
            assert a.arms == ("candidate", "stable")  # a failed attempt falls back
            assert a.arm == "candidate"
        else:
            assert a.arms == ("stable",)
        assert not a.mirror
    share = min(weight, 100 - weight) / 100
    assert abs(labels["candidate"] / 20_000 - weight / 100) < 0.02
    assert abs(labels["baseline"] / 20_000 - share) < 0.02


def test_the_client_address_keys_a_request_without_the_header() -> None:
    split = _split("canary", 50.0)
    seen = {split.assign({}, "192.0.2.7").label for _ in range(50)}
    assert len(seen) == 1


def test_shadow_answers_from_stable_and_mirrors_its_share() -> None:
    split = _split("shadow", 30.0)
    got = [split.assign({"x-bastion-user": str(i)}, None) for i in range(10_000)]
    assert all(a.arms == ("stable",) for a in got)
    mirrored = sum(a.mirror for a in got)
    assert all(a.label == "baseline" for a in got if a.mirror)
    assert abs(mirrored / 10_000 - 0.30) < 0.02


def test_blue_green_checks_on_copies_then_switches_everything() -> None:
    split = _split("blue-green", 100.0)
    before = split.assign({}, "a")
    assert (before.arms, before.label, before.mirror) == (("stable",), "baseline", True)
    split.phase = "switched"
    after = split.assign({}, "a")
    assert (after.arms, after.label, after.mirror) == (("candidate", "stable"), "candidate", True)


def test_mirror_copies_go_to_the_other_arm_and_agreement_is_counted() -> None:
    split = _split("shadow", 100.0)
    pool = split.pool
    for name, arm in (("s", "stable"), ("c", "candidate")):
        pool.add(
            Upstream(UpstreamSpec(name=name, url="http://x", arm=arm), BackendMetrics(), pool.clock)
        )
    target = split.mirror_to()
    assert target is not None
    assert target.name == "c"

    def answer(value: object) -> bytes:
        return json.dumps({"predictions": [value]}).encode()

    split.mirrored(True, 0.01, answer(3), answer(3))
    split.mirrored(True, 0.01, answer(0.1 + 0.2), answer(0.3))  # equal within the tolerance
    split.mirrored(True, 0.01, answer(4), answer(3))
    split.mirrored(False, 0.5, None, answer(3))
    assert (split.mirrored_n, split.agreed_exact, split.agreed_close) == (4, 1, 2)
    assert split.agreement() == 0.5
    assert split.candidate.requests == 4
    assert split.candidate.errors == 1
    split.phase = "switched"
    split.strategy = "blue-green"
    target = split.mirror_to()
    assert target is not None
    assert target.name == "s"  # after the switch the copies keep the old set warm


def test_prediction_of_reads_each_answer_shape() -> None:
    assert prediction_of(b'{"predictions": [7, 1]}') == "7"
    assert prediction_of(b'{"choices": [{"message": {"content": "hello"}}]}') == "hello"
    assert prediction_of(b'{"choices": [{"text": "4.0"}]}') == "4.0"
    assert prediction_of(b'{"data": [{"embedding": [0.1]}]}') is None
    assert prediction_of(b"not json") is None
    assert prediction_of(b"[1, 2]") is None
    assert prediction_of(None) is None


@given(st.binary(max_size=200))
def test_prediction_of_never_raises(body: bytes) -> None:
    got = prediction_of(body)
    assert got is None or isinstance(got, str)


def test_a_recorder_is_bounded_and_uniform(seed: int) -> None:
    rec = ArmRecorder(seed=seed)
    for i in range(20_000):
        rec.record(True, i / 20_000, json.dumps({"predictions": [i % 100]}).encode())
    rec.record(False, 1.0, None)
    sample = rec.sample()
    assert sample.requests == 20_001
    assert sample.errors == 1
    assert len(sample.latencies_s) == 4096  # a reservoir, not every request
    mean = sum(sample.latencies_s) / len(sample.latencies_s)
    assert 0.45 < mean < 0.55  # uniform over the whole step, not its first requests
    assert len(sample.predictions) == 65  # 64 labels, then one for the rest
    assert sum(sample.predictions.values()) == 20_000


def _record(**changes: object) -> RolloutRecord:
    base = {
        "id": "20261202-000000-abcdef",
        "service": "svc",
        "backend": "local",
        "candidate": "model/m@2",
        "candidate_id": "ab" * 32,
        "stable": "model/m@1",
        "strategy": "canary",
        "steps": [10.0, 50.0, 100.0],
        "started_at": 1.0,
        "updated_at": 1.0,
    }
    return RolloutRecord.model_validate({**base, **changes})


def test_the_record_round_trips_privately_and_a_damaged_one_is_named(tmp_path: Path) -> None:
    record = _record(status="running", step=1)
    write_record(tmp_path, record)
    path = record_path(tmp_path, "svc")
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_record(tmp_path, "svc") == record
    assert record.weight == 50.0
    assert _record(status="rolled_back").weight == 0.0
    assert read_record(tmp_path, "other") is None
    path.write_bytes(b'{"id": "x"')
    with pytest.raises(UsageError, match=r"svc\.json: not a rollout record.*move it away"):
        read_record(tmp_path, "svc")


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([10, 50], "must end at 100"),
        ([50, 10, 100], "must rise"),
        ([0, 100], r"in \(0, 100\]"),
        ([10, 150], r"in \(0, 100\]"),
    ],
)
def test_steps_that_do_not_rise_to_100_are_refused(steps: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RolloutPolicy(steps=steps)


def test_the_warmup_forgets_cold_latencies_and_keeps_the_evidence() -> None:
    rec = ArmRecorder(seed=1)
    body = json.dumps({"predictions": [3]}).encode()
    for i in range(20):
        rec.record(ok=i % 10 != 0, elapsed_s=0.5, body=body)  # cold: slow
    rec.golden(4, 5)
    rec.forget_latencies()
    rec.record(ok=True, elapsed_s=0.001, body=body)  # warm
    sample = rec.sample()
    assert list(sample.latencies_s) == [0.001]
    assert (sample.requests, sample.errors) == (21, 2)
    assert sum(sample.predictions.values()) == 19
    assert (sample.golden_right, sample.golden_total) == (4, 5)
