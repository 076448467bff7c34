"""Resilience policies: pure, synchronous, clock-injected state machines.

Owns: circuit breaker (``CircuitBreaker``), retry budget (``RetryBudget``), adaptive
concurrency limit (``AdaptiveLimit``), hedge timer (``HedgeTimer``), a timeout from
observed latency (``AdaptiveTimeout``), time-based EWMA (``Ewma``) and the outlier
ejection cap (``EjectionCap``). Each exposes ``statistics()``,
a frozen record with documented fields (``CircuitBreakerStatistics`` ...), as trio's
``LockStatistics``; JSON and ``/metrics`` are made from them at the edges.

Must never: do I/O, sleep, start threads or tasks, or read wall time. The async gateway
(``bastion.serve``) drives these objects; tests drive them with ``ManualClock``.
"""

from __future__ import annotations

from bastion.resilience._clock import Clock, ManualClock, monotonic
from bastion.resilience.breaker import BreakerState, CircuitBreaker, CircuitBreakerStatistics
from bastion.resilience.budget import RetryBudget, RetryBudgetStatistics
from bastion.resilience.ewma import Ewma, EwmaStatistics
from bastion.resilience.hedge import HedgeTimer, HedgeTimerStatistics
from bastion.resilience.limiter import AdaptiveLimit, AdaptiveLimitStatistics
from bastion.resilience.outlier import EjectionCap, EjectionCapStatistics
from bastion.resilience.timeout import AdaptiveTimeout, AdaptiveTimeoutStatistics

__all__ = [
    "AdaptiveLimit",
    "AdaptiveLimitStatistics",
    "AdaptiveTimeout",
    "AdaptiveTimeoutStatistics",
    "BreakerState",
    "CircuitBreaker",
    "CircuitBreakerStatistics",
    "Clock",
    "EjectionCap",
    "EjectionCapStatistics",
    "Ewma",
    "EwmaStatistics",
    "HedgeTimer",
    "HedgeTimerStatistics",
    "ManualClock",
    "RetryBudget",
    "RetryBudgetStatistics",
    "monotonic",
]
