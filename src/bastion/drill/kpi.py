"""The control twin (Netflix ChAP): the same load on an experiment twin and a control
twin, their KPIs compared side by side, and the experiment stopped when they diverge.

Owns: ``KpiBounds`` (how far apart the two may drift), ``KpiComparison`` (two open-loop
loads of the same seeded requests, one per gateway, and a watcher comparing the last
window of each), and ``summary``, what the drill's journal shows (``bastion.kpis``):
each twin's error rate, latency p99 and goodput over the run and per window, and the
divergence, if any, by name.

The comparison is made on windows (``window_s``), each judged only with at least
``min_requests`` answers on both sides; the experiment is stopped when ``windows``
windows in a row diverge (one noisy window is not a divergence). Divergence is:

- ``error rate``: the experiment's share of failed requests above the control's by more
  than ``max_error_rate_delta``;
- ``latency p99``: the experiment's p99 above ``max_p99_ratio`` times the control's and
  more than ``min_p99_delta_ms`` above it (a ratio of two tiny numbers is noise);
- ``goodput``: the experiment's good answers per second below ``min_goodput_ratio`` of
  the control's.

Must never: send to anything but the two gateways it is given, or call a divergence on
a window too small to judge.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from bastion.errors import UsageError

__all__ = ["KpiBounds", "KpiComparison", "Kpis", "diverged"]


@dataclass(frozen=True)
class KpiBounds:
    """How far the experiment's KPIs may drift from the control's before it is stopped."""

    max_error_rate_delta: float = 0.05
    max_p99_ratio: float = 3.0
    min_p99_delta_ms: float = 50.0
    min_goodput_ratio: float = 0.7
    window_s: float = 1.0
    windows: int = 2
    min_requests: int = 10

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.windows < 1 or self.min_requests < 1:
            raise UsageError(
                "drill --control: window_s must be positive, windows and min_requests >= 1"
            )


@dataclass(frozen=True)
class Kpis:
    """One side's KPIs over some span: requests answered, the error rate, p99 (ms) of
    the good answers, and goodput (good answers a second)."""

    requests: int
    failed: int
    error_rate: float | None
    p99_ms: float | None
    goodput_rps: float


def _kpis(samples: list[tuple[float, bool, float]], span_s: float) -> Kpis:
    good = sorted(ms for _, ok, ms in samples if ok)
    failed = sum(1 for _, ok, _ in samples if not ok)
    p99 = good[min(len(good) - 1, int(0.99 * len(good)))] if good else None
    return Kpis(
        requests=len(samples),
        failed=failed,
        error_rate=round(failed / len(samples), 4) if samples else None,
        p99_ms=round(p99, 3) if p99 is not None else None,
        goodput_rps=round(len(good) / span_s, 3) if span_s > 0 else 0.0,
    )


def diverged(exp: Kpis, ctl: Kpis, bounds: KpiBounds) -> str | None:
    """Why the experiment's window differs from the control's beyond ``bounds`` (None:
    it does not, or the window is too small to say)."""
    if exp.requests < bounds.min_requests or ctl.requests < bounds.min_requests:
        return None
    assert exp.error_rate is not None
    assert ctl.error_rate is not None
    if exp.error_rate - ctl.error_rate > bounds.max_error_rate_delta:
        return (
            f"error rate {exp.error_rate:.1%} on the experiment against {ctl.error_rate:.1%} "
            f"on the control (bound +{bounds.max_error_rate_delta:.1%})"
        )
    if (
        exp.p99_ms is not None
        and ctl.p99_ms is not None
        and (
            exp.p99_ms > bounds.max_p99_ratio * ctl.p99_ms
            and exp.p99_ms - ctl.p99_ms > bounds.min_p99_delta_ms
        )
    ):
        return (
            f"latency p99 {exp.p99_ms:.0f} ms on the experiment against "
            f"{ctl.p99_ms:.0f} ms on the control (bound {bounds.max_p99_ratio:g}x)"
        )
    if ctl.goodput_rps > 0 and exp.goodput_rps < bounds.min_goodput_ratio * ctl.goodput_rps:
        return (
            f"goodput {exp.goodput_rps:.1f}/s on the experiment against "
            f"{ctl.goodput_rps:.1f}/s on the control (bound {bounds.min_goodput_ratio:.0%})"
        )
    return None


@dataclass
class _Side:
    listen: str
    samples: list[tuple[float, bool, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class KpiComparison:
    """Send the same requests at ``rate`` a second to both gateways (``host:port``) and
    compare their KPIs every window; ``on_diverge(reason)`` is called once, on the
    first divergence that lasts ``bounds.windows`` windows."""

    def __init__(
        self,
        experiment: str,
        control: str,
        *,
        rate: float = 20.0,
        path: str = "/v1/predict",
        body: dict[str, Any] | None = None,
        seed: int = 0,
        bounds: KpiBounds | None = None,
        on_diverge: Callable[[str], None] | None = None,
        timeout_s: float = 2.0,
    ) -> None:
        if rate <= 0:
            raise UsageError("drill --control: the load's rate must be positive (e.g. 20)")
        if experiment == control:
            raise UsageError(
                f"drill --control: the control twin's gateway is the experiment's ({control}); "
                "a control twin is another twin (bastion twin up --name control)"
            )
        self.sides = {"experiment": _Side(experiment), "control": _Side(control)}
        self.rate = rate
        self.path = path
        rng = random.Random(seed)
        if body is None:
            self._bodies = [
                json.dumps({"inputs": [round(rng.random() * 16, 3) for _ in range(64)]}).encode()
                for _ in range(64)
            ]
        else:
            self._bodies = [json.dumps(body).encode()]
        self.bounds = bounds or KpiBounds()
        self.on_diverge = on_diverge
        self.timeout_s = timeout_s
        self.divergence: str | None = None
        self.diverged_at_s: float | None = None
        self.windows: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = 0.0
        self._ended: float | None = None

    # -- the load ---------------------------------------------------------------------
    def _load(self, side: _Side) -> None:
        host, _, port = side.listen.rpartition(":")
        local = threading.local()
        opened: list[http.client.HTTPConnection] = []  # closed when the load ends

        def send(i: int, due: float) -> None:
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the schedule itself, not synchronisation
            if self._stop.is_set():
                return
            t0 = time.perf_counter()
            ok = False
            conn = getattr(local, "conn", None)
            try:
                if conn is None:
                    conn = local.conn = http.client.HTTPConnection(
                        host, int(port), timeout=self.timeout_s
                    )
                    with side.lock:
                        opened.append(conn)
                conn.request(
                    "POST",
                    self.path,
                    body=self._bodies[i % len(self._bodies)],
                    headers={"Content-Type": "application/json"},
                )
                answer = conn.getresponse()
                answer.read()
                ok = 200 <= answer.status < 300
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                local.conn = None
            ms = (time.perf_counter() - t0) * 1000
            with side.lock:
                side.samples.append((time.monotonic(), ok, ms))

        workers = min(32, max(2, int(self.rate // 5) + 2))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            i = 0
            while not self._stop.is_set():
                due = self._started + i / self.rate
                # submit a little ahead of time, never far (the pool would pile up)
                self._stop.wait(max(0.0, due - time.monotonic() - 0.05))
                if self._stop.is_set():
                    break
                pool.submit(send, i, due)
                i += 1
        for conn in opened:
            conn.close()

    # -- the comparison ---------------------------------------------------------------
    def _window(self, since: float, until: float) -> dict[str, Kpis]:
        out = {}
        for name, side in self.sides.items():
            with side.lock:
                picked = [s for s in side.samples if since <= s[0] < until]
            out[name] = _kpis(picked, until - since)
        return out

    def _watch(self) -> None:
        bounds = self.bounds
        streak = 0
        since = time.monotonic()
        while not self._stop.wait(max(0.0, since + bounds.window_s - time.monotonic())):
            until = since + bounds.window_s
            look = self._window(since, until)
            why = diverged(look["experiment"], look["control"], bounds)
            self.windows.append(
                {
                    "at_s": round(until - self._started, 3),
                    **{k: asdict(v) for k, v in look.items()},
                    "diverged": why,
                }
            )
            streak = streak + 1 if why else 0
            if why and streak >= bounds.windows and self.divergence is None:
                self.divergence = why
                self.diverged_at_s = round(until - self._started, 3)
                if self.on_diverge is not None:
                    self.on_diverge(why)
            since = until

    def start(self) -> KpiComparison:
        self._started = time.monotonic()
        for name, side in self.sides.items():
            thread = threading.Thread(
                target=self._load, args=(side,), name=f"bastion-kpi-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        watcher = threading.Thread(target=self._watch, name="bastion-kpi-watch", daemon=True)
        watcher.start()
        self._threads.append(watcher)
        return self

    def stop(self) -> dict[str, Any]:
        """Stop the loads and the watcher; the summary (see ``summary``)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads = []
        self._ended = time.monotonic()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """Both twins' KPIs over the whole run, side by side, each window's, and the
        divergence that stopped the experiment (None: they never diverged)."""
        end = self._ended or time.monotonic()
        whole = self._window(self._started, end + 1)
        span = max(end - self._started, 1e-9)
        for name in whole:  # goodput over the run's span, not the window's extra second
            k = whole[name]
            good = k.requests - k.failed
            whole[name] = Kpis(k.requests, k.failed, k.error_rate, k.p99_ms, round(good / span, 3))
        return {
            "experiment": {
                "listen": self.sides["experiment"].listen,
                **asdict(whole["experiment"]),
            },
            "control": {"listen": self.sides["control"].listen, **asdict(whole["control"])},
            "rate": self.rate,
            "bounds": asdict(self.bounds),
            "divergence": self.divergence,
            "diverged_at_s": self.diverged_at_s,
            "windows": self.windows,
        }
