"""Running a pipeline: each stage its own supervised process, reading only verified
snapshots and publishing exactly one.

Owns: the run of one pipeline, in the DAG's order: resolving every input to a verified
snapshot (another stage's output of this run, or a ``sources`` ref resolved when the run
begins), the cache (a stage whose key already names a verified output is skipped), the
resume (a run after a killed one stops the stage process the dead runner left, then
re-runs only stages whose outputs are missing or fail verification), the stage's
private work directory (inputs restored from the vault, verified, into
``in/<name>/``; the output written to ``out/``), publishing (the runner commits a
command's ``out/`` as the next version of its output, with the key as a label in the
same signed publish; a built-in records its own verdict), and one event per transition.

A failing stage blocks the stages that read its output, directly or not, and nothing
else. Retries and backoff are the supervisor's (``bastion.supervise``): a stage's
``retries`` is its ``RestartBudget``, exit 2 (bad configuration) and a built-in's exit 1
(a gate said no) are fatal, not retried.

Must never: hand a stage an unverified byte, publish from a failed attempt, run two
runners of one pipeline at once (a lock file, released by the kernel when a runner
dies), or take a journal entry on trust (the vault verifies what it names).
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import select
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import blake3

from bastion import event_kinds as ek
from bastion.errors import BastionError, NotFoundError, UsageError
from bastion.events import Emit, Relay
from bastion.pipeline._dag import Dag, StageNode, build
from bastion.pipeline._key import (
    CacheKey,
    Unhashable,
    canonical,
    code_digest,
    code_files,
    environment_lock,
    stage_key,
)
from bastion.pipeline._recipe import Recipe, code_tree, record_code, reported_environment
from bastion.pipeline._status import DONE, RunRecord, StageRecord, read_run, write_run
from bastion.supervise import Backoff, ProcessSpec, RestartBudget, Supervisor, pid_alive
from bastion.train import ENV_STAGE_ENVIRONMENT

if TYPE_CHECKING:
    from bastion.manifest import Manifest
    from bastion.vault import Snapshot, Vault

__all__ = ["PipelineRunner", "output_digest"]

_PREFIX = "pipeline.stage.process."
_BUILTIN_CODE = [
    Path(__file__).with_name("_builtin.py"),
    Path(__file__).parent.parent / "validate",
]


def output_digest(snap: Snapshot) -> str:
    """The content of a snapshot (paths, sizes, modes, chunk ids): equal for equal
    bytes, whatever the version, time or signature."""
    files = {p: [e.size, e.mode, [c.id for c in e.chunks]] for p, e in sorted(snap.files.items())}
    return blake3.blake3(canonical(files)).hexdigest()


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


@dataclass(frozen=True)
class _Code:
    ref: str | None
    workdir: str
    uncaptured: tuple[str, ...]


@dataclass
class _Inputs:
    snaps: dict[str, Snapshot | None]
    missing: str | None


class PipelineRunner:
    """Run pipeline ``name`` of ``manifest`` once (``run()``). ``on_change`` is called
    with the run's record after every stage transition (the CLI's progress view)."""

    def __init__(
        self,
        manifest: Manifest,
        name: str,
        *,
        vault: Vault,
        events: Emit,
        on_change: Callable[[RunRecord], None] | None = None,
        poll_s: float = 0.002,
    ) -> None:
        self.manifest = manifest
        self.dag: Dag = build(manifest.pipelines, name)
        self.name = name
        self.vault = vault
        self.events = events
        self.on_change = on_change
        self.poll_s = poll_s
        self.state_dir = Path(manifest.state_dir)
        self.root = self.state_dir / "pipelines" / name
        self.record = RunRecord(name, uuid.uuid4().hex[:12])
        self.outputs: dict[str, Snapshot] = {}
        self._builtin_code: dict[str, str] | None = None
        self._unsaved = False
        self._trash = _Trash(self.root / "trash")
        self._ahead: ThreadPoolExecutor  # work a stage's process runs beside (run())

    # ------------------------------------------------------------------ plumbing
    def _subject(self, stage: str) -> str:
        return f"{self.name}/{stage}"

    def _emit(self, kind: str, stage: str | None = None, **data: Any) -> None:
        subject = self._subject(stage) if stage else self.name
        self.events.emit(kind, subject, run_id=self.record.run_id, **data)

    def _save(self, *, rederivable: bool = False) -> None:
        """Journal the record (``on_change`` sees every transition). ``rederivable``: the
        change is one a resumed run derives again from the vault alone (a verified
        cache hit; a success published under its cache key, label in the same signed
        publish), so it rides along with the next write instead of costing its own: the
        stage's next ``running`` (with its pid, which must be on disk before a kill can
        orphan the process), a failure, or the run's end. A runner killed in between
        leaves the older record, and the resume finds the same snapshot by its key,
        verifies it and does not run the stage again."""
        if rederivable:
            self._unsaved = True
        else:
            write_run(self.state_dir, self.record)
            self._unsaved = False
        if self.on_change is not None:
            self.on_change(self.record)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UsageError(
                    f"pipeline {self.name} is already running (lock {self.root / 'lock'}); "
                    "wait for it, or see `bastion pipeline status`"
                ) from None
            yield
        finally:
            os.close(fd)

    # ------------------------------------------------------------------- resume
    def _stop_orphans(self, previous: RunRecord) -> None:
        """A runner killed mid-stage leaves that stage's process running (its own
        process group, so it outlives its parent): stop it before anything re-runs."""
        for stage, rec in previous.stages.items():
            if rec.state != "running" or rec.pid is None:
                continue
            if not pid_alive(rec.pid) or _start_time(rec.pid) != rec.pid_start:
                continue
            try:
                os.killpg(rec.pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 10
            while pid_alive(rec.pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            self._emit(ek.PIPELINE_STAGE_ORPHAN_STOPPED, stage, pid=rec.pid)

    # ------------------------------------------------------------------- inputs
    def _resolve(self, node: StageNode) -> _Inputs:
        snaps: dict[str, Snapshot | None] = {}
        for key, producer in node.upstream.items():
            snaps[key] = self.outputs[producer]
        for key, ref in node.sources.items():
            try:
                snaps[key] = self.vault.snapshot(ref)
            except NotFoundError:
                if key in node.stage.optional:
                    snaps[key] = None
                    continue
                return _Inputs(snaps, f"input {key}: {ref} is not in the vault")
        return _Inputs(dict(sorted(snaps.items())), None)

    def _key(self, node: StageNode, inputs: Mapping[str, Snapshot | None]) -> CacheKey:
        stage = node.stage
        command = None
        code: dict[str, str] = {}
        if stage.uses == "command":
            assert stage.command is not None
            command = list(stage.command)
            paths = list(stage.code) or code_files(self._argv(node), stage.workdir)
            code = code_digest(paths, self.manifest.base_dir)
        else:
            # a built-in's code is Bastion's: the stage module and the gates it calls
            if self._builtin_code is None:
                self._builtin_code = code_digest(_BUILTIN_CODE, _BUILTIN_CODE[0].parent.parent)
            code = self._builtin_code
        return stage_key(
            uses=stage.uses,
            command=command,
            inputs={k: (s.id if s is not None else None) for k, s in inputs.items()},
            code=code,
            config=stage.config,
            env=stage.env,
            environment=environment_lock(stage.lock),
            output=node.output,
        )

    def _verify(self, snap: Snapshot) -> None:
        """Read every byte of the snapshot back through the vault (signature, then each
        chunk's BLAKE3; a bad replica copy is repaired from a good one)."""
        for path in sorted(snap.files):
            self.vault.read(snap, path)

    def _cached(self, node: StageNode, key: CacheKey | None, inputs: Any) -> Snapshot | None:
        if node.stage.uses == "promote":
            model = inputs.get("model")
            try:
                current = self.vault.snapshot(node.output)
            except NotFoundError:
                return None
            return current if model is not None and current.id == model.id else None
        if key is None:
            return None
        try:
            snap = self.vault.snapshot(f"{node.output}@{key.label}")
            self._verify(snap)
        except NotFoundError:
            return None
        except BastionError as exc:
            self._emit(ek.PIPELINE_STAGE_VERIFY_FAILED, node.name, error=str(exc))
            return None
        return snap

    def _resumable(
        self, node: StageNode, previous: RunRecord | None, inputs: dict[str, str | None]
    ) -> Snapshot | None:
        """A stage an interrupted run finished with the same inputs (for stages with no
        cache key), if its output still verifies."""
        if previous is None or previous.state != "running":
            return None
        rec = previous.stages.get(node.name)
        if rec is None or rec.state not in DONE or rec.output is None or rec.inputs != inputs:
            return None
        try:
            snap = self.vault.snapshot(rec.output["ref"])
            if snap.id != rec.output["id"]:
                return None
            self._verify(snap)
        except BastionError as exc:
            self._emit(ek.PIPELINE_STAGE_VERIFY_FAILED, node.name, error=str(exc))
            return None
        return snap

    # ---------------------------------------------------------------- execution
    def _argv(self, node: StageNode) -> list[str]:
        if node.stage.uses != "command":
            return [sys.executable, "-m", "bastion.pipeline._builtin"]
        assert node.stage.command is not None
        head, *rest = node.stage.command
        # "python" is the interpreter Bastion runs in, as for training jobs.
        return [sys.executable if head in ("python", "python3") else head, *rest]

    def _prepare(
        self, node: StageNode, inputs: Mapping[str, Snapshot | None]
    ) -> tuple[Path, dict[str, str]]:
        work = self.root / "work" / node.name
        if work.exists():
            self._trash.discard(work)  # a failed attempt's: it is kept until the next
        (work / "in").mkdir(parents=True, mode=0o700)
        env = {
            "BASTION_MANIFEST": str(self.manifest.path or ""),
            "BASTION_STATE_DIR": str(self.state_dir),
            "BASTION_PIPELINE": self.name,
            "BASTION_STAGE": node.name,
            "BASTION_RUN_ID": self.record.run_id,
            "BASTION_STAGE_INPUTS": str(work / "in"),
            "BASTION_STAGE_OUTPUT": str(work / "out"),
            "BASTION_STAGE_RESULT": str(work / "result.json"),
            "BASTION_STAGE_CONFIG": str(work / "config.json"),
            ENV_STAGE_ENVIRONMENT: str(work / "environment.json"),
            **node.stage.env,
        }
        (work / "config.json").write_bytes(canonical(node.stage.config, where="config"))
        if node.stage.uses == "command":
            for key, snap in inputs.items():
                if snap is not None:
                    self.vault.restore(snap, work / "in" / key)
        else:
            spec = {
                "manifest": str(self.manifest.path),
                "uses": node.stage.uses,
                "inputs": {k: s.ref for k, s in inputs.items() if s is not None},
                "config": node.stage.config,
                "output": node.output,
            }
            (work / "stage.json").write_text(json.dumps(spec))
            env["BASTION_STAGE_SPEC"] = str(work / "stage.json")
        return work, env

    def _execute(self, node: StageNode, rec: StageRecord, work: Path, env: dict[str, str]) -> str:
        """Run the stage's process under a supervisor; '' on success, else why not."""
        stage = node.stage
        out = work / "out"
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True, mode=0o700)
        argv = self._argv(node)

        def spec(_attempt: int) -> ProcessSpec:
            # Each attempt starts from an empty output: nothing of a failed one is kept.
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(mode=0o700)
            (work / "result.json").unlink(missing_ok=True)
            return ProcessSpec(
                argv=argv,
                cwd=stage.workdir,
                env=env,
                name=self._subject(node.name),
                log_path=logs / f"{node.name}.log",
            )

        def relay(kind: str, subject: str, at_ns: int | None, data: dict[str, Any]) -> None:
            # the supervisor's own life-cycle events, tagged with this run like ours
            self.events.emit(kind, subject, at_ns=at_ns, run_id=self.record.run_id, **data)

        sup = Supervisor(
            spec,
            backoff=Backoff(initial=stage.backoff_s, factor=2.0, cap=30.0, jitter=0.2),
            budget=RestartBudget(max_restarts=stage.retries),
            restart_on="failure",
            fatal_exit_codes=(2,) if stage.uses == "command" else (1, 2),
            grace_s=5.0,
            healthy_after_s=None,
            events=Relay(relay),
            kind_prefix=_PREFIX,
            subject=self._subject(node.name),
        )
        began = time.monotonic()
        seen_pid: int | None = None
        exited = _ExitWatch()
        try:
            while not sup.finished:
                sup.tick()
                child = sup.child
                if child is not None and child.pid != seen_pid:
                    seen_pid = child.pid
                    rec.pid, rec.pid_start = child.pid, _start_time(child.pid)
                    rec.attempts = sup.attempts
                    self._save()
                    exited.watch(child.pid)
                if stage.timeout_s is not None and time.monotonic() - began > stage.timeout_s:
                    sup.stop()
                    rec.pid = None
                    return f"timed out after {stage.timeout_s:g} s"
                if not sup.finished:
                    # wakes as soon as the process exits (its pidfd), else after poll_s:
                    # the next tick reaps it, with no polling delay added to the stage
                    exited.wait(_WAKE_S, otherwise=self.poll_s)
        finally:
            exited.close()
        rec.attempts = sup.attempts
        rec.pid = rec.pid_start = None
        outcome = sup.outcome()
        if outcome.state != "succeeded":
            tail = _tail(logs / f"{node.name}.log")
            return f"{outcome.reason}{': ' + tail if tail else ''}"
        return ""

    def _publish(
        self,
        node: StageNode,
        work: Path,
        inputs: Mapping[str, Snapshot | None],
        key: CacheKey | None,
        code: Future[_Code] | None,
    ) -> Snapshot:
        labels = ("latest", key.label) if key is not None else ("latest",)
        if node.stage.uses != "command":
            result = json.loads((work / "result.json").read_text())
            snap = self.vault.snapshot(f"{result['ref']}")
            if snap.id != result["id"]:
                raise UsageError(f"{node.name}: published {result['ref']} changed under it")
            if key is not None and node.stage.uses != "promote":
                self.vault.label(snap.name, snap.version, key.label)
            return snap
        out = work / "out"
        files = {str(p.relative_to(out)): p for p in sorted(out.rglob("*")) if p.is_file()}
        if not files:
            raise UsageError(
                f"stage {node.name} exited 0 but wrote nothing to $BASTION_STAGE_OUTPUT; a "
                "stage publishes exactly one snapshot"
            )
        assert code is not None
        recipe = self._recipe(node, work, inputs, code.result())
        lineage = [s.ref for s in inputs.values() if s is not None]
        return self.vault.commit(
            node.output,
            files,
            meta={
                "pipeline": self.name,
                "stage": node.name,
                "key": key.digest if key else None,
                "recipe": recipe.to_json(),
            },
            lineage=[*lineage, recipe.code] if recipe.code else lineage,
            labels=labels,
        )

    def _code(self, node: StageNode) -> _Code:
        """The stage's code committed as ``code/<pipeline>/<stage>`` (its ref, or None
        without files), its workdir, and what it runs that is not captured. Run while
        the stage's process runs (see ``_stage``): it reads only the code, the same
        files the key was made from a moment before, and the runner is only waiting."""
        stage = node.stage
        base = self.manifest.base_dir
        try:
            paths = list(stage.code) or code_files(self._argv(node), stage.workdir)
        except Unhashable as exc:
            paths, why = [], [str(exc)]
        else:
            why = []
        files, outside = code_tree(paths, base)
        outside += why
        try:
            workdir = str(stage.workdir.resolve().relative_to(base.resolve()))
        except ValueError:
            workdir, outside = str(stage.workdir), [*outside, str(stage.workdir)]
        # the interpreter a "python" command runs is the environment, not code
        outside = [p for p in outside if Path(p).resolve() != Path(sys.executable).resolve()]
        code = record_code(self.vault, f"code/{self.name}/{node.name}", files)
        return _Code(code, workdir, tuple(outside))

    def _recipe(
        self, node: StageNode, work: Path, inputs: Mapping[str, Snapshot | None], code: _Code
    ) -> Recipe:
        """How the stage made its output, so ``bastion model reconstitute`` can make it
        again (``_recipe``): its code (``_code``), inputs, config and environment."""
        stage = node.stage
        assert stage.command is not None
        return Recipe(
            command=tuple(stage.command),
            workdir=code.workdir,
            code=code.ref,
            inputs={k: s.ref for k, s in inputs.items() if s is not None},
            config=stage.config,
            env=stage.env,
            environment=reported_environment(work / "environment.json"),
            uncaptured=code.uncaptured,
        )

    def _stage(self, node: StageNode, previous: RunRecord | None) -> None:
        rec = self.record.stages[node.name]
        began = time.monotonic()
        resolved = self._resolve(node)
        if resolved.missing is not None:
            self._fail(node, rec, resolved.missing, began)
            return
        inputs = resolved.snaps
        rec.inputs = {k: (s.id if s is not None else None) for k, s in inputs.items()}
        key: CacheKey | None = None
        try:
            key = self._key(node, inputs)
            rec.key = key.label
        except Unhashable as exc:
            rec.uncached = str(exc)
            self._emit(ek.PIPELINE_STAGE_UNCACHEABLE, node.name, reason=str(exc))
        if not node.stage.cache and key is not None:
            rec.uncached = "cache: false"
        use_key = key if node.stage.cache else None
        hit = self._cached(node, use_key, inputs) if node.stage.cache else None
        state = "cached"
        if hit is None:
            hit = self._resumable(node, previous, rec.inputs)
            state = "resumed"
        if hit is not None:
            self.outputs[node.name] = hit
            rec.state = state  # type: ignore[assignment]
            rec.output = {"ref": hit.ref, "id": hit.id}
            rec.seconds = round(time.monotonic() - began, 6)
            kind = ek.PIPELINE_STAGE_CACHED if state == "cached" else ek.PIPELINE_STAGE_RESUMED
            self._emit(kind, node.name, output=hit.ref, snapshot=hit.id, key=rec.key)
            self._save(rederivable=state == "cached")
            return
        rec.state = "running"  # saved with the process's pid, once it has one
        self._emit(ek.PIPELINE_STAGE_RUNNING, node.name, key=rec.key, inputs=rec.inputs)
        code: Future[_Code] | None = None
        try:
            work, env = self._prepare(node, inputs)
            if node.stage.uses == "command":
                # off the critical path: committed while the process runs
                code = self._ahead.submit(self._code, node)
            why = self._execute(node, rec, work, env)
            if why:
                self._fail(node, rec, why, began)
                return
            snap = self._publish(node, work, inputs, use_key, code)
        except BastionError as exc:
            self._fail(node, rec, str(exc), began)
            return
        finally:
            if code is not None:
                wait([code])  # never left running behind its stage
        self._trash.discard(work)
        self.outputs[node.name] = snap
        rec.state = "succeeded"
        rec.output = {"ref": snap.ref, "id": snap.id}
        rec.seconds = round(time.monotonic() - began, 6)
        self._emit(
            ek.PIPELINE_STAGE_SUCCEEDED,
            node.name,
            output=snap.ref,
            snapshot=snap.id,
            key=rec.key,
            attempts=rec.attempts,
            seconds=rec.seconds,
        )
        self._save(rederivable=use_key is not None)

    def _fail(self, node: StageNode, rec: StageRecord, why: str, began: float) -> None:
        rec.state = "failed"
        rec.reason = why
        rec.pid = rec.pid_start = None
        rec.seconds = round(time.monotonic() - began, 6)
        self._emit(ek.PIPELINE_STAGE_FAILED, node.name, reason=why, attempts=rec.attempts)
        self._save()

    def run(self) -> RunRecord:
        """Run every stage whose inputs are good, in order; the record says how each
        ended (``failed``: the stage; ``blocked``: a stage it reads from failed)."""
        with (
            self._lock(),
            self._trash,
            ThreadPoolExecutor(1, thread_name_prefix="pipeline-code") as self._ahead,
        ):
            self._trash.empty()  # what a killed runner left there
            previous = read_run(self.state_dir, self.name)
            if previous is not None and previous.state == "running":
                self.record.resumed_from = previous.run_id
                self._stop_orphans(previous)
            order = self.dag.order
            self.record.stages = {s: StageRecord() for s in order}
            began = time.monotonic()
            self._emit(ek.PIPELINE_STARTED, stages=order, resumed_from=self.record.resumed_from)
            self._save()
            for stage in order:
                node = self.dag.nodes[stage]
                failed = sorted(
                    u
                    for u in set(node.upstream.values())
                    if self.record.stages[u].state in ("failed", "blocked")
                )
                if failed:
                    rec = self.record.stages[stage]
                    rec.state = "blocked"
                    rec.reason = f"{', '.join(failed)} did not succeed"
                    self._emit(ek.PIPELINE_STAGE_BLOCKED, stage, by=failed)
                    self._save()
                    continue
                self._stage(node, previous)
            states = [r.state for r in self.record.stages.values()]
            self.record.state = "succeeded" if all(s in DONE for s in states) else "failed"
            self._emit(
                ek.PIPELINE_FINISHED,
                state=self.record.state,
                **{s: states.count(s) for s in sorted(set(states))},  # type: ignore[arg-type]
                seconds=round(time.monotonic() - began, 6),
            )
            self._save()
            return self.record


class _Trash:
    """Work directories the runner is done with, removed off the stage's critical path.

    ``discard`` renames the directory into ``trash/`` under a new name (one rename:
    its own name is free at once for the stage's next attempt or run, and nothing
    reads the old one again: a stage's inputs and outputs are only ever reached by
    its own name), and a background thread removes it while the next stage runs.
    The ``with`` block ends only once the thread has emptied the trash, so a run
    leaves nothing behind and never races its own clean-up; what a killed runner left
    in ``trash/`` is removed by the next run (``empty``).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._jobs: queue.SimpleQueue[Path | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Trash:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None

    def discard(self, work: Path) -> None:
        gone = self.root / uuid.uuid4().hex
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            work.rename(gone)
        except OSError:
            shutil.rmtree(work, ignore_errors=True)  # as it was: here and now
            return
        self._later(gone)

    def empty(self) -> None:
        if self.root.is_dir():
            for left in self.root.iterdir():
                self._later(left)

    def _later(self, path: Path) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._remove, name="pipeline-trash", daemon=True)
            self._thread.start()
        self._jobs.put(path)

    def _remove(self) -> None:
        while (path := self._jobs.get()) is not None:
            shutil.rmtree(path, ignore_errors=True)


#: the longest the runner sleeps on a running stage between ticks (the supervisor's
#: timers, a stage's timeout); the process's exit wakes it at once
_WAKE_S = 0.05


class _ExitWatch:
    """Wait for one process to exit, woken by its pidfd (Linux >= 5.3); where there is
    none, a plain sleep (the tick then polls as before)."""

    def __init__(self) -> None:
        self._fd: int | None = None

    def watch(self, pid: int) -> None:
        self.close()
        try:
            self._fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self._fd = None  # exited already (the next tick reaps it), or no pidfd here

    def wait(self, timeout: float, *, otherwise: float) -> None:
        """Up to ``timeout`` for the exit; a sleep of ``otherwise`` when nothing is
        watched (it exited: a restart's backoff is timed by the supervisor's ticks)."""
        if self._fd is None:
            time.sleep(otherwise)
            return
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if ready:
            self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _tail(path: Path, limit: int = 300) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            text = fh.read().decode(errors="replace").strip()
    except OSError:
        return ""
    return text.splitlines()[-1] if text else ""
