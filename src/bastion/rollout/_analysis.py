"""The rollout's statistics: is a candidate arm worse than the baseline beside it?

Owns: ``judge`` and its records (``ArmSample``, ``AnalysisSettings``, ``Check``,
``Verdict``). One call compares one window of two arms that got the same share of
traffic at the same time, on six checks: ``errors``, ``latency.location``,
``latency.spread``, ``latency.tail``, ``golden`` and ``predictions``. Each check says
``fail`` (a regression beyond its tolerance, significant), ``pass`` (non-inferiority
shown, significant), ``continue`` (neither yet) or ``insufficient`` (too few samples,
or data that is missing, not finite or impossible); the verdict is ``fail`` if any
check fails, else ``insufficient`` if any lacks data, else ``pass`` if all pass, else
``continue``.

Must never: do I/O or keep state between calls, raise on bad *data* (a NaN, a negative
count or ``errors > requests`` makes its check ``insufficient``, naming the field), let
a non-finite number reach a verdict, or divide by a baseline rate (a baseline with no
errors must still let a candidate full of errors fail).

Sequential validity, and why this design: the controller looks up to ``max_looks``
times per rollout at cumulative data that restarts at every step, so looks are neither
equally spaced nor on one growing stream. Each check therefore runs its tests at the
level ``alpha / (6 * max_looks)`` at every look: Bonferroni over the six checks and a
flat (Pocock-like) spend over the looks. By the union bound the chance of any false
rollback in a whole rollout is at most ``alpha`` whatever the look times, the steps and
the dependence between checks; it is conservative (nested looks are correlated), which
costs samples, not validity. Every ``fail`` needs a test that is valid at that level
and its point estimate beyond the tolerance (for tail and predictions, whose tests are
against "no difference", that estimate is what carries the tolerance); the second
condition can only make ``fail`` rarer. ``pass`` uses the same level for the opposite
one-sided test (non-inferiority at the tolerance), so a false early advance is as rare;
predictions, which has no such test, passes only on a small distance with no
significant difference.

The tests: errors and golden, the Farrington-Manning score test of a risk difference
against a margin (absolute, so a zero baseline rate is no special case); latency
location, Mann-Whitney U of the candidate against the baseline scaled by
``1 + latency_tolerance``, with a Hodges-Lehmann shift for the reader; latency spread,
Welch's t on absolute deviations of log latency from each arm's median
(Brown-Forsythe) against ``1 + spread_tolerance`` times the baseline's; latency tail,
Fisher's exact test of exceedances over a threshold set on the pooled sample (exact
under "same distribution", whatever the distribution), with the candidate's
``tail_quantile`` growing beyond ``tail_tolerance``; predictions, chi-squared on the
histograms with the Jensen-Shannon distance (bias-corrected for the sample sizes)
beyond ``drift_margin``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from bastion.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["CHECK_NAMES", "AnalysisSettings", "ArmSample", "Check", "Outcome", "Verdict", "judge"]

Outcome = Literal["pass", "fail", "insufficient", "continue"]

#: every check, in the order a verdict lists them; the Bonferroni split is over all six,
#: measured or not, so the level of one check never depends on which others have data
CHECK_NAMES: tuple[str, ...] = (
    "errors",
    "latency.location",
    "latency.spread",
    "latency.tail",
    "golden",
    "predictions",
)

_MIN_EXCEEDANCES = 30  # the tail test's threshold leaves at least this many pooled values above it
_HL_POINTS = 256  # Hodges-Lehmann from at most 256 x 256 quantile points per arm
_MIN_EXPECTED = 5.0  # chi-squared: categories expected below 5 are pooled
_LOG_FLOOR = 1e-9  # a latency of 0 s (a coarse clock) is read as 1 ns on the log scale


@dataclass(frozen=True, slots=True)
class ArmSample:
    """One arm's samples over the analysis window (the current step, cumulative).

    ``requests``: first attempts answered or failed on this arm; ``errors``: of those,
    the failed ones (5xx, timeout, refused, malformed). ``latencies_s``: latencies of the
    successful ones, in seconds (a uniform reservoir is fine). ``predictions``: histogram
    of the answers' predicted label or content (may be empty). ``golden_right`` of
    ``golden_total``: golden-set probe items answered right. Nothing is validated here:
    ``judge`` turns bad values into ``insufficient`` checks that name them.
    """

    requests: int
    errors: int
    latencies_s: Sequence[float]
    predictions: Mapping[str, int] = field(default_factory=dict)
    golden_right: int = 0
    golden_total: int = 0


@dataclass(frozen=True, slots=True)
class AnalysisSettings:
    """The analysis's knobs (defaults explained in docs/rollout.md, "Analysis").

    ``min_samples``: per arm and check; fewer gives ``insufficient``. ``alpha``: the
    false-rollback rate over a whole rollout (all looks, all checks). ``max_looks``:
    the looks the controller plans per rollout. Tolerances: ``latency_tolerance``
    (relative slowdown of the location), ``spread_tolerance`` (relative growth of the
    mean absolute deviation of log latency), ``tail_tolerance`` (relative growth of
    the ``tail_quantile``), ``error_margin`` (absolute rise of the error rate),
    ``golden_margin`` (absolute drop of golden accuracy), ``drift_margin``
    (Jensen-Shannon distance, base 2, between the prediction histograms).
    ``latency_allowance_s``: an absolute slowdown always accepted on top of the relative
    tolerances (location, tail, spread): at a 1 ms model, 10% is 0.1 ms, less than two
    processes of the same model differ by on a busy host.
    """

    min_samples: int = 50
    alpha: float = 0.01
    max_looks: int = 40
    latency_tolerance: float = 0.10
    tail_quantile: float = 0.99
    tail_tolerance: float = 0.25
    error_margin: float = 0.01
    golden_margin: float = 0.02
    drift_margin: float = 0.1
    spread_tolerance: float = 0.25
    latency_allowance_s: float = 0.002

    def __post_init__(self) -> None:
        where = "rollout analysis settings"
        if not _is_int(self.min_samples) or self.min_samples < 2:
            raise UsageError(f"{where}: min_samples {self.min_samples!r} must be an integer >= 2")
        if not _is_int(self.max_looks) or self.max_looks < 1:
            raise UsageError(f"{where}: max_looks {self.max_looks!r} must be an integer >= 1")
        if not (isinstance(self.alpha, numbers.Real) and 0 < self.alpha < 1):
            raise UsageError(f"{where}: alpha {self.alpha!r} must be between 0 and 1 (e.g. 0.01)")
        if not (isinstance(self.tail_quantile, numbers.Real) and 0.5 <= self.tail_quantile < 1):
            raise UsageError(
                f"{where}: tail_quantile {self.tail_quantile!r} must be in [0.5, 1) (e.g. 0.99)"
            )
        for name in ("latency_tolerance", "tail_tolerance", "spread_tolerance"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and 0 <= value <= 10):
                raise UsageError(f"{where}: {name} {value!r} must be a fraction in [0, 10]")
        allowance = self.latency_allowance_s
        if not (isinstance(allowance, numbers.Real) and 0 <= allowance <= 60):
            raise UsageError(
                f"{where}: latency_allowance_s {allowance!r} must be seconds in [0, 60]"
            )
        for name in ("error_margin", "golden_margin", "drift_margin"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and 0 <= value < 1):
                raise UsageError(f"{where}: {name} {value!r} must be in [0, 1)")

    @property
    def level(self) -> float:
        """The level of each one-sided test at each look: alpha / (checks x looks)."""
        return self.alpha / (len(CHECK_NAMES) * self.max_looks)


@dataclass(frozen=True, slots=True)
class Check:
    """One check's outcome at one look.

    ``statistic``: the test's (z, U, t, exceedances or chi-squared); ``p_value``: of the
    regression test (``fail`` when below ``level``); ``p_value_pass``: of the
    non-inferiority test (``pass`` when below ``level``). ``effect``: the size a person
    reads (a difference of rates, a relative change, a distance), ``threshold`` its
    tolerance. ``detail``: one sentence saying what was seen against what was allowed.
    ``regressed``: the point estimate is beyond the tolerance, significant or not (a
    ``continue`` with it set leans toward a regression: the controller extends the step
    for more evidence instead of advancing on it).
    """

    name: str
    outcome: Outcome
    statistic: float | None
    p_value: float | None
    detail: str
    p_value_pass: float | None = None
    effect: float | None = None
    threshold: float | None = None
    level: float | None = None
    n_baseline: int = 0
    n_candidate: int = 0
    measured: bool = True
    regressed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": self.outcome,
            "statistic": _finite(self.statistic),
            "p_value": _finite(self.p_value),
            "p_value_pass": _finite(self.p_value_pass),
            "effect": _finite(self.effect),
            "threshold": _finite(self.threshold),
            "level": _finite(self.level),
            "n_baseline": self.n_baseline,
            "n_candidate": self.n_candidate,
            "measured": self.measured,
            "regressed": self.regressed,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """The comparison at one look: its ``outcome``, every check, and a ``reason``."""

    outcome: Outcome
    checks: tuple[Check, ...]
    look: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (an event's data): no NaN or infinity, ``None`` instead."""
        return {
            "outcome": self.outcome,
            "look": self.look,
            "reason": self.reason,
            "checks": [c.to_dict() for c in self.checks],
        }


def judge(
    baseline: ArmSample,
    candidate: ArmSample,
    *,
    look: int,
    settings: AnalysisSettings | None = None,
) -> Verdict:
    """Compare ``candidate`` with ``baseline`` at ``look`` (1..settings.max_looks).

    Raises ``ValueError`` only for a look outside the plan (a controller bug: the
    sequential design has no level left for it); bad data gives ``insufficient``.
    """
    s = settings if settings is not None else AnalysisSettings()
    if not _is_int(look) or not 1 <= look <= s.max_looks:
        raise ValueError(
            f"rollout analysis: look {look!r} is outside 1..{s.max_looks} (max_looks); "
            "plan more looks in AnalysisSettings.max_looks instead of looking past the plan"
        )
    b_lat, b_lat_problem = _latencies(baseline.latencies_s)
    c_lat, c_lat_problem = _latencies(candidate.latencies_s)
    checks = (
        _errors(baseline, candidate, s),
        *_latency_checks(b_lat, c_lat, b_lat_problem, c_lat_problem, s),
        _golden(baseline, candidate, s),
        _predictions(baseline, candidate, s),
    )
    return Verdict(_combine(checks), checks, int(look), _reason(checks))


# -- combining -------------------------------------------------------------------------


def _combine(checks: Sequence[Check]) -> Outcome:
    outcomes = {c.outcome for c in checks}
    if "fail" in outcomes:
        return "fail"
    if "insufficient" in outcomes:
        return "insufficient"
    if outcomes == {"pass"}:
        return "pass"
    return "continue"


def _reason(checks: Sequence[Check]) -> str:
    outcome = _combine(checks)
    if outcome == "pass":
        return "every check shows non-inferiority: " + "; ".join(
            f"{c.name}: {c.detail}" for c in checks
        )
    chosen = [c for c in checks if c.outcome == outcome]
    lead = {
        "fail": "regression",
        "insufficient": "not enough data",
        "continue": "no regression shown, not yet conclusive",
    }[outcome]
    return f"{lead}: " + "; ".join(f"{c.name}: {c.detail}" for c in chosen)


# -- input hygiene ---------------------------------------------------------------------


def _is_int(x: object) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _count(x: object) -> int | None:
    """A non-negative whole count, or None (NaN, inf, negative, fractional, not a number)."""
    if isinstance(x, bool):
        return None
    if isinstance(x, numbers.Integral):
        n = int(x)
        return n if n >= 0 else None
    if isinstance(x, numbers.Real):
        f = float(x)
        if math.isfinite(f) and f >= 0 and f.is_integer():
            return int(f)
    return None


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def _latencies(values: object) -> tuple[npt.NDArray[np.float64], str | None]:
    import numpy as np

    try:
        arr = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        return np.empty(0), "latencies are not numbers"
    if arr.size and not np.isfinite(arr).all():
        return arr, f"{int((~np.isfinite(arr)).sum())} latencies are NaN or infinite"
    if arr.size and (arr < 0).any():
        return arr, f"{int((arr < 0).sum())} latencies are negative"
    return arr, None


def _insufficient(name: str, detail: str, s: AnalysisSettings, nb: int = 0, nc: int = 0) -> Check:
    return Check(
        name, "insufficient", None, None, detail, level=s.level, n_baseline=nb, n_candidate=nc
    )


def _not_measured(name: str, detail: str) -> Check:
    return Check(name, "pass", None, None, f"not measured: {detail}", measured=False)


def _decide(p_fail: float, p_pass: float, regressed: bool, s: AnalysisSettings) -> Outcome:
    # ``regressed``: the point estimate is beyond the tolerance. A fail needs it as well
    # as the test (which can only make fails rarer); NaN p-values arrive here as 1.
    if regressed and p_fail < s.level:
        return "fail"
    if p_pass < s.level:
        return "pass"
    return "continue"


def _p(x: float) -> float:
    f = float(x)
    return f if math.isfinite(f) else 1.0


# -- tests, on numpy and scipy.special (scipy.stats's per-call checks cost milliseconds)


def _norm_sf(z: float) -> float:
    from scipy import special

    return _p(special.ndtr(-z)) if not math.isnan(z) else 1.0


def _mann_whitney(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
) -> tuple[float, float, float]:
    """U of x against y, with the normal approximation (tie-corrected, continuity
    corrected); returns (U, P(x tends larger), P(x tends smaller))."""
    import numpy as np

    n1, n2 = x.size, y.size
    pooled = np.concatenate([x, y])
    order = np.argsort(pooled, kind="mergesort")
    values = pooled[order]
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    counts = np.diff(np.r_[starts, values.size])
    avg = starts + (counts + 1) / 2.0  # average 1-based rank of each run of ties
    ranks = np.empty(pooled.size)
    ranks[order] = np.repeat(avg, counts)
    u = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2.0)
    n = n1 + n2
    tie = float((counts**3 - counts).sum())
    var = n1 * n2 / 12.0 * ((n + 1) - tie / (n * (n - 1)))
    if var <= 0:
        return u, 1.0, 1.0
    mu = n1 * n2 / 2.0
    sd = math.sqrt(var)
    return u, _norm_sf((u - mu - 0.5) / sd), _norm_sf((mu - u - 0.5) / sd)


def _welch(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> tuple[float, float, float]:
    """Welch's t of mean(x) - mean(y); returns (t, P(x larger), P(x smaller))."""
    from scipy import special

    vx, vy = float(x.var(ddof=1)) / x.size, float(y.var(ddof=1)) / y.size
    se2 = vx + vy
    if se2 <= 0:
        return math.nan, 1.0, 1.0  # both arms constant: nothing to test
    t = (float(x.mean()) - float(y.mean())) / math.sqrt(se2)
    df = se2 * se2 / (vx * vx / (x.size - 1) + vy * vy / (y.size - 1))
    return t, _p(special.stdtr(df, -t)), _p(special.stdtr(df, t))


def _chi2(table: npt.NDArray[np.float64]) -> tuple[float, float]:
    """Pearson's chi-squared of homogeneity on a 2 x K table of counts."""
    import numpy as np
    from scipy import special

    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    keep = expected > 0
    chi2 = float((((table - expected) ** 2)[keep] / expected[keep]).sum())
    df = (table.shape[0] - 1) * (table.shape[1] - 1)
    return chi2, _p(special.chdtrc(df, chi2))


# -- rates: errors and golden ----------------------------------------------------------


def _fm_restricted(x_c: int, n_c: int, x_b: int, n_b: int, margin: float) -> float:
    """The candidate's rate under H0: p_c - p_b = margin that maximises the likelihood
    (Farrington & Manning 1990, the closed form of the cubic; a bounded search when the
    closed form degenerates)."""
    pc, pb, th = x_c / n_c, x_b / n_b, n_b / n_c
    a = 1 + th
    b = -(1 + th + pc + th * pb + margin * (th + 2))
    c = margin * margin + margin * (2 * pc + th + 1) + pc + th * pb
    d = -pc * margin * (1 + margin)
    v = b**3 / (3 * a) ** 3 - b * c / (6 * a * a) + d / (2 * a)
    u = math.copysign(math.sqrt(max(b * b / (3 * a) ** 2 - c / (3 * a), 0.0)), v)
    if u != 0:
        w = (math.pi + math.acos(max(-1.0, min(1.0, v / u**3)))) / 3
        p = 2 * u * math.cos(w) - b / (3 * a)
        if margin - 1e-12 <= p <= 1 + 1e-12 and math.isfinite(p):
            return min(max(p, margin), 1.0)
    from scipy import optimize

    def nll(p_b: float) -> float:
        out = 0.0
        for x, n, rate in ((x_b, n_b, p_b), (x_c, n_c, p_b + margin)):
            r = min(max(rate, 1e-15), 1 - 1e-15)
            out -= x * math.log(r) + (n - x) * math.log1p(-r)
        return out

    res = optimize.minimize_scalar(nll, bounds=(0.0, 1.0 - margin), method="bounded")
    return float(res.x) + margin


def _fm_z(x_c: int, n_c: int, x_b: int, n_b: int, margin: float) -> float:
    """Farrington-Manning score z of H0: p_c - p_b = margin (positive: above it)."""
    pc_t = _fm_restricted(x_c, n_c, x_b, n_b, margin)
    pb_t = pc_t - margin
    var = pc_t * (1 - pc_t) / n_c + pb_t * (1 - pb_t) / n_b
    diff = x_c / n_c - x_b / n_b - margin
    if var <= 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / math.sqrt(var)


def _rate_check(
    name: str,
    what: str,
    *,
    baseline: tuple[int, int],
    candidate: tuple[int, int],
    margin: float,
    s: AnalysisSettings,
) -> Check:
    (bad_b, n_b), (bad_c, n_c) = baseline, candidate
    rb, rc = bad_b / n_b, bad_c / n_c
    z_fail = _fm_z(bad_c, n_c, bad_b, n_b, margin)
    p_fail, p_pass = _norm_sf(z_fail), _norm_sf(-z_fail)
    diff = rc - rb
    regressed = diff > margin
    outcome = _decide(p_fail, p_pass, regressed, s)
    detail = (
        f"candidate {what} {rc:.2%} ({bad_c}/{n_c}) vs baseline {rb:.2%} ({bad_b}/{n_b}): "
        f"{diff * 100:+.2f} points, limit +{margin * 100:.2f}"
    )
    return Check(
        name,
        outcome,
        _finite(z_fail),
        p_fail,
        detail,
        p_value_pass=p_pass,
        effect=diff,
        threshold=margin,
        level=s.level,
        n_baseline=n_b,
        n_candidate=n_c,
        regressed=regressed,
    )


def _part_of_whole(
    name: str, b: ArmSample, c: ArmSample, s: AnalysisSettings, *, part: str, whole: str
) -> tuple[tuple[int, int], tuple[int, int]] | Check:
    """Each arm's ``(part, whole)`` counts (errors of requests, right of golden probes),
    or the ``insufficient`` check that says which is not a count or exceeds its whole."""
    arms = (("baseline", b), ("candidate", c))
    counts = {f"{arm}.{f}": _count(getattr(x, f)) for arm, x in arms for f in (whole, part)}
    bad = [k for k, v in counts.items() if v is None]
    if bad:
        return _insufficient(name, f"{', '.join(bad)} not a whole non-negative number", s)
    got = [(counts[f"{arm}.{part}"] or 0, counts[f"{arm}.{whole}"] or 0) for arm, _ in arms]
    for (arm, _), (p, w) in zip(arms, got, strict=True):
        if p > w:
            return _insufficient(
                name, f"{arm}.{part} {p} exceeds {arm}.{whole} {w}", s, got[0][1], got[1][1]
            )
    return got[0], got[1]


def _errors(b: ArmSample, c: ArmSample, s: AnalysisSettings) -> Check:
    name = "errors"
    counts = _part_of_whole(name, b, c, s, part="errors", whole="requests")
    if isinstance(counts, Check):
        return counts
    (eb, nb), (ec, nc) = counts
    if nb < s.min_samples or nc < s.min_samples:
        return _insufficient(
            name, f"requests {nb} baseline / {nc} candidate, need {s.min_samples} each", s, nb, nc
        )
    return _rate_check(
        name, "error rate", baseline=(eb, nb), candidate=(ec, nc), margin=s.error_margin, s=s
    )


def _golden(b: ArmSample, c: ArmSample, s: AnalysisSettings) -> Check:
    name = "golden"
    counts = _part_of_whole(name, b, c, s, part="golden_right", whole="golden_total")
    if isinstance(counts, Check):
        return counts
    (rb, tb), (rc, tc) = counts
    if tb == 0 and tc == 0:
        return _not_measured(name, "no golden probes on either arm")
    if tb < s.min_samples or tc < s.min_samples:
        return _insufficient(
            name,
            f"golden probes {tb} baseline / {tc} candidate, need {s.min_samples} each",
            s,
            tb,
            tc,
        )
    check = _rate_check(
        name,
        "golden error rate",
        baseline=(tb - rb, tb),
        candidate=(tc - rc, tc),
        margin=s.golden_margin,
        s=s,
    )
    detail = (
        f"candidate golden accuracy {rc / tc:.1%} ({rc}/{tc}) vs baseline {rb / tb:.1%} "
        f"({rb}/{tb}): {(rc / tc - rb / tb) * 100:+.1f} points, limit -{s.golden_margin * 100:.1f}"
    )
    return Check(
        check.name,
        check.outcome,
        check.statistic,
        check.p_value,
        detail,
        p_value_pass=check.p_value_pass,
        effect=check.effect,
        threshold=check.threshold,
        level=check.level,
        n_baseline=tb,
        n_candidate=tc,
        regressed=check.regressed,
    )


# -- latency ---------------------------------------------------------------------------


def _ms(x: float) -> str:
    return f"{x * 1000:.3g} ms"


def _latency_checks(
    b: npt.NDArray[np.float64],
    c: npt.NDArray[np.float64],
    b_problem: str | None,
    c_problem: str | None,
    s: AnalysisSettings,
) -> tuple[Check, Check, Check]:
    import numpy as np

    names = ("latency.location", "latency.spread", "latency.tail")
    problem = None
    if b_problem or c_problem:
        problem = "; ".join(
            f"{arm}: {p}" for arm, p in (("baseline", b_problem), ("candidate", c_problem)) if p
        )
    elif b.size < s.min_samples or c.size < s.min_samples:
        problem = f"latencies {b.size} baseline / {c.size} candidate, need {s.min_samples} each"
    if problem is not None:
        nb, nc = int(b.size), int(c.size)
        return (
            _insufficient(names[0], problem, s, nb, nc),
            _insufficient(names[1], problem, s, nb, nc),
            _insufficient(names[2], problem, s, nb, nc),
        )
    b, c = np.sort(b), np.sort(c)
    return _location(b, c, s), _spread(b, c, s), _tail(b, c, s)


def _quantile(
    x: npt.NDArray[np.float64], q: float | npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """``np.quantile`` (linear interpolation) of an already sorted array, without the
    partition ``np.quantile`` does again on every call."""
    import numpy as np

    pos = np.asarray(q, dtype=np.float64) * (x.size - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, x.size - 1)
    return np.asarray(x[lo] + (x[hi] - x[lo]) * (pos - lo), dtype=np.float64)


def _hodges_lehmann(b: npt.NDArray[np.float64], c: npt.NDArray[np.float64]) -> float:
    """Median of pairwise differences c - b, from at most _HL_POINTS quantiles per arm
    (sorted input; the quantile grid keeps it deterministic and fast)."""
    import numpy as np

    def grid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        if x.size <= _HL_POINTS:
            return x
        return _quantile(x, (np.arange(_HL_POINTS) + 0.5) / _HL_POINTS)

    return float(np.median(np.subtract.outer(grid(c), grid(b))))


def _location(b: npt.NDArray[np.float64], c: npt.NDArray[np.float64], s: AnalysisSettings) -> Check:
    tol, allow = s.latency_tolerance, s.latency_allowance_s
    # U of the candidate against the baseline slowed by the tolerance (and the absolute
    # allowance): above half its range means the candidate is slower than even that.
    u, p_fail, p_pass = _mann_whitney(c, b * (1 + tol) + allow)
    med_b = float(_quantile(b, 0.5))
    shift = _hodges_lehmann(b, c)
    rel = shift / med_b if med_b > 0 else (0.0 if shift == 0 else math.inf)
    regressed = rel > tol and shift > tol * med_b + allow
    outcome = _decide(p_fail, p_pass, regressed, s)
    detail = (
        f"candidate median {_ms(float(_quantile(c, 0.5)))} vs baseline {_ms(med_b)}; "
        f"Hodges-Lehmann shift {shift * 1000:+.3g} ms ({rel:+.0%}), limit +{tol:.0%} "
        f"and +{allow * 1000:g} ms"
    )
    return Check(
        "latency.location",
        outcome,
        u,
        p_fail,
        detail,
        p_value_pass=p_pass,
        effect=_finite(rel),
        threshold=tol,
        level=s.level,
        n_baseline=int(b.size),
        n_candidate=int(c.size),
        regressed=regressed,
    )


def _spread(b: npt.NDArray[np.float64], c: npt.NDArray[np.float64], s: AnalysisSettings) -> Check:
    import numpy as np

    tol = s.spread_tolerance
    lb, lc = np.log(np.maximum(b, _LOG_FLOOR)), np.log(np.maximum(c, _LOG_FLOOR))
    db, dc = np.abs(lb - _quantile(lb, 0.5)), np.abs(lc - _quantile(lc, 0.5))
    mb, mc = float(db.mean()), float(dc.mean())
    scaled = db * (1 + tol)
    t, p_fail, p_pass = _welch(dc, scaled)
    rel = mc / mb - 1 if mb > 0 else (0.0 if mc == 0 else math.inf)
    # a wider spread matters to users only where it makes answers slower by more than
    # the allowance: at the tail
    tq = s.tail_quantile
    grew = float(_quantile(c, tq)) - float(_quantile(b, tq)) > s.latency_allowance_s
    regressed = rel > tol and grew
    outcome = _decide(p_fail, p_pass, regressed, s)
    detail = (
        f"candidate spread (mean |log latency - median|) {mc:.3f} vs baseline {mb:.3f} "
        f"({rel:+.0%}), limit +{tol:.0%} (and the p{tq * 100:g} "
        f"+{s.latency_allowance_s * 1000:g} ms)"
    )
    return Check(
        "latency.spread",
        outcome,
        _finite(t),
        p_fail,
        detail,
        p_value_pass=p_pass,
        effect=_finite(rel),
        threshold=tol,
        level=s.level,
        n_baseline=int(b.size),
        n_candidate=int(c.size),
        regressed=regressed,
    )


def _exceedance_p(
    b: npt.NDArray[np.float64], c: npt.NDArray[np.float64], q: float
) -> tuple[int, int, float, float]:
    """Fisher's exact test of "more of c above the pooled threshold than chance".

    The threshold is the pooled sample's ``q`` quantile, lowered so that at least
    _MIN_EXCEEDANCES values lie above it: a function of the pooled values only, so
    under "same distribution" the candidate's count above it is hypergeometric given
    the pool. Returns (candidate above, pooled above, P(count >= x), P(count <= x)).
    """
    import numpy as np

    pooled = np.sort(np.concatenate([b, c]))
    n = pooled.size
    q_eff = min(q, 1.0 - _MIN_EXCEEDANCES / n) if n > _MIN_EXCEEDANCES else 0.5
    t = float(_quantile(pooled, q_eff))
    k = n - int(np.searchsorted(pooled, t, side="right"))
    x = c.size - int(np.searchsorted(c, t, side="right"))
    ge, le = _hypergeom_tails(x, n, k, c.size)
    return x, k, ge, le


def _hypergeom_tails(x: int, total: int, marked: int, drawn: int) -> tuple[float, float]:
    """P(X >= x) and P(X <= x) for X the marked items among ``drawn`` of ``total``."""
    import numpy as np
    from scipy import special

    if marked == 0:
        return 1.0, 1.0
    i = np.arange(max(0, drawn + marked - total), min(marked, drawn) + 1)
    log_pmf = (
        special.gammaln(marked + 1)
        - special.gammaln(i + 1)
        - special.gammaln(marked - i + 1)
        + special.gammaln(total - marked + 1)
        - special.gammaln(drawn - i + 1)
        - special.gammaln(total - marked - drawn + i + 1)
    )
    pmf = np.exp(log_pmf - log_pmf.max())
    whole = float(pmf.sum())
    return _p(float(pmf[i >= x].sum()) / whole), _p(float(pmf[i <= x].sum()) / whole)


def _tail(b: npt.NDArray[np.float64], c: npt.NDArray[np.float64], s: AnalysisSettings) -> Check:
    q, tol = s.tail_quantile, s.tail_tolerance
    qb, qc = float(_quantile(b, q)), float(_quantile(c, q))
    rel = qc / qb - 1 if qb > 0 else (0.0 if qc == 0 else math.inf)
    # Regression: against "same distribution" (exact), and the tail must also have grown
    # beyond the tolerance. Non-inferiority: the candidate beats the baseline slowed by
    # the tolerance, tested the same exact way.
    x, k, p_fail, _ = _exceedance_p(b, c, q)
    _, _, _, p_pass = _exceedance_p(b, c / (1 + tol), q)
    allow = s.latency_allowance_s
    regressed = rel > tol and qc - qb > tol * qb + allow
    outcome = _decide(p_fail, p_pass, regressed, s)
    label = f"p{q * 100:g}"
    detail = (
        f"candidate {label} {_ms(qc)} vs baseline {_ms(qb)} ({rel:+.0%}, limit +{tol:.0%} "
        f"and +{allow * 1000:g} ms); "
        f"{x} of the {k} slowest pooled latencies are the candidate's "
        f"({c.size} of {b.size + c.size})"
    )
    return Check(
        "latency.tail",
        outcome,
        float(x),
        p_fail,
        detail,
        p_value_pass=p_pass,
        effect=_finite(rel),
        threshold=tol,
        level=s.level,
        n_baseline=int(b.size),
        n_candidate=int(c.size),
        regressed=regressed,
    )


# -- predictions -----------------------------------------------------------------------


def _histogram(h: object) -> dict[str, int] | None:
    if not isinstance(h, Mapping):
        return None
    out: dict[str, int] = {}
    for k, v in h.items():
        n = _count(v)
        if n is None:
            return None
        out[str(k)] = out.get(str(k), 0) + n
    return out


def _pool_rare(table: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Pool the categories expected below 5 into one; fold that pool into the smallest
    other category while it is still too small (the chi-squared approximation needs it,
    and rare labels must not make an A/A comparison look significant)."""
    import numpy as np

    total = table.sum()
    rows_min = table.sum(axis=1).min()
    rare = table.sum(axis=0) * rows_min / total < _MIN_EXPECTED
    if not rare.any():
        return table
    out = np.concatenate([table[:, ~rare], table[:, rare].sum(axis=1, keepdims=True)], axis=1)
    while out.shape[1] > 1 and out[:, -1].sum() * rows_min / total < _MIN_EXPECTED:
        smallest = int(np.argmin(out[:, :-1].sum(axis=0)))
        merged = out[:, smallest] + out[:, -1]
        out = np.concatenate(
            [np.delete(out, [smallest, out.shape[1] - 1], axis=1), merged[:, None]], axis=1
        )
    return out


def _predictions(b: ArmSample, c: ArmSample, s: AnalysisSettings) -> Check:
    import numpy as np
    from scipy.spatial import distance

    name = "predictions"
    hb, hc = _histogram(b.predictions), _histogram(c.predictions)
    bad = [arm for arm, h in (("baseline", hb), ("candidate", hc)) if h is None]
    if bad:
        return _insufficient(
            name,
            f"{', '.join(bad)}.predictions has a count that is not a whole non-negative number",
            s,
        )
    assert hb is not None
    assert hc is not None
    nb, nc = sum(hb.values()), sum(hc.values())
    if nb == 0 and nc == 0:
        return _not_measured(name, "no prediction histogram on either arm")
    if nb < s.min_samples or nc < s.min_samples:
        return _insufficient(
            name,
            f"predictions {nb} baseline / {nc} candidate, need {s.min_samples} each",
            s,
            nb,
            nc,
        )
    keys = sorted(set(hb) | set(hc))
    rb = np.array([hb.get(k, 0) for k in keys], dtype=np.float64)
    rc = np.array([hc.get(k, 0) for k in keys], dtype=np.float64)
    pooled = _pool_rare(np.stack([rb, rc]))
    if pooled.shape[1] < 2:
        chi2, p = 0.0, 1.0
    else:
        chi2, p = _chi2(pooled)
    raw = _finite(float(distance.jensenshannon(rb / nb, rc / nc, base=2))) or 0.0
    # The plug-in distance of two samples of one distribution is not 0: its square (the
    # divergence) is biased up by about (K - 1)(1/n_b + 1/n_c) / (8 ln 2), 0.13 as a
    # distance for 6 labels and 100 answers a side. Without the correction the effect
    # size would not tell noise from drift at the sample sizes a canary step has.
    bias = (len(keys) - 1) * (1 / nb + 1 / nc) / (8 * math.log(2))
    js = math.sqrt(max(raw * raw - bias, 0.0))
    m = s.drift_margin
    if js > m and p < s.level:
        outcome: Outcome = "fail"
    elif js <= m / 2 and p >= s.level:
        # No equivalence test exists here; a small distance with no significant
        # difference is read as "no drift", which only allows an early advance.
        outcome = "pass"
    else:
        outcome = "continue"
    top_b = max(hb, key=lambda k: hb[k])
    detail = (
        f"Jensen-Shannon distance {js:.3f} (bias-corrected; raw {raw:.3f}) between the "
        "prediction histograms "
        f"(limit {m:g}, {len(keys)} labels; baseline's commonest {top_b!r}: "
        f"{hb[top_b] / nb:.0%} baseline, {hc.get(top_b, 0) / nc:.0%} candidate)"
    )
    return Check(
        name,
        outcome,
        _finite(chi2),
        p,
        detail,
        effect=js,
        threshold=m,
        level=s.level,
        n_baseline=nb,
        n_candidate=nc,
        regressed=js > m,
    )
