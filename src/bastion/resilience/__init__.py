"""Resilience policies: pure, synchronous, clock-injected state machines.

Owns: circuit breaker (``CircuitBreaker``), retry budget (``RetryBudget``), adaptive
concurrency limit (``AdaptiveLimit``), hedge timer (``HedgeTimer``), time-based EWMA
(``Ewma``) and the outlier ejection cap (``EjectionCap``). Each exposes ``statistics()``.

Must never: do I/O, sleep, start threads or tasks, or read wall time. The async gateway
(``bastion.serve``) drives these objects; tests drive them with ``ManualClock``.
"""

from __future__ import annotations

from bastion.resilience._clock import Clock, ManualClock, monotonic
from bastion.resilience.breaker import BreakerState, CircuitBreaker
from bastion.resilience.budget import RetryBudget
from bastion.resilience.ewma import Ewma
from bastion.resilience.hedge import HedgeTimer, parse_hedge
from bastion.resilience.limiter import AdaptiveLimit
from bastion.resilience.outlier import EjectionCap

__all__ = [
    "AdaptiveLimit",
    "BreakerState",
    "CircuitBreaker",
    "Clock",
    "EjectionCap",
    "Ewma",
    "HedgeTimer",
    "ManualClock",
    "RetryBudget",
    "monotonic",
    "parse_hedge",
]
