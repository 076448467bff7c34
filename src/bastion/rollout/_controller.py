"""The rollout controller: one service's rollouts, on its gateway's event loop.

Owns: starting a rollout (the candidate snapshot verified and loadable, its replicas
started from it through the same ``ReplicaSet`` and supervision as the stable ones),
the analysis loop (every ``interval_s``: ``judge`` the candidate against the baseline,
record the verdict as an event with its statistics, then advance, hold, extend, roll
back or promote), promotion (``@prod`` moves through the validation gate,
``bastion.validate.promote``; the candidate's replicas become the stable set and the
old ones drain, then stop), rollback (the candidate's share goes to 0 at once, its
replicas drain, then stop; ``@prod`` stays), its durable record (``_state``: a restarted
gateway resumes the rollout at its step) and the gateway routes ``bastion rollout``
talks to: ``GET /bastion/rollout``, ``POST /bastion/rollout`` (start),
``POST /bastion/rollout/promote``, ``POST /bastion/rollout/abort``.

A step's life: it lasts ``looks_per_step`` intervals; a failing verdict rolls back at
once; a passing one (a clear win) advances early, except in blue-green's switched phase
(a bake of its planned looks); ``continue`` advances at the step's end (no evidence of
a regression) unless a check's point estimate is beyond its tolerance (``regressed``),
which extends the step by one interval, at most ``max_extensions`` times, then rolls
back; ``insufficient`` (too few requests per arm, NaN or missing data) extends the step
the same way, then the rollout is aborted, never promoted.

Must never: promote on insufficient evidence or without the validation gate's pass;
stop a replica with requests in flight on it before they end (or the gateway's
deadline passes); touch the pool from another thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bastion import event_kinds as ek
from bastion.errors import BastionError, NotFoundError, UsageError
from bastion.rollout._analysis import AnalysisSettings, Verdict, judge
from bastion.rollout._metrics import RolloutMetrics
from bastion.rollout._state import ACTIVE, RolloutRecord, read_record, write_record
from bastion.rollout._traffic import TrafficSplit
from bastion.serve._split import SplitStatistics

if TYPE_CHECKING:
    from bastion.manifest import Backend, Manifest, RolloutPolicy
    from bastion.serve._golden import GoldenCheck, GoldenProber
    from bastion.serve.gateway import Gateway
    from bastion.serve.pool import Upstream
    from bastion.serve.replicas import ReplicaSet

__all__ = ["RolloutConflict", "RolloutController"]

_log = logging.getLogger(__name__)


class RolloutConflict(UsageError):
    """A rollout request that conflicts with the one in progress (HTTP 409)."""


def _shown(ref: str, version: int) -> str:
    name = ref.split("@", 1)[0]
    return f"{name}@{version}"


class RolloutController:
    """Rollouts of ``service``'s model backend on ``gateway`` (see the module).

    ``sets``: the service's stable replica sets, by backend name (the controller swaps a
    promoted candidate's set in). ``prober``: the service's golden probes, if any (their
    answers count in the analysis). ``candidate_url(name, port)``: where the gateway
    reaches a candidate replica (a drill puts a fault proxy in between).

    Construct it before the gateway starts (it adds the gateway's rollout routes), then
    ``await resume()`` once the gateway listens, and ``await close()`` before the gateway
    closes (an active rollout's record stays, so the next gateway resumes it).
    """

    def __init__(
        self,
        gateway: Gateway,
        manifest: Manifest,
        sets: dict[str, ReplicaSet],
        *,
        prober: GoldenProber | None = None,
        candidate_url: Callable[[str, int], str] | None = None,
    ) -> None:
        self.gateway = gateway
        self.candidate_url = candidate_url
        self.manifest = manifest
        self.service = gateway.service
        self.policy: RolloutPolicy = manifest.services[self.service].rollout
        self.sets = sets
        self.prober = prober
        self.record: RolloutRecord | None = None
        self.split: TrafficSplit | None = None
        self.candidate_set: ReplicaSet | None = None
        self.last_verdict: dict[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        # replica sets draining after a promotion or a rollback (close() stops them)
        self._retiring: set[ReplicaSet] = set()
        self._step_looks = 0
        self._extensions = 0
        self._settings = self._analysis_settings(self.policy)
        app = gateway.app
        app.router.add_get("/bastion/rollout", self._get)
        app.router.add_post("/bastion/rollout", self._post_start)
        app.router.add_post("/bastion/rollout/promote", self._post_promote)
        app.router.add_post("/bastion/rollout/abort", self._post_abort)
        gateway.rollout_status = lambda: self.statistics() if self.record is not None else None
        self.metrics = RolloutMetrics(self.service, self._now)
        gateway.metrics.registry.register(self.metrics)
        if prober is not None:
            prober.observers.append(self._golden)

    def _now(self) -> tuple[float, int]:
        record = self.record
        if record is None or self.gateway.split is None:
            return 0.0, 0
        return record.weight, record.step

    @staticmethod
    def _analysis_settings(policy: RolloutPolicy) -> AnalysisSettings:
        steps = len(policy.steps)
        looks = (steps + 1) * (policy.looks_per_step + policy.max_extensions) + 2
        return AnalysisSettings(
            min_samples=policy.min_samples,
            alpha=policy.alpha,
            max_looks=looks,
            latency_tolerance=policy.latency_tolerance,
            tail_tolerance=policy.tail_tolerance,
            spread_tolerance=policy.spread_tolerance,
            latency_allowance_s=policy.latency_allowance_ms / 1000,
            error_margin=policy.error_margin,
        )

    # -- what the gateway's routes and the library call -----------------------------------
    def _backend(self, name: str | None) -> Backend:
        service = self.manifest.services[self.service]
        local = [b for b in service.backends if b.model is not None]
        if name is not None:
            for b in local:
                if b.name == name:
                    return b
            raise NotFoundError(
                f"service {self.service} has no model backend {name!r} (its model backends: "
                f"{', '.join(b.name for b in local) or 'none'})"
            )
        if not local:
            raise UsageError(
                f"service {self.service} has no model backend (backends with model:) to roll "
                "out; a rollout replaces a vault model served by local replicas"
            )
        if len(local) > 1:
            raise UsageError(
                f"service {self.service} has {len(local)} model backends "
                f"({', '.join(b.name for b in local)}); name one with --backend"
            )
        return local[0]

    def _verify(self, ref: str, stable_ref: str) -> tuple[str, str, str]:
        """(candidate pinned ref, its snapshot id, the stable's pinned ref), from the vault,
        the candidate read whole (every chunk's hash checked) and loaded as a model."""
        from bastion.names import parse_ref
        from bastion.serve._formats import ModelFiles, load_model
        from bastion.vault import Vault

        try:
            parsed = parse_ref(ref)
        except BastionError as exc:
            raise UsageError(f"rollout candidate {ref!r}: {exc}") from None
        if parsed.kind != "model":
            raise UsageError(
                f"rollout candidate {ref}: only models are rolled out (a ref like model/digits@3)"
            )
        vault = Vault.from_manifest(self.manifest)
        try:
            snap = vault.snapshot(ref)
            stable = vault.snapshot(stable_ref)
        except NotFoundError as exc:
            raise NotFoundError(f"rollout candidate: {exc}") from None
        if snap.name != stable.name:
            raise UsageError(
                f"rollout candidate {ref} is a version of {snap.name}, but the backend serves "
                f"{stable.name}; roll out a version of {stable.name}"
            )
        if snap.id == stable.id:
            raise UsageError(
                f"rollout candidate {ref} is the snapshot the service serves already "
                f"({stable.ref}); there is nothing to roll out"
            )
        try:
            for path in snap.files:
                vault.read(snap, path)
            load_model(ModelFiles.from_vault(vault, snap))
        except BastionError as exc:
            raise UsageError(f"rollout candidate {ref} does not verify: {exc}") from None
        except Exception as exc:  # a model that does not load is as unservable
            raise UsageError(
                f"rollout candidate {ref} does not load as a model: {type(exc).__name__}: {exc}"
            ) from None
        return snap.ref, snap.id, stable.ref

    async def start(
        self,
        candidate: str,
        *,
        strategy: str | None = None,
        backend: str | None = None,
    ) -> RolloutRecord:
        """Start rolling ``candidate`` (a model snapshot ref) out. ``UsageError`` (exit 2,
        HTTP 400) for a candidate that does not verify or a backend that is not a model's,
        ``RolloutConflict`` (409) while another rollout runs."""
        async with self._lock:
            if self.record is not None and self.record.status in ACTIVE:
                raise RolloutConflict(
                    f"service {self.service} is rolling out {self.record.candidate} already "
                    f"(rollout {self.record.id}, step {self.record.step + 1} of "
                    f"{len(self.record.steps)}); wait for it, or `bastion rollout abort "
                    f"{self.service}`"
                )
            if strategy is not None and strategy not in ("canary", "shadow", "blue-green"):
                raise UsageError(f"rollout strategy {strategy!r}: use canary, shadow or blue-green")
            target = self._backend(backend)
            serving = self.sets.get(target.name)
            pinned, snap_id, stable = await asyncio.to_thread(
                self._verify, candidate, serving.model if serving else str(target.model)
            )
            now = time.time()
            record = RolloutRecord(
                id=f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}-{secrets.token_hex(3)}",
                service=self.service,
                backend=target.name,
                candidate=pinned,
                candidate_id=snap_id,
                stable=stable,
                strategy=strategy or self.policy.strategy,
                steps=list(self.policy.steps),
                started_at=now,
                updated_at=now,
            )
            self._save(record)
            self.gateway.record(
                ek.ROLLOUT_STARTED,
                rollout=record.id,
                backend=record.backend,
                candidate=record.candidate,
                stable=record.stable,
                strategy=record.strategy,
                steps=record.steps,
            )
            await self._begin(record)
            return record

    async def resume(self) -> RolloutRecord | None:
        """Resume the rollout a previous gateway left in progress, at its step."""
        record = read_record(self.manifest.state_dir, self.service)
        self.record = record
        if record is None or record.status not in ACTIVE:
            return record
        self.gateway.record(
            ek.ROLLOUT_RESUMED,
            rollout=record.id,
            candidate=record.candidate,
            step=record.step,
            weight=record.weight,
            status=record.status,
        )
        await self._begin(record)
        return record

    async def promote_now(self) -> RolloutRecord:
        """Promote the running rollout's candidate now (through the validation gate)."""
        async with self._lock:
            record = self._active()
            await self._promote(record, reason="promoted by hand")
            assert self.record is not None
            return self.record

    async def abort(self, reason: str = "aborted by hand") -> RolloutRecord:
        async with self._lock:
            record = self._active()
            await self._end(record, "aborted", reason)
            assert self.record is not None
            return self.record

    async def close(self) -> None:
        """Stop the loop and the candidate's replicas; an active record stays as it is."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.gateway.split = None
        if self.candidate_set is not None:
            await self.candidate_set.close()
            self.candidate_set = None
        for rs in list(self._retiring):
            await rs.close()
        self._retiring.clear()

    def _active(self) -> RolloutRecord:
        record = self.record
        if record is None or record.status not in ACTIVE:
            raise RolloutConflict(
                f"service {self.service} has no rollout in progress"
                + (f" (the last one, {record.id}, {record.status})" if record else "")
                + f"; start one with `bastion rollout start {self.service} REF`"
            )
        return record

    # -- the rollout's life ---------------------------------------------------------------
    def _save(self, record: RolloutRecord) -> None:
        record = record.model_copy(update={"updated_at": time.time()})
        write_record(self.manifest.state_dir, record)
        self.record = record

    async def _begin(self, record: RolloutRecord) -> None:
        from bastion.serve.replicas import ReplicaSet

        backend = next(
            b for b in self.manifest.services[self.service].backends if b.name == record.backend
        )
        split = TrafficSplit(
            self.gateway.pool,
            rollout_id=record.id,
            strategy=record.strategy,
            sticky_header=self.policy.sticky_header,
            metrics=self.metrics,
        )
        split.phase = record.phase
        self.split = split
        assert self.manifest.path is not None
        rs = ReplicaSet(
            self.gateway,
            backend,
            manifest_path=self.manifest.path,
            log_dir=self.manifest.state_dir / "serve" / self.service,
            model=record.candidate,
            arm="candidate",
            prefix=f"{backend.name}-candidate-{record.id[-6:]}",
            url_for=self.candidate_url,
        )
        self.candidate_set = rs
        await rs.start()
        self._step_looks = 0
        self._extensions = 0
        self._task = asyncio.create_task(self._run(record))

    async def _run(self, record: RolloutRecord) -> None:
        try:
            # the analysis's scipy modules load in a thread while the candidate starts: a
            # first import inside the first look took a second on a busy machine, with the
            # gateway's event loop (every request) stalled for it
            loading = asyncio.ensure_future(asyncio.to_thread(_load_statistics))
            await self._wait_ready(record)
            loop = asyncio.get_running_loop()
            due = loop.time()  # the first step began
            split = self.split
            step_s = self.policy.interval_s * self.policy.looks_per_step
            warm = min(self.policy.warmup_s, step_s / 2)
            warm_end = due + warm
            if warm > 0 and split is not None:
                # a fresh replica's first answers are slow (cold caches, lazy imports):
                # they go to users, but not into the first step's latency measurements
                # (at most half the step); a look due before then judges all but latency
                # (``_warm_look``: wrong answers roll back at once) and counts as the
                # step's time, so the step lasts what it was planned to. Errors, answers
                # and probes are kept across the warmup's end: no look starts from zero.
                loop.call_later(warm, split.end_warmup)
            await loading
            while True:
                # looks on a fixed cadence from the first step: a step lasts its planned
                # intervals, not intervals plus the time each look took
                due += self.policy.interval_s
                await asyncio.sleep(max(0.0, due - loop.time()))
                if loop.time() > due + self.policy.interval_s:
                    due = loop.time()  # a look overran an interval: the cadence restarts
                if loop.time() < warm_end:
                    self._step_looks += 1  # the warmup's share of the first step
                    async with self._lock:
                        current = self.record
                        if current is None or current.id != record.id:
                            return
                        if current.status not in ACTIVE:
                            return
                        await self._warm_look(current)
                        if self.record is None or self.record.status not in ACTIVE:
                            return
                    continue
                async with self._lock:
                    current = self.record
                    # the id too: once this rollout ended, a new one may hold the record,
                    # and this loop must not judge it (it has its own)
                    if current is None or current.id != record.id or current.status not in ACTIVE:
                        return
                    await self._look(current)
                    if self.record is None or self.record.status not in ACTIVE:
                        return
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not leave a half-applied split
            _log.exception("rollout %s of service %s failed", record.id, self.service)
            async with self._lock:
                if self.record is not None and self.record.status in ACTIVE:
                    await self._end(self.record, "aborted", "the rollout controller failed")

    async def _wait_ready(self, record: RolloutRecord) -> None:
        rs = self.candidate_set
        assert rs is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.policy.startup_timeout_s
        while rs.ready() == 0:
            wrong = rs.held_wrong()
            if wrong:
                # golden probes hold a replica that answers wrongly out of the pool before
                # its first request: the candidate is judged on that alone
                async with self._lock:
                    await self._end(
                        record,
                        "rolled_back",
                        f"regression: golden: the candidate answers golden probes wrongly "
                        f"before taking traffic ({wrong})",
                    )
                raise asyncio.CancelledError
            if loop.time() > deadline:
                async with self._lock:
                    await self._end(
                        record,
                        "aborted",
                        f"the candidate's replicas did not pass their health probe within "
                        f"{self.policy.startup_timeout_s:g} s (their logs: "
                        f"{self.manifest.state_dir / 'serve' / self.service})",
                    )
                raise asyncio.CancelledError
            await asyncio.sleep(0.05)
        async with self._lock:
            current = self.record
            if current is None or current.status not in ACTIVE:
                raise asyncio.CancelledError
            if current.status == "starting":
                current = current.model_copy(update={"status": "running"})
                self._save(current)
            self._apply(current)

    def _apply(self, record: RolloutRecord) -> None:
        """Make the split match the record (one event-loop turn: atomic for requests)."""
        split = self.split
        assert split is not None
        split.phase = record.phase
        split.weight = record.weight if record.strategy != "blue-green" else 100.0
        split.reset()
        self.gateway.split = split
        self.gateway.record(
            ek.ROLLOUT_STEP,
            rollout=record.id,
            step=record.step,
            weight=record.weight,
            phase=record.phase if record.strategy == "blue-green" else None,
        )

    async def _look(self, record: RolloutRecord) -> None:
        split = self.split
        assert split is not None
        look = record.looks + 1
        if look > self._settings.max_looks:
            await self._end(record, "aborted", "insufficient evidence: the analysis plan ran out")
            return
        # judged in a thread: the statistics take milliseconds to tens of them, which the
        # event loop (every request) should not wait for; the samples are copies
        verdict = await asyncio.to_thread(
            judge,
            split.baseline.sample(),
            split.candidate.sample(),
            look=look,
            settings=self._settings,
        )
        record = record.model_copy(update={"looks": look})
        self.record = record
        self._verdict(record, verdict)
        self._step_looks += 1
        outcome = verdict.outcome
        if outcome == "fail":
            await self._end(record, "rolled_back", verdict.reason)
            return
        if outcome == "insufficient":
            self._extensions += 1
            if self._extensions > self.policy.max_extensions:
                await self._end(
                    record,
                    "aborted",
                    f"insufficient evidence after {self._extensions - 1} extensions of step "
                    f"{record.step + 1}: {verdict.reason}; never promoted",
                )
            return
        # after a blue-green switch the candidate has every request: the phase is a bake
        # that lasts its planned looks, since a clear win on the switch's first seconds
        # says nothing about what full traffic does to it afterwards
        baking = record.strategy == "blue-green" and record.phase == "switched"
        if outcome == "pass" and not baking:
            await self._advance(record)
            return
        if self._step_looks < self.policy.looks_per_step:
            return
        leaning = [c for c in verdict.checks if c.regressed]
        if outcome == "continue" and leaning:
            # Not significant, but the candidate's point estimate is beyond a tolerance:
            # "no evidence of a regression" would be the wrong reading, so the step goes
            # on for evidence (a 5% error rate against 0% on a hundred requests is this).
            self._extensions += 1
            if self._extensions > self.policy.max_extensions:
                names = ", ".join(c.name for c in leaning)
                await self._end(
                    record,
                    "rolled_back",
                    f"the candidate stayed beyond its tolerance on {names} through "
                    f"{self._extensions - 1} extensions of step {record.step + 1} without a "
                    f"significant result: {verdict.reason}; never promoted",
                )
            return
        await self._advance(record)

    async def _warm_look(self, record: RolloutRecord) -> None:
        """A look inside the warmup: a cold replica's latencies are not judged (they go
        before the step's measurements start), but its errors, answers and golden probes
        are, so a candidate that answers wrongly is rolled back at the first look instead
        of after the warmup. Only a failure acts (and counts as a look of the plan): an
        ``insufficient`` here is the warmup's own, never an extension of the step."""
        split = self.split
        assert split is not None
        look = record.looks + 1
        if look > self._settings.max_looks:
            return
        cold = (split.baseline.sample(), split.candidate.sample())
        verdict = await asyncio.to_thread(
            judge,
            dataclasses.replace(cold[0], latencies_s=()),
            dataclasses.replace(cold[1], latencies_s=()),
            look=look,
            settings=self._settings,
        )
        if verdict.outcome != "fail":
            return
        record = record.model_copy(update={"looks": look})
        self.record = record
        self._verdict(record, verdict)
        await self._end(record, "rolled_back", verdict.reason)

    def _verdict(self, record: RolloutRecord, verdict: Verdict) -> None:
        split = self.split
        assert split is not None
        data = verdict.to_dict()
        self.last_verdict = data
        self.metrics.verdicts[verdict.outcome].inc()
        self.gateway.record(
            ek.ROLLOUT_VERDICT,
            rollout=record.id,
            step=record.step,
            weight=record.weight,
            candidate_requests=split.candidate.requests,
            baseline_requests=split.baseline.requests,
            **data,
        )

    async def _advance(self, record: RolloutRecord) -> None:
        self._step_looks = 0
        self._extensions = 0
        if record.strategy == "blue-green":
            if record.phase == "check":
                record = record.model_copy(update={"phase": "switched"})
                self._save(record)
                self._apply(record)
                return
            await self._promote(record, reason="every check passed")
            return
        nxt = record.step + 1
        if nxt >= len(record.steps) - 1 or record.steps[nxt] >= 100:
            await self._promote(record, reason="every step passed")
            return
        record = record.model_copy(update={"step": nxt})
        self._save(record)
        self._apply(record)

    async def _promote(self, record: RolloutRecord, *, reason: str) -> None:
        from bastion.validate import PromotionRefused, promote
        from bastion.vault import Vault

        def move() -> None:
            vault = Vault.from_manifest(self.manifest)
            promote(vault, record.candidate)

        try:
            await asyncio.to_thread(move)
        except (PromotionRefused, BastionError) as exc:
            await self._end(
                record, "rolled_back", f"the validation gate refused the promotion: {exc}"
            )
            return
        # The candidate's set becomes the stable one in one loop turn, then the old one
        # drains and stops: no request is between two sets.
        old = self.sets.get(record.backend)
        rs = self.candidate_set
        assert rs is not None
        if old is not None:
            for name in old.replicas:
                if name in self.gateway.pool.upstreams:
                    self.gateway.pool.set_arm(name, "draining")
        rs.set_arm("stable")
        self.gateway.split = None
        self.sets[record.backend] = rs
        self.candidate_set = None
        record = record.model_copy(
            update={"status": "promoted", "reason": reason, "step": len(record.steps) - 1}
        )
        self._save(record)
        self.gateway.record(
            ek.ROLLOUT_PROMOTED,
            rollout=record.id,
            candidate=record.candidate,
            previous=record.stable,
            reason=reason,
            looks=record.looks,
        )
        if old is not None:
            await self._retire(old)

    async def _end(self, record: RolloutRecord, status: str, reason: str) -> None:
        """Roll back or abort: the candidate's share to 0 now, its replicas drained, then
        stopped; ``@prod`` stays where it was."""
        self.gateway.split = None
        record = record.model_copy(update={"status": status, "reason": reason})
        self._save(record)
        self.gateway.record(
            ek.ROLLOUT_ROLLED_BACK if status == "rolled_back" else ek.ROLLOUT_ABORTED,
            rollout=record.id,
            candidate=record.candidate,
            step=record.step,
            reason=reason,
            verdict=self.last_verdict,
        )
        rs = self.candidate_set
        self.candidate_set = None
        if rs is not None:
            await self._retire(rs)
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _retire(self, rs: ReplicaSet) -> None:
        """Drain ``rs``, then stop it. It is kept in ``_retiring`` meanwhile: a ``close()``
        that cancels the loop mid-drain stops it, instead of leaving its replicas running
        with nobody to stop them."""
        self._retiring.add(rs)
        await rs.drain(self.gateway.timeout_s)
        await rs.close()
        self._retiring.discard(rs)

    # -- golden probes ----------------------------------------------------------------------
    def _golden(self, up: Upstream, check: GoldenCheck) -> None:
        split = self.split
        if split is None or self.gateway.split is None:
            return
        right = check.total - check.wrong
        if up.arm == "candidate":
            split.candidate.golden(right, check.total)
        elif up.arm == "stable" and up.spec.group == (self.record.backend if self.record else ""):
            split.baseline.golden(right, check.total)

    # -- status -----------------------------------------------------------------------------
    def statistics(self) -> SplitStatistics:
        record = self.record
        split = self.split
        if record is None:
            raise NotFoundError("no rollout")  # the gateway asks only once one exists
        arms = {}
        if split is not None:
            arms = {
                "candidate": split.candidate.statistics(),
                "baseline": split.baseline.statistics(),
            }
        return SplitStatistics(
            id=record.id,
            strategy=record.strategy,
            backend=record.backend,
            candidate=record.candidate,
            stable=record.stable,
            status=record.status,
            step=record.step,
            steps=tuple(record.steps),
            weight=record.weight,
            looks=record.looks,
            extensions=self._extensions,
            reason=record.reason,
            arms=arms,
            last_verdict=self.last_verdict,
            mirrored=split.mirrored_n if split is not None else 0,
            agreement=split.agreement() if split is not None else None,
        )

    # -- HTTP -------------------------------------------------------------------------------
    async def _get(self, request: web.Request) -> web.Response:
        return web.json_response({"rollout": _asdict(self)})

    async def _call(self, fn: Callable[[], Any]) -> web.Response:
        try:
            await fn()
        except RolloutConflict as exc:
            return _problem(409, str(exc))
        except NotFoundError as exc:
            return _problem(404, str(exc))
        except UsageError as exc:
            return _problem(400, str(exc))
        return web.json_response({"rollout": _asdict(self)})

    async def _post_start(self, request: web.Request) -> web.Response:
        try:
            obj = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return _problem(400, "POST /bastion/rollout: the body is not JSON")
        if not isinstance(obj, dict) or not isinstance(obj.get("candidate"), str):
            return _problem(
                400,
                'POST /bastion/rollout: send {"candidate": "model/<name>@<version>", '
                '"strategy": "canary"|"shadow"|"blue-green", "backend": "<name>"}',
            )
        strategy, backend = obj.get("strategy"), obj.get("backend")
        if not isinstance(strategy, str | None) or not isinstance(backend, str | None):
            return _problem(400, "POST /bastion/rollout: strategy and backend are strings")
        return await self._call(
            lambda: self.start(obj["candidate"], strategy=strategy, backend=backend)
        )

    async def _post_promote(self, request: web.Request) -> web.Response:
        return await self._call(self.promote_now)

    async def _post_abort(self, request: web.Request) -> web.Response:
        return await self._call(self.abort)


def _load_statistics() -> None:
    import scipy.spatial.distance
    import scipy.stats  # noqa: F401


def _asdict(controller: RolloutController) -> dict[str, Any] | None:
    from dataclasses import asdict

    if controller.record is None:
        return None
    return asdict(controller.statistics())


def _problem(status: int, message: str) -> web.Response:
    from bastion.serve import shapes

    kind = "invalid_request_error" if status < 500 else "server_error"
    return web.json_response(shapes.error(message, kind, status), status=status)
