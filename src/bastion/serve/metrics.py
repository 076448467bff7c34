"""Prometheus metrics for one gateway: per-backend requests, errors, latency histogram,
ejections, retries, hedges, breaker state and limits; gateway-wide shed requests,
responses by status class, the end-to-end request duration by route and status, the
admission queue's depth, the process's own ``process_*`` metrics and
``bastion_build_info``.

Owns: lock-free counters and a histogram updated on the request path, and a
``prometheus_client`` collector that turns them into metric families at scrape time, in a
private ``CollectorRegistry`` per gateway (several gateways may share a process).

Why not ``prometheus_client.Counter``/``Histogram`` on the request path: each update takes
a ``threading.Lock`` (they are built for threaded servers), and with five updates per
request that was a measurable share of the gateway's CPU per request. The gateway updates
its metrics from one event-loop thread only, so plain integers are exact; the library
still does the exposition format, names and types.

Exposition is negotiated as prometheus_client itself does it (``choose_encoder``): the
text format 0.0.4, or OpenMetrics when the scraper's ``Accept`` asks for it.

Must never: label by anything unbounded (request ids, user input: a route is the
matched route's pattern, or ``other``); be updated from a thread other than the
gateway's event loop.
"""

from __future__ import annotations

import bisect
import platform
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from bastion import __version__

if TYPE_CHECKING:
    from bastion.serve.pool import UpstreamStatistics

__all__ = ["BackendMetrics", "Count", "GatewayMetrics", "Histogram"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""End-to-end requests include queueing, retries, fallbacks and whole streams."""
_STATE = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


class Count:
    """A monotonically increasing count (one event-loop thread only)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class Histogram:
    """Latency histogram with fixed buckets; cumulative counts are built at scrape time."""

    __slots__ = ("buckets", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...] = _BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


class BackendMetrics:
    """The metrics of one backend."""

    __slots__ = ("ejections", "errors", "hedges", "latency", "requests", "retries")

    def __init__(self) -> None:
        self.requests = Count()
        self.errors = Count()
        self.ejections = Count()
        self.retries = Count()
        self.hedges = Count()
        self.latency = Histogram()


_COUNTERS = (
    ("requests", "bastion_gateway_backend_requests", "Attempts sent to a backend"),
    (
        "errors",
        "bastion_gateway_backend_errors",
        "Failed attempts (refused, timeout, 5xx, 429, malformed)",
    ),
    ("ejections", "bastion_gateway_backend_ejections", "Times a backend was ejected"),
    ("retries", "bastion_gateway_retries", "Retries and requeues sent to this backend"),
    ("hedges", "bastion_gateway_hedges", "Hedged attempts sent to this backend"),
)

_Rows = Callable[[], Iterable[tuple[str, BackendMetrics, "UpstreamStatistics"]]]


class _Exporter(Collector):
    def __init__(self, gateway: GatewayMetrics) -> None:
        self._gw = gateway

    def collect(self) -> Iterable[Metric]:
        gw = self._gw
        service = gw.service
        labels = ["service", "backend"]
        rows = list(gw.rows())
        for attr, name, doc in _COUNTERS:
            family = CounterMetricFamily(name, doc, labels=labels)
            for backend, metrics, _ in rows:
                family.add_metric([service, backend], getattr(metrics, attr).value)
            yield family
        latency = HistogramMetricFamily(
            "bastion_gateway_backend_latency_seconds",
            "Latency of successful attempts (time to first byte for streams)",
            labels=labels,
        )
        for backend, metrics, _ in rows:
            latency.add_metric(
                [service, backend], metrics.latency.cumulative(), metrics.latency.sum
            )
        yield latency
        state = GaugeMetricFamily(
            "bastion_gateway_breaker_state",
            "Breaker state per backend: 0 closed, 1 half_open, 2 open",
            labels=labels,
        )
        limit = GaugeMetricFamily(
            "bastion_gateway_concurrency_limit",
            "Adaptive concurrency limit per backend",
            labels=labels,
        )
        inflight = GaugeMetricFamily(
            "bastion_gateway_inflight", "Requests in flight per backend", labels=labels
        )
        for backend, _, stats in rows:
            state.add_metric([service, backend], _STATE.get(stats.breaker.state, 2.0))
            limit.add_metric([service, backend], stats.limit.limit)
            inflight.add_metric([service, backend], stats.limit.inflight)
        yield state
        yield limit
        yield inflight
        shed = CounterMetricFamily(
            "bastion_gateway_shed",
            "Requests refused by admission (queue full or timed out): saturated -> 429, "
            "no_backend -> 503",
            labels=["service", "reason"],
        )
        for reason, count in gw.shed.items():
            shed.add_metric([service, reason], count.value)
        yield shed
        responses = CounterMetricFamily(
            "bastion_gateway_responses",
            "Responses to clients by status class",
            labels=["service", "code"],
        )
        for code, count in gw.responses.items():
            responses.add_metric([service, code], count.value)
        yield responses
        duration = HistogramMetricFamily(
            "bastion_gateway_request_duration_seconds",
            "End-to-end time of client requests, from headers read to the last byte sent, "
            "by route and status",
            labels=["service", "route", "code"],
        )
        for (route, code), hist in list(gw.requests.items()):
            duration.add_metric([service, route, code], hist.cumulative(), hist.sum)
        yield duration
        queue = GaugeMetricFamily(
            "bastion_gateway_queue_depth",
            "Requests waiting in the admission queue for a free backend",
            labels=["service"],
        )
        queue.add_metric([service], float(gw.queue_depth()))
        yield queue
        info = GaugeMetricFamily(
            "bastion_build_info",
            "The Bastion build serving this gateway (always 1)",
            labels=["version", "python"],
        )
        info.add_metric([__version__, platform.python_version()], 1.0)
        yield info


class GatewayMetrics:
    def __init__(self, service: str = "") -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=False)
        self.shed = {"saturated": Count(), "no_backend": Count()}
        self.responses = {"2xx": Count(), "4xx": Count(), "5xx": Count()}
        self.requests: dict[tuple[str, str], Histogram] = {}
        self.rows: _Rows = lambda: ()
        self.queue_depth: Callable[[], int] = lambda: 0
        self.registry.register(_Exporter(self))
        ProcessCollector(registry=self.registry)

    def watch(self, rows: _Rows, queue_depth: Callable[[], int] | None = None) -> None:
        """Where the exporter finds the backends, (name, metrics, statistics) rows, and
        the admission queue's depth."""
        self.rows = rows
        if queue_depth is not None:
            self.queue_depth = queue_depth

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """A client request on ``route`` (a route pattern, never a raw path) ended with
        ``status`` after ``seconds``."""
        key = (route, str(status))
        hist = self.requests.get(key)
        if hist is None:
            hist = self.requests[key] = Histogram(_REQUEST_BUCKETS)
        hist.observe(seconds)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition, in the format ``accept`` (a scraper's Accept header) asks
        for: returns the body and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
