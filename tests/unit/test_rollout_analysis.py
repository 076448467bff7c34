"""The rollout analysis (``bastion.rollout.judge``) on simulated arms.

Every simulation is seeded and prints its seeds; the figures it prints (the A/A false
rollback rate, the look at which each bad candidate fails) are the ones docs/rollout.md
quotes. Arms are simulated the way a gateway sees them: latencies lognormal around a
40 ms median (sigma 0.35, so p99 is about 90 ms), 1 % errors, a prediction histogram
over 6 labels, and one golden probe every 4 requests.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.errors import UsageError
from bastion.rollout import CHECK_NAMES, AnalysisSettings, ArmSample, Check, Verdict, judge

PROBS = np.array([0.35, 0.25, 0.15, 0.12, 0.08, 0.05])
SWAPPED = PROBS[::-1].copy()  # another model: the rare labels become the common ones
LABELS = [f"label{i}" for i in range(PROBS.size)]


@dataclass(frozen=True)
class Stream:
    """One arm's requests in arrival order; a window is a prefix (cumulative data)."""

    latency: npt.NDArray[np.float64]
    error: npt.NDArray[np.bool_]
    label: npt.NDArray[np.int64]
    golden_right: npt.NDArray[np.bool_]

    def window(self, n: int, *, golden_every: int = 4, with_predictions: bool = True) -> ArmSample:
        error = self.error[:n]
        g = n // golden_every if golden_every else 0
        hist = np.bincount(self.label[:n], minlength=PROBS.size)
        return ArmSample(
            requests=n,
            errors=int(error.sum()),
            latencies_s=self.latency[:n][~error],
            predictions=dict(zip(LABELS, hist.tolist(), strict=True)) if with_predictions else {},
            golden_right=int(self.golden_right[:g].sum()),
            golden_total=g,
        )


def stream(
    rng: np.random.Generator,
    n: int,
    *,
    sigma: float = 0.35,
    factor: float = 1.0,
    shift_s: float = 0.0,
    slow_share: float = 0.0,
    slow_factor: float = 1.0,
    error_rate: float = 0.01,
    probs: npt.NDArray[np.float64] = PROBS,
    golden_accuracy: float = 0.98,
    tick_s: float = 0.0,
) -> Stream:
    latency = 0.040 * factor * np.exp(rng.normal(0.0, sigma, n)) + shift_s
    latency[rng.random(n) < slow_share] *= slow_factor
    if tick_s:
        latency = np.ceil(latency / tick_s) * tick_s
    return Stream(
        latency=latency,
        error=rng.random(n) < error_rate,
        label=rng.choice(probs.size, size=n, p=probs),
        golden_right=rng.random(n) < golden_accuracy,
    )


def first_fail(
    seed: int, looks: list[int], base: dict[str, object], cand: dict[str, object], **window: object
) -> int | None:
    """The 1-based look of the first ``fail`` in one step of cumulative looks, or None."""
    rng = np.random.default_rng(seed)
    b = stream(rng, looks[-1], **base)  # type: ignore[arg-type]
    c = stream(rng, looks[-1], **cand)  # type: ignore[arg-type]
    for i, n in enumerate(looks, start=1):
        if judge(b.window(n, **window), c.window(n, **window), look=i).outcome == "fail":  # type: ignore[arg-type]
            return i
    return None


# -- A/A: the false rollback rate --------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "rollouts", "arm"),
    [
        ("lognormal", 500, {}),
        # both arms with a slow mode and latencies on a 1 ms clock (many ties): the
        # tests must not lean on the latencies being lognormal
        ("slow mode, 1 ms clock", 200, {"slow_share": 0.04, "slow_factor": 3.5, "tick_s": 0.001}),
    ],
)
def test_aa_false_rollbacks_at_most_alpha(
    label: str, rollouts: int, arm: dict[str, object]
) -> None:
    """A/A rollouts of 2 steps x 4 looks (100..400 requests per arm, cumulative within a
    step), planned for exactly those 8 looks, so each test runs at its full level
    alpha / (6 x 8): any fail in a rollout is a false rollback."""
    per_step, steps = [100, 200, 300, 400], 2
    cfg = AnalysisSettings(max_looks=len(per_step) * steps)
    seed = 20261202
    print(f"A/A ({label}) seed {seed}: {rollouts} rollouts x {steps} steps x {per_step} per arm")
    rng = np.random.default_rng(seed)
    false_rollbacks = 0
    failing_checks: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    for _ in range(rollouts):
        look = 0
        failed = False
        for _ in range(steps):
            b, c = stream(rng, per_step[-1], **arm), stream(rng, per_step[-1], **arm)  # type: ignore[arg-type]
            for n in per_step:
                look += 1
                v = judge(b.window(n), c.window(n), look=look, settings=cfg)
                outcomes[v.outcome] = outcomes.get(v.outcome, 0) + 1
                if v.outcome == "fail":
                    failed = True
                    for ch in v.checks:
                        if ch.outcome == "fail":
                            failing_checks[ch.name] = failing_checks.get(ch.name, 0) + 1
        false_rollbacks += failed
    rate = false_rollbacks / rollouts
    print(f"A/A false rollback rate {rate:.2%} ({false_rollbacks}/{rollouts}); {failing_checks}")
    print(f"A/A outcomes over all looks: {outcomes}")
    assert rate <= cfg.alpha, failing_checks


# -- each bad candidate fails within a few looks -------------------------------------------

POWER_SEEDS = range(1000, 1020)
LOOKS = [150, 300, 450, 600, 750, 900]  # requests per arm, cumulative looks of one step


@pytest.mark.parametrize(
    ("label", "cand", "window", "by_look"),
    [
        ("+50 ms on a 40 ms median", {"shift_s": 0.050}, {}, 1),
        # kayenta#780: the median stays, the variance grows; p99 90 ms -> 180 ms
        ("same median, doubled p99", {"sigma": 0.65}, {}, 2),
        ("5% errors vs a baseline with none", {"error_rate": 0.05}, {}, 5),
        ("swapped model (prediction histogram)", {"probs": SWAPPED}, {}, 1),
        ("golden accuracy 0.98 -> 0.6", {"golden_accuracy": 0.6}, {"golden_every": 2}, 2),
    ],
)
def test_bad_candidate_fails(
    label: str, cand: dict[str, object], window: dict[str, object], by_look: int
) -> None:
    base: dict[str, object] = {"error_rate": 0.0} if "errors" in label else {}
    fails = [first_fail(seed, LOOKS, base, cand, **window) for seed in POWER_SEEDS]
    print(
        f"{label}: seeds {POWER_SEEDS.start}..{POWER_SEEDS.stop - 1}, looks {LOOKS} per arm; "
        f"first fail at look {fails}"
    )
    assert all(f is not None and f <= by_look for f in fails), fails


def test_slow_tail_mixture_fails() -> None:
    """4 % of requests 3.5x slower: the median barely moves (+2 %), p99 about doubles.
    A p99 can only be told apart with enough requests above it, so this needs more
    traffic than the others (see docs/rollout.md)."""
    looks = [250, 500, 750, 1000, 1250, 1500, 2000]
    rng = np.random.default_rng(7)
    probe = stream(rng, 200_000, slow_share=0.04, slow_factor=3.5).latency
    ref = stream(rng, 200_000).latency
    p99 = float(np.quantile(probe, 0.99) / np.quantile(ref, 0.99))
    med = float(np.median(probe) / np.median(ref))
    print(f"mixture: p99 x{p99:.2f}, median x{med:.3f}")
    assert 1.8 < p99 < 2.3
    assert med < 1.03
    cand = {"slow_share": 0.04, "slow_factor": 3.5}
    fails = [first_fail(seed, looks, {}, cand) for seed in POWER_SEEDS]
    print(
        f"mixture: seeds {POWER_SEEDS.start}..{POWER_SEEDS.stop - 1}, looks {looks}; "
        f"first fail {fails}"
    )
    assert all(f is not None for f in fails), fails


def test_zero_baseline_errors_do_not_hide_a_failing_candidate() -> None:
    v = judge(ArmSample(500, 0, [0.04] * 500), ArmSample(500, 100, [0.04] * 400), look=1)
    assert v.outcome == "fail"
    errors = v.checks[0]
    assert errors.name == "errors"
    assert errors.outcome == "fail"
    assert errors.effect == pytest.approx(0.2)


# -- good candidates -------------------------------------------------------------------------


@pytest.mark.parametrize(("label", "cand"), [("same", {}), ("20% faster", {"factor": 0.8})])
def test_good_candidate_never_fails(label: str, cand: dict[str, object]) -> None:
    seeds = range(2000, 2060)
    fails = [s for s in seeds if first_fail(s, LOOKS, {}, cand) is not None]
    print(f"good candidate ({label}): seeds {seeds.start}..{seeds.stop - 1}; failed: {fails}")
    assert not fails


def test_clearly_faster_candidate_can_pass() -> None:
    seed = 31
    rng = np.random.default_rng(seed)
    b = stream(rng, 3000, error_rate=0.0)
    c = stream(rng, 3000, error_rate=0.0, factor=0.6)
    # golden probes not configured: 98 % accuracy needs more probes than this to show
    # non-inferiority within 2 points at the per-look level
    v = judge(b.window(3000, golden_every=0), c.window(3000, golden_every=0), look=1)
    print(f"faster candidate seed {seed}: {v.reason}")
    assert v.outcome == "pass", v.reason
    assert v.checks[1].effect is not None
    assert v.checks[1].effect < -0.3


def test_unequal_arms() -> None:
    """A baseline with far more traffic than the candidate (a 5 % canary judged against
    the whole fleet): nothing in the tests assumes equal sizes."""
    seeds = range(3000, 3040)
    print(f"unequal arms: seeds {seeds.start}..{seeds.stop - 1}, 3000 baseline / 200 candidate")
    for seed in seeds:
        rng = np.random.default_rng(seed)
        b, same, slow = stream(rng, 3000), stream(rng, 200), stream(rng, 200, shift_s=0.05)
        assert judge(b.window(3000), same.window(200), look=1).outcome != "fail", seed
        assert judge(b.window(3000), slow.window(200), look=1).outcome == "fail", seed


# -- missing, short and bad data: insufficient, never pass -----------------------------------

GOOD = ArmSample(200, 0, [0.04 + 0.0001 * i for i in range(200)])


def _by_name(v: Verdict) -> dict[str, Check]:
    return {c.name: c for c in v.checks}


@pytest.mark.parametrize(
    ("label", "baseline", "candidate"),
    [
        ("no traffic", ArmSample(0, 0, []), ArmSample(0, 0, [])),
        ("empty candidate", GOOD, ArmSample(0, 0, [])),
        ("empty baseline", ArmSample(0, 0, []), GOOD),
        ("fewer than min_samples", ArmSample(49, 0, [0.04] * 49), GOOD),
        ("NaN latency", GOOD, ArmSample(200, 0, [*GOOD.latencies_s[:-1], math.nan])),
        ("infinite latency", GOOD, ArmSample(200, 0, [*GOOD.latencies_s[:-1], math.inf])),
        ("negative latency", GOOD, ArmSample(200, 0, [*GOOD.latencies_s[:-1], -0.01])),
        ("NaN requests", GOOD, ArmSample(math.nan, 0, GOOD.latencies_s)),  # type: ignore[arg-type]
        ("infinite errors", GOOD, ArmSample(200, math.inf, GOOD.latencies_s)),  # type: ignore[arg-type]
        ("negative requests", GOOD, ArmSample(-5, 0, GOOD.latencies_s)),
        ("negative errors", ArmSample(200, -1, GOOD.latencies_s), GOOD),
        ("errors > requests", GOOD, ArmSample(200, 201, GOOD.latencies_s)),
        ("golden right > total", GOOD, ArmSample(200, 0, GOOD.latencies_s, {}, 80, 60)),
        # found by the property test: with no probes on either arm this was "not measured"
        ("golden right, total 0", GOOD, ArmSample(200, 0, GOOD.latencies_s, {}, 1, 0)),
        ("golden on one arm only", GOOD, ArmSample(200, 0, GOOD.latencies_s, {}, 60, 60)),
        ("predictions on one arm only", GOOD, ArmSample(200, 0, GOOD.latencies_s, {"a": 200})),
        (
            "NaN prediction count",
            ArmSample(200, 0, GOOD.latencies_s, {"a": 100}),
            ArmSample(200, 0, GOOD.latencies_s, {"a": math.nan}),
        ),  # type: ignore[dict-item]
        ("latencies not numbers", GOOD, ArmSample(200, 0, ["fast"] * 200)),  # type: ignore[list-item]
    ],
)
def test_bad_or_missing_data_is_insufficient(
    label: str, baseline: ArmSample, candidate: ArmSample
) -> None:
    v = judge(baseline, candidate, look=1)
    bad = [c for c in v.checks if c.outcome == "insufficient"]
    print(f"{label}: {v.reason}")
    assert v.outcome == "insufficient"
    assert bad
    json.dumps(v.to_dict(), allow_nan=False)


def test_fail_outranks_insufficient() -> None:
    """Every request failed: no latencies to judge, and still a rollback."""
    v = judge(GOOD, ArmSample(200, 200, []), look=1)
    checks = _by_name(v)
    assert checks["errors"].outcome == "fail"
    assert checks["latency.location"].outcome == "insufficient"
    assert v.outcome == "fail"


def test_unmeasured_checks_are_skipped_not_insufficient() -> None:
    v = judge(GOOD, GOOD, look=1)
    checks = _by_name(v)
    for name in ("golden", "predictions"):
        assert checks[name].outcome == "pass"
        assert not checks[name].measured
        assert checks[name].detail.startswith("not measured")
    assert v.outcome in {"continue", "pass"}
    assert [c.name for c in v.checks] == list(CHECK_NAMES)


def test_look_outside_the_plan_and_bad_settings_raise() -> None:
    with pytest.raises(ValueError, match="max_looks"):
        judge(GOOD, GOOD, look=41)
    with pytest.raises(ValueError, match="look 0"):
        judge(GOOD, GOOD, look=0)
    for bad in ({"alpha": 0.0}, {"min_samples": 1}, {"max_looks": 0}, {"tail_quantile": 1.0}):
        with pytest.raises(UsageError):
            AnalysisSettings(**bad)  # type: ignore[arg-type]


def test_level_is_alpha_over_checks_and_looks() -> None:
    v = judge(GOOD, GOOD, look=1)
    for c in v.checks:
        if c.measured:
            assert c.level == pytest.approx(0.01 / (6 * 40))


# -- properties ------------------------------------------------------------------------------

counts = st.one_of(
    st.integers(-3, 400), st.sampled_from([math.nan, math.inf, -math.inf, 2.5, -1.0, 100.0])
)
latency = st.one_of(
    st.floats(0, 5, allow_nan=False),
    st.sampled_from([math.nan, math.inf, -1.0, 0.0, 1e-300, 1e300]),
)
arms = st.builds(
    ArmSample,
    requests=counts,
    errors=counts,
    latencies_s=st.one_of(
        st.lists(latency, max_size=150),
        st.integers(0, 300).map(lambda n: [0.04] * n),
        st.integers(50, 300).map(lambda n: list(np.random.default_rng(n).lognormal(-3, 0.4, n))),
    ),
    predictions=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), counts, max_size=4),
    golden_right=counts,
    golden_total=counts,
)


def _whole(x: object) -> bool:
    if isinstance(x, float):
        return math.isfinite(x) and x >= 0 and x.is_integer()
    return isinstance(x, int) and x >= 0


def _valid(arm: ArmSample) -> bool:
    """No NaN, infinite, negative, fractional or impossible value anywhere."""
    lat = np.asarray(arm.latencies_s, dtype=float)
    counts = [arm.requests, arm.errors, arm.golden_right, arm.golden_total]
    return bool(
        np.isfinite(lat).all()
        and (lat >= 0).all()
        and all(_whole(x) for x in counts)
        and arm.errors <= arm.requests
        and arm.golden_right <= arm.golden_total
        and all(_whole(v) for v in arm.predictions.values())
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(baseline=arms, candidate=arms, look=st.integers(1, 40))
def test_judge_never_raises_and_its_dict_is_json(
    baseline: ArmSample, candidate: ArmSample, look: int
) -> None:
    v = judge(baseline, candidate, look=look)
    json.dumps(v.to_dict(), allow_nan=False)
    outcomes = {c.outcome for c in v.checks}
    expected = (
        "fail"
        if "fail" in outcomes
        else "insufficient"
        if "insufficient" in outcomes
        else "pass"
        if outcomes == {"pass"}
        else "continue"
    )
    assert v.outcome == expected
    assert [c.name for c in v.checks] == list(CHECK_NAMES)
    # a fail needs its point estimate beyond the tolerance: never a fail not regressed
    assert all(c.regressed for c in v.checks if c.outcome == "fail")
    if not (_valid(baseline) and _valid(candidate)):
        assert v.outcome in {"fail", "insufficient"}


def test_a_regression_not_yet_significant_is_marked_regressed_not_passed() -> None:
    """5 errors in 100 against none in 100: beyond the 1-point margin, but not significant
    at a plan's level. The check continues and says it leans toward a regression (the
    controller extends the step on it instead of advancing); the same counts with the
    rates swapped are neither regressed nor failing."""
    lat = [0.01] * 100
    s = AnalysisSettings(min_samples=30, alpha=0.05, max_looks=90)
    worse = judge(ArmSample(100, 0, lat), ArmSample(100, 5, lat), look=1, settings=s)
    errors = next(c for c in worse.checks if c.name == "errors")
    assert errors.outcome == "continue", errors
    assert errors.regressed
    assert errors.to_dict()["regressed"] is True
    better = judge(ArmSample(100, 5, lat), ArmSample(100, 0, lat), look=1, settings=s)
    errors = next(c for c in better.checks if c.name == "errors")
    assert not errors.regressed
    assert errors.outcome != "fail"
    # and a clear regression fails with regressed set, as every fail must
    clear = judge(ArmSample(2000, 0, lat), ArmSample(2000, 400, lat), look=1, settings=s)
    errors = next(c for c in clear.checks if c.name == "errors")
    assert errors.outcome == "fail"
    assert errors.regressed
