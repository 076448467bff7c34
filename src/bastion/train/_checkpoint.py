"""The checkpoint API a training script calls: track state, restore, ``step()``, save.

Owns: gathering the tracked state, the blocking part of a save (one ``copy_`` into the
staging buffer; parameters and optimizer moments are copied on a helper thread while the
next forward and backward run, and the optimizer's step pre-hook waits for that copy, so
mutate parameters outside ``optimizer.step()`` only after ``wait()``), the background
writer (at most one save in flight; ``on_busy`` says
whether a due save waits or is skipped, and the choice is an event), restore of the
newest checkpoint that verifies, shape/dtype checks, the heartbeat fed by ``step()``, and
preemption: SIGTERM/SIGINT set a flag, and the next ``step()`` writes an emergency
checkpoint at that step boundary and exits, so a preemption loses no steps.

Why the flag instead of saving inside the signal handler: a handler runs between two
bytecodes, possibly halfway through ``optimizer.step()``; a checkpoint taken there would
hold half-updated weights. At the step boundary the state is consistent.

Must never: let the training loop wait for serialisation, hashing or disk (except the
emergency save, which must be durable before the process exits, and ``on_busy="wait"``),
or load a checkpoint that failed verification.

Under ``bastion train run`` the checkpointer takes what the script leaves out from the
job's environment (``bastion.train._env``): ``Checkpointer.from_env()`` finds the job,
its manifest, its vault and the event log; and for the supervised job, settings left
``None`` come from the manifest (``checkpoint.every_steps``/``every_seconds``/
``max_overhead``, ``keep``, ``on_busy``, ``segment``) and events go to the job's event
log, so ``bastion train status`` counts them. Explicit arguments always win.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal, Protocol

import torch

from bastion import event_kinds as ek
from bastion.errors import BastionError, IntegrityError, NotFoundError, UsageError
from bastion.events import NO_EVENTS, Emit, EventLog
from bastion.manifest import Manifest, load, loads
from bastion.supervise import EXITING, Heartbeat
from bastion.train._cadence import Cadence, CadenceStatistics
from bastion.train._env import JobEnv, job_settings
from bastion.train._rng import RNGState
from bastion.train._staging import StagingBuffer
from bastion.train._store import CheckpointStore, checkpoint_name, open_store
from bastion.train._tree import flatten, unflatten

__all__ = ["CheckpointStatistics", "Checkpointer", "Preempted", "Stateful"]

STATE_FILE = "state.safetensors"
SKELETON_FILE = "state.json"
FORMAT = 1


class Stateful(Protocol):
    def state_dict(self) -> Any: ...
    def load_state_dict(self, state: Any, /) -> Any: ...


class Preempted(SystemExit):
    """Raised by ``step()`` after the emergency checkpoint; exits ``128 + signal``."""

    def __init__(self, signum: int, step: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.step = step


@dataclass(frozen=True)
class CheckpointStatistics:
    """What one ``Checkpointer`` has done (``statistics()``). Times are seconds of the
    training loop's own thread unless they say otherwise."""

    saves: int
    """Checkpoints made durable and visible."""
    skipped: int
    """Due saves skipped because one was still in flight (``on_busy="skip"``)."""
    failed: int
    """Saves whose commit raised (each one a ``train.checkpoint.failed`` event)."""
    waited_s: float
    """Loop time spent waiting for the save in flight (``on_busy="wait"``)."""
    stall_s_total: float
    """Loop time blocked by saves' in-memory copies."""
    staging_wait_s: float
    """Loop time optimizer steps waited for a deferred parameter copy."""
    last_stall_s: float | None
    """The last save's in-memory copy; None before the first save."""
    last_persist_s: float | None
    """The last save from commit to durable, on the writer thread."""
    last_bytes: int
    """Bytes the last save stored (state file and skeleton, per replica)."""
    last_saved_step: int | None
    """The step of the newest checkpoint known durable (saved or restored)."""
    restored_step: int | None
    """The step ``restore()`` resumed from; None before it ran or on a fresh start."""
    in_flight: bool
    """A save is being written now."""
    step: int
    """The last step ``step()`` was told of."""
    staging_bytes: int
    """Size of the staging buffer (0 before the first save or ``prepare()``)."""
    cadence: CadenceStatistics
    """The cadence's own figures."""


@dataclass
class _Counts:
    """The mutable part of ``CheckpointStatistics``, guarded by the checkpointer."""

    saves: int = 0
    skipped: int = 0
    failed: int = 0
    waited_s: float = 0.0
    stall_s_total: float = 0.0
    staging_wait_s: float = 0.0
    last_stall_s: float | None = None
    last_persist_s: float | None = None
    last_bytes: int = 0
    last_saved_step: int | None = None
    restored_step: int | None = None


@dataclass
class _Job:
    step: int
    name: str
    skeleton: bytes
    stall_s: float
    reason: str
    started: float


class Checkpointer:
    """Asynchronous, verified checkpoints for one job.

    ::

        ckpt = Checkpointer("train-digits", store, cadence=Cadence(every_steps=50))
        ckpt.track(model=model, optimizer=opt, data=sampler)   # RNGs are tracked for you
        start = ckpt.restore()                                # 0 on a fresh start
        for step in range(start, total):
            train_one_step()
            ckpt.step(step + 1)          # heartbeat; saves when due; handles preemption
        ckpt.close()
    """

    def __init__(
        self,
        job: str,
        store: CheckpointStore,
        *,
        cadence: Cadence | None = None,
        on_busy: Literal["wait", "skip"] | None = None,
        keep: int | None = None,
        events: Emit | None = None,
        segment: str | None = None,
        heartbeat: Heartbeat | None = None,
        lineage: Sequence[str] = (),
        track_rng: bool = True,
        handle_signals: bool = True,
        async_staging: bool = True,
    ) -> None:
        """``cadence``, ``on_busy``, ``keep``, ``events`` and ``segment`` left ``None``
        come from the job's manifest and event log when this process is ``job``'s worker
        under ``bastion train run``; otherwise they default to every 100 steps, ``"skip"``,
        3, no events and no segment."""
        self.job = job
        self.store = store
        env = JobEnv.from_environ()
        self._env = env
        self._owned_events: EventLog | None = None
        if env.supervises(job) and None in (cadence, on_busy, keep, segment):
            settings = job_settings(job, load(env.manifest) if env.manifest else None)
            policy, job_segment = settings.policy, settings.segment
        else:
            settings, policy, job_segment = None, None, ""
        if events is None and env.supervises(job) and env.state_dir is not None:
            events = self._owned_events = EventLog.in_state_dir(env.state_dir)
        if cadence is None:
            cadence = Cadence.from_policy(policy) if policy is not None else Cadence()
        self.cadence = cadence
        self.on_busy: Literal["wait", "skip"] = (
            on_busy if on_busy is not None else policy.on_busy if policy else "skip"
        )
        self.keep = keep if keep is not None else policy.keep if policy else 3
        self.events: Emit = events if events is not None else NO_EVENTS
        self.segment = segment if segment is not None else job_segment
        # the run this worker belongs to, under `bastion train run` (checkpoints carry it,
        # so a run started with --fresh restores only its own)
        self.run_id = env.run_id if env.supervises(job) else None
        self.fresh_run = env.fresh_run if env.supervises(job) else None
        self.heartbeat = heartbeat or Heartbeat.from_env()
        self.lineage = tuple(lineage)
        self._tracked: dict[str, Stateful] = {}
        if track_rng:
            self._tracked["rng"] = RNGState()
        self._staging: StagingBuffer | None = None
        self.async_staging = async_staging
        self._optimizers: list[torch.optim.Optimizer] = []
        self._staged = threading.Event()
        self._staged.set()
        self._hook_wait_s = 0.0
        self._cv = threading.Condition()
        self._pending: _Job | None = None
        self._busy = False
        self._persists_done = 0  # bumped by the writer; step() tells the cadence whether
        self._persists_seen = 0  # a persist ran during the step that just ended
        self._closed = False
        self._preempt: int | None = None
        self._first_step_seen = False
        self.current_step = 0
        self._counts = _Counts()
        self._writer = threading.Thread(target=self._write_loop, name="bastion-ckpt", daemon=True)
        self._writer.start()
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)

    @classmethod
    def from_env(
        cls,
        job: str | None = None,
        *,
        manifest: Manifest | str | Path | None = None,
        **options: Any,
    ) -> Checkpointer:
        """The checkpointer of the job this script runs, configured from its manifest.

        Under ``bastion train run`` everything comes from the environment the supervisor
        sets (docs/training.md): the job (``BASTION_JOB``), its manifest
        (``BASTION_MANIFEST``), the manifest's vault as the store (``open_store``: exit 2
        with the fix while it cannot sign), the job's event log, and its ``checkpoint:``
        settings and segment. Run by hand, name the job (``job=``); the manifest is then
        ``./bastion.yaml`` unless given. ``options`` are ``Checkpointer``'s own keyword
        arguments and win over the manifest's settings.
        """
        env = JobEnv.from_environ()
        job = job or env.job
        if not job:
            raise UsageError(
                "Checkpointer.from_env(): which job? Run the script under `bastion train run "
                "JOB` (it sets BASTION_JOB), or pass job='...'"
            )
        loaded = _manifest_for(job, manifest, env)
        events = options.pop("events", None)
        owned: EventLog | None = None
        if events is None:
            events = owned = EventLog.in_state_dir(loaded.state_dir)
        settings = job_settings(job, loaded)
        options.setdefault("cadence", Cadence.from_policy(settings.policy))
        options.setdefault("on_busy", settings.policy.on_busy)
        options.setdefault("keep", settings.policy.keep)
        options.setdefault("segment", settings.segment)
        log = owned or (events if isinstance(events, EventLog) else None)
        store = options.pop("store", None) or open_store(loaded, job=job, events=log)
        ckpt = cls(job, store, events=events, **options)
        ckpt._owned_events = owned
        ckpt.manifest = loaded
        return ckpt

    manifest: Manifest | None = None
    """The manifest ``from_env`` read the job's settings from."""

    # -- events --------------------------------------------------------------------------
    def _emit(self, kind: ek.Kind, **data: Any) -> None:
        if self.run_id:
            data.setdefault("run_id", self.run_id)
        with contextlib.suppress(Exception):  # an event log hiccup must not stop training
            self.events.emit(kind, self.job, segment=self.segment or None, **data)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._preempt = signum

    # -- tracking ------------------------------------------------------------------------
    def track(self, **objects: Stateful) -> None:
        """Track objects with ``state_dict``/``load_state_dict`` (model, optimizer, LR
        scheduler, GradScaler, sampler, anything of yours)."""
        for name, obj in objects.items():
            if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise UsageError(
                    f"track({name}=...): a {type(obj).__name__} has no state_dict/"
                    "load_state_dict; wrap its state in an object that has both"
                )
            self._tracked[name] = obj
            if isinstance(obj, torch.optim.Optimizer):
                self._optimizers.append(obj)
                obj.register_step_pre_hook(self._before_optimizer_step)

    def _before_optimizer_step(self, *_args: Any) -> None:
        """The optimizer is about to change weights and moments: if a save is still
        copying them, wait for that copy (it overlapped forward and backward)."""
        if not self._staged.is_set():
            began = time.monotonic()
            self._staged.wait()
            waited = time.monotonic() - began
            self._hook_wait_s += waited
            self._counts.staging_wait_s += waited

    def _protected(self) -> set[int]:
        """Storage of tensors only an optimizer step changes (parameters, moments)."""
        ptrs: set[int] = set()
        for opt in self._optimizers:
            for group in opt.param_groups:
                ptrs.update(p.data_ptr() for p in group["params"])
            for state in opt.state.values():
                ptrs.update(t.data_ptr() for t in state.values() if isinstance(t, torch.Tensor))
        return ptrs

    def _gather(self) -> dict[str, Any]:
        return {name: obj.state_dict() for name, obj in self._tracked.items()}

    # -- saving --------------------------------------------------------------------------
    def step(self, step: int) -> bool:
        """Call after every completed step with the number of steps done. Feeds the
        heartbeat, saves when the cadence says so, and on a pending SIGTERM/SIGINT writes
        the emergency checkpoint and raises ``Preempted``. Returns whether a save began."""
        self.current_step = step
        pending = self._pending
        self.heartbeat.beat(step, note=f"saving={pending.step}" if pending else "")
        if not self._first_step_seen:
            self._first_step_seen = True
            self._emit(ek.TRAIN_STEP_FIRST, step=step)
        if self._preempt is not None:
            self._emergency(step, self._preempt)
        done = self._persists_done
        in_flight = self._busy or done != self._persists_seen
        self._persists_seen = done
        self.cadence.observe_step(step, in_flight=in_flight)
        if self.cadence.due(step):
            return self.save(step)
        return False

    def _emergency(self, step: int, signum: int) -> None:
        began = time.monotonic()
        saved = self._counts.last_saved_step == step
        if not saved:
            saved = self.save(step, reason="preemption", block=True)
        self.heartbeat.beat(step, note=EXITING, force=True)
        self._emit(
            ek.TRAIN_PREEMPTED,
            signal=signal.Signals(signum).name,
            step=step,
            emergency_checkpoint=saved,
            seconds=round(time.monotonic() - began, 4),
        )
        raise Preempted(signum, step)

    def save(self, step: int, *, reason: str = "cadence", block: bool = False) -> bool:
        """Checkpoint the tracked state as of ``step``. Blocks for the in-memory copy only
        (``block=True``: until durable). ``False`` if skipped because a save is in flight."""
        with self._cv:
            if self._busy:
                if self.on_busy == "skip" and not block:
                    self._counts.skipped += 1
                    self.cadence.skipped(step)
                    self._emit(ek.TRAIN_CHECKPOINT_SKIPPED, step=step, reason="busy")
                    return False
                waited = time.monotonic()
                while self._busy:
                    self._cv.wait()
                waited_s = time.monotonic() - waited
                self._counts.waited_s += waited_s
                self._emit(ek.TRAIN_CHECKPOINT_WAITED, step=step, wait_s=round(waited_s, 4))
            began = time.monotonic()
            skeleton, tensors = flatten(self._gather())
            self._ensure_staging(tensors)
            assert self._staging is not None
            deferred: dict[str, torch.Tensor] = {}
            if self.async_staging and self._optimizers and not block:
                # Parameters and optimizer moments change only in optimizer.step(), whose
                # pre-hook waits for this copy; so copy them while forward and backward
                # run (DCP's async staging idea), and everything else right now.
                protected = self._protected()
                deferred = {
                    k: t
                    for k, t in tensors.items()
                    if not t.is_cuda and t.numel() >= 4096 and t.data_ptr() in protected
                }
            self._staging.stage({k: t for k, t in tensors.items() if k not in deferred})
            self._hook_wait_s = 0.0
            if deferred:
                self._staged.clear()
                staging = self._staging
                threading.Thread(
                    target=self._stage_deferred, args=(staging, deferred), daemon=True
                ).start()
            # No sort_keys: state_dict order is part of the state (iteration order of
            # optimizer state, module registration) and must come back as it was.
            header: dict[str, Any] = {"format": FORMAT, "job": self.job, "step": step}
            # the run (a --fresh run restores only its own) and the intra-op thread count
            # (a resume with another count is not bit-exact: see restore)
            header["threads"] = torch.get_num_threads()
            if self.run_id:
                header["run_id"] = self.run_id
            body = json.dumps({**header, "state": skeleton}).encode()
            stall = time.monotonic() - began
            self._counts.stall_s_total += stall
            self._counts.last_stall_s = stall
            self.cadence.saved(step, stall)
            self._pending = _Job(step, checkpoint_name(self.job, step), body, stall, reason, began)
            self._busy = True
            self._cv.notify_all()
            if block:
                while self._busy:
                    self._cv.wait()
                return self._counts.last_saved_step == step
        return True

    def _stage_deferred(self, staging: StagingBuffer, tensors: dict[str, torch.Tensor]) -> None:
        try:
            staging.stage(tensors)
        finally:
            self._staged.set()

    def _ensure_staging(self, tensors: dict[str, torch.Tensor]) -> None:
        if self._staging is None or not self._staging.fits(tensors):
            self._staging = StagingBuffer(tensors, pin=torch.cuda.is_available())
            self._staging.buffer[self._staging.data_start :].zero_()  # fault the pages in now

    def prepare(self) -> None:
        """Allocate the staging buffer now (``restore()`` calls this), so the first save
        does not stall the loop for a fresh allocation. Waits for a save in flight."""
        self.wait()
        with self._cv:
            _, tensors = flatten(self._gather())
            self._ensure_staging(tensors)

    def _write_loop(self) -> None:
        # The writer runs at the loop's priority. At nice 10 (and the vault's I/O threads
        # it starts, which inherit it) the persist was starved during each step and
        # stretched over more of them, so it cost more, not less: 12 alternated rounds,
        # 1.2 GB state, 2 cores: every 20 steps 4.37 % vs 3.30 % at nice 0, adaptive
        # 3.66 % vs 1.35 %, persist 0.78 vs 0.88 of raw bandwidth.
        while True:
            with self._cv:
                while self._pending is None and not self._closed:
                    self._cv.wait()
                if self._pending is None:
                    return
                job = self._pending
            self._staged.wait()
            self._persist(job)
            with self._cv:
                self._pending = None
                self._busy = False
                self._persists_done += 1
                self._cv.notify_all()

    def _persist(self, job: _Job) -> None:
        assert self._staging is not None
        began = time.monotonic()
        view = self._staging.memoryview()
        try:
            ref = self.store.commit(
                job.name,
                {STATE_FILE: view, SKELETON_FILE: job.skeleton},
                meta={
                    "job": self.job,
                    "step": job.step,
                    "format": FORMAT,
                    "reason": job.reason,
                    **({"run_id": self.run_id} if self.run_id else {}),
                },
                lineage=self.lineage,
            )
            # durable and visible here; pruning older ones is housekeeping, not persist
            persist = time.monotonic() - began
            dropped = self.store.prune(self.job, self.keep)
        except Exception as exc:
            self._counts.failed += 1
            self._emit(ek.TRAIN_CHECKPOINT_FAILED, step=job.step, error=str(exc)[:500])
            return
        nbytes = view.nbytes + len(job.skeleton)
        replicas = self.store.replicas or 1
        self._counts.saves += 1
        self._counts.last_persist_s = persist
        self._counts.last_bytes = nbytes
        self._counts.last_saved_step = job.step
        self._emit(
            ek.TRAIN_CHECKPOINT_SAVED,
            step=job.step,
            name=job.name,
            ref=ref,
            reason=job.reason,
            stall_s=round(job.stall_s + self._hook_wait_s, 6),
            staging_wait_s=round(self._hook_wait_s, 6),
            persist_s=round(persist, 6),
            bytes=nbytes,
            replicas=replicas,
            durable_bytes_per_s=round(nbytes * replicas / max(persist, 1e-9)),
            pruned=dropped,
        )

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no save is in flight; ``True`` if so within ``timeout``."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self._busy:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def close(self) -> None:
        """Wait for the in-flight save and stop the writer thread."""
        self.wait()
        self.heartbeat.beat(self.current_step, note=EXITING, force=True)
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._writer.join()
        if self._owned_events is not None:
            self._owned_events.close()
            self._owned_events = None

    # -- restoring -----------------------------------------------------------------------
    def restore(self) -> int:
        """Load the newest checkpoint that verifies and return its step (0: none).

        A checkpoint that fails verification is reported (``train.checkpoint.corrupt``)
        and skipped in favour of the one before. A checkpoint whose shapes or dtypes do
        not match the tracked objects is a ``UsageError``, never a silent partial load.
        In a run started with ``bastion train run --fresh``, checkpoints of earlier runs
        are passed over (``older_runs`` in the ``train.restored`` event).

        Bit-exact resume needs the intra-op thread count the checkpoint was written with
        (``torch.set_num_threads``: CPU kernels split their sums by thread); a different
        one is a ``RuntimeWarning`` and is recorded in the event, the resume goes on.
        """
        began = time.monotonic()
        names = self.store.checkpoints(self.job)
        older_runs = 0
        corrupt = 0
        for name in names:
            try:
                body = json.loads(self.store.read(name, SKELETON_FILE))
                if self.fresh_run and body.get("run_id") != self.fresh_run:
                    older_runs += 1
                    continue
                tensors = _load_tensors(self.store.read(name, STATE_FILE))
                tree = unflatten(body["state"], tensors)
            except (IntegrityError, NotFoundError, ValueError, KeyError) as exc:
                corrupt += 1
                self._emit(ek.TRAIN_CHECKPOINT_CORRUPT, name=name, error=str(exc)[:500])
                continue
            self._apply(name, tree)
            self.prepare()
            step = int(body["step"])
            self.cadence.restart_from(step)
            self._counts.restored_step = step
            self._counts.last_saved_step = step
            self.current_step = step
            threads = _thread_check(name, body.get("threads"))
            self._emit(
                ek.TRAIN_RESTORED,
                step=step,
                name=name,
                restore_s=round(time.monotonic() - began, 6),
                skipped=names.index(name),
                **threads,
                **({"older_runs": older_runs} if self.fresh_run else {}),
            )
            return step
        self.prepare()
        self._emit(
            ek.TRAIN_RESTORED,
            step=0,
            name=None,
            fresh=True,
            skipped=len(names),
            restore_s=round(time.monotonic() - began, 6),
            **({"older_runs": older_runs} if self.fresh_run else {}),
        )
        if corrupt:
            self._emit(ek.TRAIN_CHECKPOINT_NONE_VALID, tried=corrupt)
        return 0

    def _apply(self, name: str, tree: Mapping[str, Any]) -> None:
        missing = [k for k in self._tracked if k not in tree]
        if missing:
            raise UsageError(
                f"checkpoint {name} holds no state for {', '.join(missing)}; it was written "
                "by a different script; start a new job name or track the same objects"
            )
        for key, obj in self._tracked.items():
            if isinstance(obj, torch.nn.Module):
                _check_shapes(name, key, obj.state_dict(), tree[key])
        for key, obj in self._tracked.items():
            try:
                obj.load_state_dict(tree[key])
            except BastionError:
                raise
            except (RuntimeError, ValueError, KeyError, TypeError) as exc:
                raise UsageError(
                    f"checkpoint {name}: cannot load {key!r} into this {type(obj).__name__}: "
                    f"{str(exc).splitlines()[0][:300]}; restore into the model that wrote it "
                    "or start a new job name"
                ) from None

    def statistics(self) -> CheckpointStatistics:
        with self._cv:
            return CheckpointStatistics(
                **asdict(self._counts),
                in_flight=self._busy,
                step=self.current_step,
                staging_bytes=self._staging.nbytes if self._staging else 0,
                cadence=self.cadence.statistics(),
            )


def _thread_check(name: str, saved: Any) -> dict[str, Any]:
    """The ``threads`` fields of a ``train.restored`` event; warn on a different count."""
    now = torch.get_num_threads()
    if not isinstance(saved, int):
        return {}  # written before checkpoints recorded it
    if saved != now:
        warnings.warn(
            f"{name} was written with {saved} intra-op threads and this process uses {now}: "
            f"the resumed run will not be bit-exact; call torch.set_num_threads({saved}) "
            "before training (docs/training.md)",
            RuntimeWarning,
            stacklevel=3,
        )
        return {"threads": now, "saved_threads": saved}
    return {"threads": now}


def _manifest_for(job: str, manifest: Manifest | str | Path | None, env: JobEnv) -> Manifest:
    """The manifest ``from_env`` configures ``job`` from (see there)."""
    if isinstance(manifest, Manifest):
        return manifest
    if manifest is not None:
        return load(manifest)
    if env.supervises(job):
        if env.manifest is not None:
            return load(env.manifest)
        if env.state_dir is not None:
            # a `--name` job run with no manifest: the default vault under the state dir
            text = f"version: 1\nsystem: {json.dumps(job)}\n"
            return loads(
                text + f"state_dir: {json.dumps(str(env.state_dir))}\n",
                filename="(no manifest)",
                base_dir=env.state_dir.parent,
            )
    here = Path("bastion.yaml")
    if here.is_file():
        return load(here)
    raise UsageError(
        f"Checkpointer.from_env(): no manifest for job {job!r}: there is no ./bastion.yaml; "
        "pass manifest='path/to/bastion.yaml', or run the script under `bastion train run`"
    )


def _load_tensors(data: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    try:
        out: dict[str, torch.Tensor] = load(data)
    except Exception as exc:
        raise IntegrityError(f"checkpoint tensors do not parse as safetensors: {exc}") from None
    return out


def _check_shapes(name: str, key: str, have: Mapping[str, Any], saved: Mapping[str, Any]) -> None:
    problems = []
    for param, tensor in have.items():
        other = saved.get(param)
        if not isinstance(other, torch.Tensor):
            problems.append(f"{param} missing")
        elif other.shape != tensor.shape or other.dtype != tensor.dtype:
            problems.append(
                f"{param}: checkpoint {list(other.shape)} {other.dtype}, "
                f"model {list(tensor.shape)} {tensor.dtype}"
            )
    problems.extend(f"{p} unexpected" for p in saved if p not in have)
    if problems:
        shown = "; ".join(problems[:4]) + ("; ..." if len(problems) > 4 else "")
        raise UsageError(
            f"checkpoint {name} does not fit {key!r} ({shown}); restore into a model of the "
            "same shape and dtype, or start a new job name"
        )
