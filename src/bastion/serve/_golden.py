"""Golden probes: known questions with known answers, asked of every backend on a schedule.

Owns: the golden set (inputs and expected answers, read from a verified vault dataset
snapshot), judging one backend's answers against it (``GoldenSet.judge``, pure), and the
probe loop (``GoldenProber``) that asks each backend every ``every_s``, ejects one that
answers 200 but wrongly, and lets it rejoin only once its answers are right again.

A health probe (``/health``) sees a process that is up; it cannot see a replica serving
the wrong model, a stale one, or one whose weights rotted. A golden probe sends real
inference requests (``POST /v1/predict``, the replica's route) with the header
``x-bastion-probe: golden`` so a backend and its logs can tell them from user traffic.
They never go through the gateway's request path: they are not counted in its request,
error or latency metrics, spend no retry budget and are never retried elsewhere; they
have their own metrics (``bastion_golden_probes_total{result=right|wrong|no_answer}``,
``bastion_golden_failing``).

The same model gives the same answers to the same inputs, so a whole golden set sent each
round gives a stable judgement, not a sample that flaps: a backend fails a round when
more than ``tolerance`` of the examples are answered differently from expected (or the
answer is not 200, not JSON, or the wrong length). A backend that does not answer at all
(refused, timed out) is the health probe's to eject; a golden round leaves it as it was.
While the loop runs, a backend coming back after it was down (a restarted replica, a new
one) is held out after its health probe passes until a golden round says its answers
are right, so a replica that restarted on a swapped model never serves a user request;
``held_s`` in ``serve.golden.failed`` is how long it waited for that verdict.

Must never: eject beyond the pool's ejection cap (a golden set that every backend fails
says more about the set than the backends: the event says so and nothing is ejected);
start with an empty golden set (that would pass everything); touch the pool from another
thread (it runs on the gateway's event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bastion import event_kinds as ek
from bastion.errors import UsageError
from bastion.serve.pool import REJOINING

if TYPE_CHECKING:
    from bastion.manifest import Manifest
    from bastion.serve.gateway import Gateway
    from bastion.serve.pool import Upstream
    from bastion.validate import Table
    from bastion.vault import Vault

__all__ = [
    "GOLDEN_HEADER",
    "GoldenCheck",
    "GoldenProber",
    "GoldenSet",
    "GoldenStatistics",
    "load_golden",
]

#: the header every golden request carries (value ``golden``)
GOLDEN_HEADER = "x-bastion-probe"
_SHOWN = 5


def _answer(value: Any) -> str:
    """An answer as text, so ``3``, ``3.0`` and ``"3"`` compare equal."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True, slots=True)
class GoldenCheck:
    """One backend's answers to one golden round.

    ``ok``: it answered 200 with at most ``tolerance`` of the examples wrong; ``answered``:
    False when it gave no answer at all (refused, timed out: then ``ok`` is False and the
    round decides nothing). ``wrong`` of ``total`` examples differed; ``examples``: the
    first few, as ``(index, expected, got)``; ``detail`` says what was wrong in words.
    """

    backend: str
    ok: bool
    answered: bool
    wrong: int
    total: int
    detail: str
    examples: tuple[tuple[int, str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class GoldenSet:
    """Inputs and their expected answers. ``body`` is the request, made once."""

    ref: str
    inputs: tuple[tuple[float, ...], ...]
    expected: tuple[str, ...]
    body: bytes = field(repr=False, default=b"")

    @classmethod
    def from_table(cls, table: Table, *, ref: str, label: str = "label") -> GoldenSet:
        """Every column but ``label`` is an input feature, in the table's order; ``label``
        holds the expected answers. ``UsageError`` when empty or not numeric."""
        if label not in table.names:
            raise UsageError(
                f"golden set {ref}: no label column {label!r} (columns: "
                f"{', '.join(table.names[:8])}); set services.<s>.golden.label"
            )
        if table.rows == 0:
            raise UsageError(
                f"golden set {ref} has no rows: an empty golden set would pass every backend; "
                "point services.<s>.golden.ref at a snapshot with examples"
            )
        features = [n for n in table.names if n != label]
        if not features:
            raise UsageError(f"golden set {ref}: no input columns besides {label!r}")
        columns = []
        for name in features:
            numbers = table.numbers(name)
            if not np.isfinite(numbers.values).all():
                raise UsageError(
                    f"golden set {ref}: column {name!r} is not all finite numbers; a golden "
                    "request must be well formed"
                )
            columns.append(numbers.values)
        rows = tuple(tuple(float(c[i]) for c in columns) for i in range(table.rows))
        answers = table.numbers(label)
        if np.isfinite(answers.values).all():  # numbers, however the file wrote them
            expected = tuple(_answer(float(v)) for v in answers.values)
        else:
            cells, _ = table.text(label)
            expected = tuple(_answer(v) for v in cells)
        body = json.dumps({"inputs": [list(r) for r in rows]}).encode()
        return cls(ref, rows, expected, body)

    def __len__(self) -> int:
        return len(self.expected)

    def judge(
        self, backend: str, status: int, payload: bytes, *, tolerance: float = 0.0
    ) -> GoldenCheck:
        """Whether ``payload`` (a ``/v1/predict`` answer with HTTP ``status``) answers the
        set: at most ``tolerance`` (a fraction) of the examples wrong."""
        total = len(self.expected)

        def failed(detail: str) -> GoldenCheck:
            return GoldenCheck(backend, False, True, total, total, detail)

        if status != 200:
            return failed(f"answered status {status}")
        try:
            doc = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return failed("answered 200 with a body that is not JSON")
        predictions = doc.get("predictions") if isinstance(doc, dict) else None
        if not isinstance(predictions, list):
            return failed("answered 200 without a predictions list")
        if len(predictions) != total:
            return failed(f"answered {len(predictions)} predictions for {total} inputs")
        wrong = [
            (i, want, got)
            for i, (want, got) in enumerate(
                zip(self.expected, map(_answer, predictions), strict=True)
            )
            if want != got
        ]
        ok = len(wrong) <= math.floor(tolerance * total + 1e-9)
        detail = f"{len(wrong)} of {total} golden answers wrong" + (
            f" (tolerance {tolerance:g})" if tolerance else ""
        )
        return GoldenCheck(backend, ok, True, len(wrong), total, detail, tuple(wrong[:_SHOWN]))


def load_golden(vault: Vault, ref: str, *, label: str = "label") -> GoldenSet:
    """The golden set in dataset snapshot ``ref`` (every tabular file, verified by the
    vault on the way)."""
    from bastion.validate import Table, load_dataset

    snap, parts = load_dataset(vault, ref)
    return GoldenSet.from_table(Table.concat(parts, source=snap.ref), ref=snap.ref, label=label)


@dataclass(frozen=True, slots=True)
class GoldenStatistics:
    """The probe loop of one service.

    Attributes:
        service: the service.
        golden: the golden set's snapshot ref.
        examples: examples in it.
        every_s: seconds between rounds for each backend.
        rounds: golden rounds sent, by backend.
        wrong_rounds: rounds a backend answered wrongly, by backend.
        failing: backends whose last answered round was wrong (held out while the cap
            allows).
    """

    service: str
    golden: str
    examples: int
    every_s: float
    rounds: dict[str, int]
    wrong_rounds: dict[str, int]
    failing: tuple[str, ...]


class _Exporter(Collector):
    def __init__(self, prober: GoldenProber) -> None:
        self._prober = prober

    def collect(self) -> Iterable[Metric]:
        p = self._prober
        probes = CounterMetricFamily(
            "bastion_golden_probes",
            "Golden probe rounds sent to a backend, by result (right, wrong, no_answer); "
            "never counted in the gateway's request metrics",
            labels=["service", "backend", "result"],
        )
        for (backend, result), n in sorted(p.counts.items()):
            probes.add_metric([p.service, backend, result], n)
        yield probes
        failing = GaugeMetricFamily(
            "bastion_golden_failing",
            "1 while a backend's last answered golden round was wrong",
            labels=["service", "backend"],
        )
        for backend in sorted({b for b, _ in p.counts}):
            failing.add_metric([p.service, backend], 1.0 if backend in p.failing else 0.0)
        yield failing


class GoldenProber:
    """Ask each backend of ``gateway`` the ``golden`` set every ``every_s`` seconds.

    ``await start()`` on the gateway's event loop (after the gateway started), ``await
    close()`` before it closes. ``backends``: the upstream groups (manifest backend
    names) to probe; None: every ``local`` upstream (replicas speak ``/v1/predict``;
    a remote vendor does not). ``tolerance``: the fraction of examples a backend may
    answer differently and still pass. ``timeout_s``: for one round's answer.
    """

    def __init__(
        self,
        gateway: Gateway,
        golden: GoldenSet,
        *,
        every_s: float = 5.0,
        tolerance: float = 0.0,
        timeout_s: float = 2.0,
        path: str = "/v1/predict",
        backends: Sequence[str] | None = None,
    ) -> None:
        if not len(golden):
            raise UsageError(f"golden set {golden.ref} is empty; it would pass every backend")
        if every_s <= 0 or not 0 <= tolerance < 1:
            raise UsageError(
                f"golden probes: every_s must be > 0 and tolerance in [0, 1) "
                f"(got {every_s}, {tolerance})"
            )
        self.gateway = gateway
        self.service = gateway.service
        self.golden = golden
        self.every_s = every_s
        self.tolerance = tolerance
        self.timeout_s = timeout_s
        self.path = path
        self.backends = set(backends) if backends is not None else None
        self.counts: dict[tuple[str, str], int] = {}
        self.failing: set[str] = set()
        self._last: dict[str, float] = {}
        self._held_since: dict[str, float] = {}
        # told of every answered round (a rollout counts its arms' golden answers)
        self.observers: list[Callable[[Upstream, GoldenCheck], None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        gateway.metrics.registry.register(_Exporter(self))

    @classmethod
    def from_manifest(cls, gateway: Gateway, manifest: Manifest) -> GoldenProber | None:
        """The probe loop ``services.<gateway's service>.golden`` asks for (None without
        one), its golden set read from the manifest's vault now: a missing, unreadable or
        empty set is an error before anything is served."""
        config = manifest.services[gateway.service].golden
        if config is None:
            return None
        from bastion.vault import Vault

        golden = load_golden(Vault.from_manifest(manifest), config.ref, label=config.label)
        return cls(
            gateway,
            golden,
            every_s=config.every_s,
            tolerance=config.tolerance,
            timeout_s=config.timeout_ms / 1000,
            backends=config.backends,
        )

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        self._session = aiohttp.ClientSession(skip_auto_headers=("User-Agent",))
        self.gateway.pool.hold_rejoin = self._probed
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        self.gateway.pool.hold_rejoin = lambda _up: False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the loop -----------------------------------------------------------------------
    def _probed(self, up: Upstream) -> bool:
        if self.backends is None:
            return up.spec.kind == "local"
        return up.spec.group in self.backends or up.name in self.backends

    def _due(self, now: float) -> list[Upstream]:
        due = []
        for up in list(self.gateway.pool.upstreams.values()):
            if not self._probed(up) or up.needs_probe:
                continue  # not up at all: the health probe's business, not ours
            last = self._last.get(up.name)
            held = up.wrong == REJOINING
            if held:
                self._held_since.setdefault(up.name, now)
            # a backend waiting to rejoin is asked at once (and again each tick until it
            # answers); one that (re)joined since its last round, too
            rejoined = last is not None and up.ejected_at > last and not up.wrong
            if held or last is None or rejoined or now - last >= self.every_s:
                self._last[up.name] = now
                due.append(up)
        return due

    async def _loop(self) -> None:
        clock = self.gateway.pool.clock
        while True:
            due = self._due(clock())
            if due:
                checks = await asyncio.gather(*(self.check(up) for up in due))
                for up, check in zip(due, checks, strict=True):
                    if up.name in self.gateway.pool.upstreams:
                        self._apply(up, check)
            await asyncio.sleep(min(0.1, self.every_s / 4))

    async def check(self, up: Upstream) -> GoldenCheck:
        """One golden round against ``up`` (no state changes: see ``_apply``)."""
        session = self._session
        if session is None:
            raise RuntimeError("GoldenProber.check before start()")
        headers = {"Content-Type": "application/json", GOLDEN_HEADER: "golden"}
        if up.auth_header:
            headers["Authorization"] = up.auth_header
        try:
            async with session.post(
                up.spec.url + self.path,
                data=self.golden.body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            ) as resp:
                payload = await resp.read()
                status = resp.status
            if self.gateway.cost is not None:  # a golden round on a priced backend is paid
                self.gateway.cost.probe(up, len(self.golden.body), status, payload)
        except TimeoutError:
            return self._no_answer(up, f"no answer in {self.timeout_s * 1000:.0f} ms")
        except (aiohttp.ClientError, OSError) as exc:
            return self._no_answer(up, type(exc).__name__)
        return self.golden.judge(up.name, status, payload, tolerance=self.tolerance)

    def _no_answer(self, up: Upstream, detail: str) -> GoldenCheck:
        return GoldenCheck(up.name, False, False, 0, len(self.golden), detail)

    def _count(self, backend: str, result: str) -> None:
        key = (backend, result)
        self.counts[key] = self.counts.get(key, 0) + 1

    def _apply(self, up: Upstream, check: GoldenCheck) -> None:
        """Act on one round: eject a backend that answered wrongly, restore one that
        answers right again, leave one that did not answer as it was."""
        pool = self.gateway.pool
        if not check.answered:
            self._count(up.name, "no_answer")
            return
        for observe in self.observers:
            observe(up, check)
        self._count(up.name, "right" if check.ok else "wrong")
        since = self._held_since.pop(up.name, None)
        held_s = round(pool.clock() - since, 3) if since is not None else None
        if check.ok:
            if up.name in self.failing:
                self.failing.discard(up.name)
                self.gateway.record(
                    ek.SERVE_GOLDEN_PASSED,
                    backend=up.name,
                    golden=self.golden.ref,
                    total=check.total,
                    wrong=check.wrong,
                )
            pool.restore_right(up)
            return
        first = up.name not in self.failing
        self.failing.add(up.name)
        ejected = pool.eject_wrong(up, f"golden probe: {check.detail}")
        if first:
            self.gateway.record(
                ek.SERVE_GOLDEN_FAILED,
                backend=up.name,
                golden=self.golden.ref,
                wrong=check.wrong,
                total=check.total,
                detail=check.detail,
                ejected=ejected,
                held_s=held_s,
                examples=[list(e) for e in check.examples],
            )

    def statistics(self) -> GoldenStatistics:
        rounds: dict[str, int] = {}
        wrong: dict[str, int] = {}
        for (backend, result), n in self.counts.items():
            rounds[backend] = rounds.get(backend, 0) + n
            if result == "wrong":
                wrong[backend] = wrong.get(backend, 0) + n
        return GoldenStatistics(
            service=self.service,
            golden=self.golden.ref,
            examples=len(self.golden),
            every_s=self.every_s,
            rounds=rounds,
            wrong_rounds=wrong,
            failing=tuple(sorted(self.failing)),
        )
