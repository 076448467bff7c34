"""Prometheus metrics for one gateway: per-backend counters, latency histogram, breaker
state, and gateway-wide retries, hedges and shed requests.

Owns: a private ``CollectorRegistry`` per gateway (several gateways may share a process,
e.g. in tests) and pre-resolved label children, so the per-request cost is one counter
increment and one histogram observation. Breaker state and limits are read from the
policies' ``statistics()`` at scrape time, not pushed per request.

Must never: create label children on the request path, or label by anything unbounded
(request ids, user input).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["BackendMetrics", "GatewayMetrics"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_STATE = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


class BackendMetrics:
    """Pre-resolved children for one backend."""

    __slots__ = ("ejections", "errors", "hedges", "latency", "requests", "retries")

    def __init__(self, gw: GatewayMetrics, service: str, backend: str) -> None:
        self.requests = gw.requests.labels(service, backend)
        self.errors = gw.errors.labels(service, backend)
        self.latency = gw.latency.labels(service, backend)
        self.ejections = gw.ejections.labels(service, backend)
        self.retries = gw.retries.labels(service, backend)
        self.hedges = gw.hedges.labels(service, backend)


class _StateCollector(Collector):
    def __init__(self, source: Callable[[], Iterable[tuple[str, str, dict[str, Any]]]]) -> None:
        self._source = source

    def collect(self) -> Iterable[GaugeMetricFamily]:
        state = GaugeMetricFamily(
            "bastion_gateway_breaker_state",
            "Breaker state per backend: 0 closed, 1 half_open, 2 open",
            labels=["service", "backend"],
        )
        limit = GaugeMetricFamily(
            "bastion_gateway_concurrency_limit",
            "Adaptive concurrency limit per backend",
            labels=["service", "backend"],
        )
        inflight = GaugeMetricFamily(
            "bastion_gateway_inflight",
            "Requests in flight per backend",
            labels=["service", "backend"],
        )
        for service, backend, stats in self._source():
            state.add_metric([service, backend], _STATE.get(stats["breaker"]["state"], 2.0))
            limit.add_metric([service, backend], stats["limit"]["limit"])
            inflight.add_metric([service, backend], stats["limit"]["inflight"])
        yield state
        yield limit
        yield inflight


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        labels = ["service", "backend"]
        r = self.registry
        self.requests = Counter(
            "bastion_gateway_backend_requests", "Attempts sent to a backend", labels, registry=r
        )
        self.errors = Counter(
            "bastion_gateway_backend_errors",
            "Failed attempts (refused, timeout, 5xx, 429, malformed)",
            labels,
            registry=r,
        )
        self.latency = Histogram(
            "bastion_gateway_backend_latency_seconds",
            "Latency of successful attempts",
            labels,
            buckets=_BUCKETS,
            registry=r,
        )
        self.ejections = Counter(
            "bastion_gateway_backend_ejections", "Times a backend was ejected", labels, registry=r
        )
        self.retries = Counter(
            "bastion_gateway_retries", "Retries sent to this backend", labels, registry=r
        )
        self.hedges = Counter(
            "bastion_gateway_hedges", "Hedged attempts sent to this backend", labels, registry=r
        )
        self.shed = Counter(
            "bastion_gateway_shed",
            "Requests refused by admission (queue full, queue timeout, no backend)",
            ["service", "reason"],
            registry=r,
        )
        self.client_responses = Counter(
            "bastion_gateway_responses",
            "Responses to clients by status class",
            ["service", "code"],
            registry=r,
        )

    def watch(self, source: Callable[[], Iterable[tuple[str, str, dict[str, Any]]]]) -> None:
        self.registry.register(_StateCollector(source))

    def backend(self, service: str, backend: str) -> BackendMetrics:
        return BackendMetrics(self, service, backend)

    def render(self) -> bytes:
        return generate_latest(self.registry)
