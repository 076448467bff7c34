"""A rollout's traffic split and what it measures: pure, on the gateway's event loop.

Owns: ``bucket`` (a request key to one of 10,000 buckets, stable for one rollout, so
one user sees one model, as Netflix's ChAP keeps a user in one arm), ``ArmRecorder``
(one arm's requests, errors, a uniform reservoir of latencies, the histogram of its
answers' predictions and its golden-probe counts; ``sample()`` gives the analysis its
``ArmSample``), ``prediction_of`` (an answer's prediction as a short text) and
``TrafficSplit``, the ``bastion.serve._split.Split`` the gateway consults.

How each strategy splits (``w``: the step's share in percent):

- canary: buckets below ``w`` go to the candidate (its first attempt measured as
  ``candidate``; should it fail, the stable set answers); the next ``min(w, 100 - w)``
  percent go to the stable set measured as ``baseline`` (the same share at the same
  time); the rest to the stable set, unmeasured.
- shadow: every request is answered by the stable set; buckets below ``w`` are measured
  as ``baseline`` and a copy goes to the candidate, measured as ``candidate``, then
  discarded. The client's latency is untouched: the copy leaves after the answer.
- blue-green, phase ``check``: shadow at 100%. Phase ``switched``: every request goes to
  the candidate (measured), a copy to the old set (the baseline, kept warm and ready).

Must never: block, do I/O, or let a measurement of one arm count for the other.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bastion.rollout._analysis import ArmSample
from bastion.serve._split import ArmStatistics, Assignment
from bastion.serve.pool import STABLE

if TYPE_CHECKING:
    from bastion.rollout._metrics import RolloutMetrics
    from bastion.serve.pool import Pool, Upstream

__all__ = ["BUCKETS", "ArmRecorder", "TrafficSplit", "bucket", "prediction_of"]

BUCKETS = 10_000
_RESERVOIR = 4096
_CATEGORIES = 64
_OTHER = "<other>"
_TEXT = 32

_CANDIDATE_FIRST = ("candidate", "stable")


def bucket(salt: bytes, key: str) -> int:
    """The bucket (0 to 9,999) of request key ``key`` in the rollout salted ``salt``."""
    digest = hashlib.blake2b(key.encode("utf-8", "replace"), digest_size=8, key=salt).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return value[:_TEXT]
    return json.dumps(value, sort_keys=True)[:_TEXT]


_NONE = object()


def _answer_of(body: bytes | None) -> Any:
    """An answer's prediction as its JSON value: a replica's first prediction, or the first
    choice's content; ``_NONE`` for an answer that has none (embeddings, not JSON)."""
    if not body:
        return _NONE
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return _NONE
    if not isinstance(obj, dict):
        return _NONE
    preds = obj.get("predictions")
    if isinstance(preds, list) and preds:
        return preds[0]
    choices = obj.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        first = choices[0]
        message = first.get("message")
        if isinstance(message, dict) and "content" in message:
            return message.get("content")
        if "text" in first:
            return first.get("text")
    return _NONE


def prediction_of(body: bytes | None) -> str | None:
    """An answer's prediction as a short text (a histogram's label), or None for an answer
    that has none."""
    value = _answer_of(body)
    return None if value is _NONE else _text(value)


def _numbers(value: Any) -> list[float] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [float(value)]
    if isinstance(value, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    ):
        return [float(v) for v in value]
    return None


class ArmRecorder:
    """One arm's measurements in the current step."""

    __slots__ = (
        "_rng",
        "_seen",
        "errors",
        "golden_right",
        "golden_total",
        "latencies",
        "predictions",
        "requests",
    )

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self.requests = 0
        self.errors = 0
        self.latencies: list[float] = []
        self._seen = 0
        self.predictions: dict[str, int] = {}
        self.golden_right = 0
        self.golden_total = 0

    def record(self, ok: bool, elapsed_s: float, body: bytes | None) -> None:
        self.requests += 1
        if not ok:
            self.errors += 1
            return
        # A uniform reservoir (Vitter's algorithm R): every success is equally likely to be
        # in it, however long the step runs, and memory stays bounded.
        self._seen += 1
        if len(self.latencies) < _RESERVOIR:
            self.latencies.append(elapsed_s)
        else:
            j = self._rng.randrange(self._seen)
            if j < _RESERVOIR:
                self.latencies[j] = elapsed_s
        label = prediction_of(body) if body is not None else "<no answer>"
        if label is None:
            return
        counts = self.predictions
        if label not in counts and len(counts) >= _CATEGORIES:
            label = _OTHER
        counts[label] = counts.get(label, 0) + 1

    def forget_latencies(self) -> None:
        """The warmup ended: its (cold) latencies leave the reservoir; the counts, errors,
        answers and golden probes stay, so no look after it starts from nothing."""
        self.latencies = []
        self._seen = 0

    def golden(self, right: int, total: int) -> None:
        self.golden_right += right
        self.golden_total += total

    def sample(self) -> ArmSample:
        return ArmSample(
            requests=self.requests,
            errors=self.errors,
            latencies_s=tuple(self.latencies),
            predictions=dict(self.predictions),
            golden_right=self.golden_right,
            golden_total=self.golden_total,
        )

    def statistics(self) -> ArmStatistics:
        lat = sorted(self.latencies)

        def q(p: float) -> float | None:
            if not lat:
                return None
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 3)

        return ArmStatistics(self.requests, self.errors, q(0.5), q(0.99))


class TrafficSplit:
    """The split of one rollout (see the module): ``weight`` and ``phase`` are set by the
    controller; the gateway calls ``assign``, ``record``, ``mirror_to`` and ``mirrored``."""

    def __init__(
        self,
        pool: Pool,
        *,
        rollout_id: str,
        strategy: str,
        sticky_header: str,
        tolerance: float = 1e-6,
        metrics: RolloutMetrics | None = None,
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.strategy = strategy
        self.sticky_header = sticky_header
        self.tolerance = tolerance
        self._salt = hashlib.blake2b(rollout_id.encode(), digest_size=16).digest()
        self.weight = 0.0
        self.phase = "check"  # blue-green: check (mirrored), then switched
        self.candidate = ArmRecorder(seed=1)
        self.baseline = ArmRecorder(seed=2)
        self.mirrored_n = 0
        self.agreed_exact = 0
        self.agreed_close = 0
        self._stable = Assignment(STABLE)
        self._status: Any = None

    # -- the controller's side ------------------------------------------------------------
    def reset(self) -> None:
        """A new step: fresh measurements for both arms."""
        self.candidate = ArmRecorder(seed=self.candidate.requests + 1)
        self.baseline = ArmRecorder(seed=self.baseline.requests + 2)

    def end_warmup(self) -> None:
        """The first step's warmup ended: both arms' latencies start again, warm."""
        self.candidate.forget_latencies()
        self.baseline.forget_latencies()

    @property
    def mirroring(self) -> bool:
        return self.strategy in {"shadow", "blue-green"}

    # -- the gateway's side ---------------------------------------------------------------
    def assign(self, headers: Mapping[str, str], remote: str | None) -> Assignment:
        strategy = self.strategy
        if strategy == "blue-green":
            if self.phase == "switched":
                return Assignment(_CANDIDATE_FIRST, "candidate", "candidate", mirror=True)
            return Assignment(STABLE, "stable", "baseline", mirror=True)
        key = headers.get(self.sticky_header) or remote or ""
        b = bucket(self._salt, key) * 100.0 / BUCKETS  # in [0, 100)
        w = self.weight
        if strategy == "shadow":
            if b < w:
                return Assignment(STABLE, "stable", "baseline", mirror=True)
            return self._stable
        if b < w:
            return Assignment(_CANDIDATE_FIRST, "candidate", "candidate")
        if b < w + min(w, 100.0 - w):
            return Assignment(STABLE, "stable", "baseline")
        return self._stable

    def record(
        self, assignment: Assignment, ok: bool, elapsed_s: float, body: bytes | None
    ) -> None:
        label = assignment.label or "baseline"
        (self.candidate if label == "candidate" else self.baseline).record(ok, elapsed_s, body)
        if self.metrics is not None:
            self.metrics.observe(label, ok, elapsed_s)

    def _mirror_arm(self) -> str:
        return (
            "stable"
            if self.strategy == "blue-green" and self.phase == "switched"
            else ("candidate")
        )

    def mirror_to(self) -> Upstream | None:
        return self.pool.pick((), (self._mirror_arm(),))

    def mirrored(
        self, ok: bool, elapsed_s: float, body: bytes | None, primary: bytes | None
    ) -> None:
        label = "baseline" if self._mirror_arm() == "stable" else "candidate"
        (self.baseline if label == "baseline" else self.candidate).record(ok, elapsed_s, body)
        self.mirrored_n += 1
        metrics = self.metrics
        if metrics is not None:
            metrics.observe(label, ok, elapsed_s)
            metrics.mirrored.inc()
        got, want = _answer_of(body), _answer_of(primary)
        if got is _NONE or want is _NONE:
            return
        if got == want and type(got) is type(want):
            self.agreed_exact += 1
            self.agreed_close += 1
            if metrics is not None:
                metrics.agreed.inc()
            return
        a, b = _numbers(got), _numbers(want)
        if (
            a is not None
            and b is not None
            and len(a) == len(b)
            and all(
                math.isclose(x, y, rel_tol=self.tolerance, abs_tol=self.tolerance)
                for x, y in zip(a, b, strict=True)
            )
        ):
            self.agreed_close += 1
            if metrics is not None:
                metrics.agreed.inc()

    def agreement(self) -> float | None:
        return round(self.agreed_close / self.mirrored_n, 4) if self.mirrored_n else None

    def statistics(self) -> Any:
        return self._status() if self._status is not None else None
