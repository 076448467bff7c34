"""Prometheus metrics of a service's rollouts, per arm, in its gateway's registry.

Owns: the counts the rollout's arms add to on the request path (plain integers and a
``bastion.serve.metrics.Histogram`` per arm: the gateway's one event-loop thread updates
them, as its own metrics are updated) and the collector that exposes them at scrape time:

- ``bastion_rollout_requests_total{service,arm,result}``: measured first attempts of the
  ``candidate`` and ``baseline`` arms, ``result`` ``ok`` or ``error``;
- ``bastion_rollout_latency_seconds{service,arm}``: their latency (a histogram);
- ``bastion_rollout_mirrored_total{service}``, ``bastion_rollout_agreed_total{service}``:
  shadow copies sent, and those whose answer agreed with the client's;
- ``bastion_rollout_verdicts_total{service,outcome}``: analyses by outcome;
- ``bastion_rollout_weight{service}``: the candidate's share of traffic now, in percent
  (0 with no rollout in progress); ``bastion_rollout_step{service}``: the step's index.

Counts are kept for the gateway's life, across rollouts, so they only rise.

Must never: label by anything unbounded (arms and outcomes are fixed sets).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from bastion.serve.metrics import Count, Histogram

__all__ = ["RolloutMetrics"]

ARMS = ("candidate", "baseline")
OUTCOMES = ("pass", "continue", "insufficient", "fail")


class RolloutMetrics(Collector):
    """One service's rollout metrics (register with the gateway's registry)."""

    def __init__(self, service: str, now: Callable[[], tuple[float, int]]) -> None:
        self.service = service
        self.now = now  # (weight, step) of the rollout in progress
        self.ok = {arm: Count() for arm in ARMS}
        self.errors = {arm: Count() for arm in ARMS}
        self.latency = {arm: Histogram() for arm in ARMS}
        self.mirrored = Count()
        self.agreed = Count()
        self.verdicts = {outcome: Count() for outcome in OUTCOMES}

    def observe(self, arm: str, ok: bool, elapsed_s: float) -> None:
        if ok:
            self.ok[arm].inc()
            self.latency[arm].observe(elapsed_s)
        else:
            self.errors[arm].inc()

    def collect(self) -> Iterable[Metric]:
        service = self.service
        requests = CounterMetricFamily(
            "bastion_rollout_requests",
            "Measured first attempts of a rollout's arms",
            labels=["service", "arm", "result"],
        )
        latency = HistogramMetricFamily(
            "bastion_rollout_latency_seconds",
            "Latency of a rollout's arms' successful measured attempts",
            labels=["service", "arm"],
        )
        for arm in ARMS:
            requests.add_metric([service, arm, "ok"], self.ok[arm].value)
            requests.add_metric([service, arm, "error"], self.errors[arm].value)
            hist = self.latency[arm]
            latency.add_metric([service, arm], hist.cumulative(), hist.sum)
        yield requests
        yield latency
        mirrored = CounterMetricFamily(
            "bastion_rollout_mirrored", "Shadow copies sent to a candidate", labels=["service"]
        )
        mirrored.add_metric([service], self.mirrored.value)
        yield mirrored
        agreed = CounterMetricFamily(
            "bastion_rollout_agreed",
            "Shadow copies whose answer agreed with the client's",
            labels=["service"],
        )
        agreed.add_metric([service], self.agreed.value)
        yield agreed
        verdicts = CounterMetricFamily(
            "bastion_rollout_verdicts", "Rollout analyses by outcome", labels=["service", "outcome"]
        )
        for outcome, count in self.verdicts.items():
            verdicts.add_metric([service, outcome], count.value)
        yield verdicts
        weight, step = self.now()
        gauge = GaugeMetricFamily(
            "bastion_rollout_weight",
            "The candidate's share of traffic now, in percent (0: no rollout in progress)",
            labels=["service"],
        )
        gauge.add_metric([service], weight)
        yield gauge
        steps = GaugeMetricFamily(
            "bastion_rollout_step", "The rollout's current step (0-based)", labels=["service"]
        )
        steps.add_metric([service], step)
        yield steps
