"""Bastion's Chaos Toolkit actions: inject and revert faults, start what a drill needs.

Owns: the functions an experiment names as ``provider: {type: python, module:
bastion.drill.actions, func: ...}``. Each reads the running drill's context
(``bastion.drill.context.current()``) for its scope, event log and base directory.

``inject(fault=KIND, name=..., **arguments)`` builds a fault from the library by kind
(``bastion drill faults`` lists them) and injects it; ``revert(name=None)`` reverts one
fault or all of them (use it in ``rollbacks``). Paths are relative to the experiment file.

Must never: build a fault without the run's scope; swallow a ``ScopeError`` (it is
recorded, so the run ends with exit code 2 even though Chaos Toolkit caught it).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from bastion import event_kinds as ek
from bastion.drill import faults as lib
from bastion.drill.context import DrillContext, current
from bastion.errors import ScopeError, UsageError

__all__ = [
    "FAULTS",
    "describe_faults",
    "http_load",
    "inject",
    "revert",
    "set_http_fault",
    "start_process",
    "start_proxy",
    "start_upstream",
    "stop_process",
    "wait_recovered",
]


def _paths(ctx: DrillContext, value: Any) -> Any:
    if isinstance(value, list):
        return [ctx.resolve(v) for v in value]
    return ctx.resolve(value)


def _pid(ctx: DrillContext, args: dict[str, Any]) -> int:
    if "process" in args:
        pid = int(ctx.process(str(args.pop("process"))).pid)
        match = args.pop("match", None)
        return pid if match is None else _descendant(pid, str(match))
    if "pid" in args:
        return int(args.pop("pid"))
    raise UsageError("process fault: give `process: NAME` (started by the drill) or `pid: N`")


def _descendant(pid: int, match: str, timeout_s: float = 30.0) -> int:
    """The newest descendant of ``pid`` whose command line contains ``match`` (a
    supervisor's worker), waiting for it to exist (a deadline, not a sleep)."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            found = [
                c
                for c in psutil.Process(pid).children(recursive=True)
                if match in " ".join(c.cmdline())
            ]
        except psutil.Error:
            found = []
        if found:
            return int(max(found, key=lambda c: c.create_time()).pid)
        current().stop.wait(0.05)
    raise UsageError(f"no process under pid {pid} has {match!r} in its command line")


def _sig(value: Any) -> int:
    if isinstance(value, str):
        return int(signal.Signals[value if value.startswith("SIG") else f"SIG{value}"])
    return int(value)


def _common(ctx: DrillContext, args: dict[str, Any]) -> dict[str, Any]:
    return {"events": ctx.events, "subject": str(args.pop("subject", ctx.subject))}


def _seeded(ctx: DrillContext, args: dict[str, Any]) -> dict[str, Any]:
    if "seed" not in args and ctx.seed is not None:
        args["seed"] = ctx.seed
    return args


_Builder = Callable[[DrillContext, dict[str, Any]], lib.Fault]


def _storage(cls: Any, target_key: str = "targets") -> _Builder:
    def build(ctx: DrillContext, args: dict[str, Any]) -> lib.Fault:
        common = _common(ctx, args)
        target = _paths(ctx, args.pop(target_key))
        return cls(target, scope=ctx.scope, **common, **args)  # type: ignore[no-any-return]

    return build


def _seeded_storage(cls: Any, target_key: str = "targets") -> _Builder:
    inner = _storage(cls, target_key)
    return lambda ctx, args: inner(ctx, _seeded(ctx, args))


def _process(cls: Any) -> _Builder:
    def build(ctx: DrillContext, args: dict[str, Any]) -> lib.Fault:
        common = _common(ctx, args)
        pid = _pid(ctx, args)
        if "sig" in args:
            args["sig"] = _sig(args["sig"])
        return cls(pid, scope=ctx.scope, **common, **args)  # type: ignore[no-any-return]

    return build


def _restart(ctx: DrillContext, args: dict[str, Any]) -> lib.Fault:
    common = _common(ctx, args)
    name = args.get("process")
    pid = _pid(ctx, args)
    command = [str(c) for c in args.pop("command")]
    command = [sys.executable if command[0] == "python" else command[0], *command[1:]]
    cwd = ctx.resolve(args.pop("cwd")) if "cwd" in args else ctx.base

    def adopt(proc: subprocess.Popen[bytes]) -> None:
        # The replacement takes over the name (and joins the scope).
        if name is not None:
            old = ctx.processes.get(str(name))
            if old is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    old.wait(timeout=10)  # reap it: it was stopped before this ran
            ctx.processes[str(name)] = proc
        ctx.widen_pid(proc.pid)

    return lib.RestartProcess(
        pid, command, scope=ctx.scope, cwd=cwd, on_restarted=adopt, quiet=True, **common, **args
    )


def _ransomware(ctx: DrillContext, args: dict[str, Any]) -> lib.Fault:
    common = _common(ctx, args)
    root = ctx.resolve(args.pop("root"))
    keyfile = ctx.resolve(args.pop("keyfile", ctx.events.path.parent / "ransomware.jsonl"))
    return lib.Ransomware(root, scope=ctx.scope, keyfile=keyfile, **common, **args)


def _ransomware_process(ctx: DrillContext, args: dict[str, Any]) -> lib.Fault:
    common = _common(ctx, args)
    root = ctx.resolve(args.pop("root"))
    keyfile = ctx.resolve(args.pop("keyfile", ctx.events.path.parent / "ransomware.jsonl"))
    return lib.RansomwareProcess(root, scope=ctx.scope, keyfile=keyfile, **common, **args)


def _data(cls: Any) -> _Builder:
    def build(ctx: DrillContext, args: dict[str, Any]) -> lib.Fault:
        common = _common(ctx, _seeded(ctx, args))
        dataset = ctx.resolve(args.pop("dataset"))
        if "copy_to" in args:
            args["copy_to"] = ctx.resolve(args["copy_to"])
        return cls(dataset, scope=ctx.scope, **common, **args)  # type: ignore[no-any-return]

    return build


def _corrupt_weights(ctx: DrillContext, args: dict[str, Any]) -> lib.Fault:
    common = _common(ctx, _seeded(ctx, args))
    return lib.CorruptWeights(
        ctx.resolve(args.pop("checkpoint")), scope=ctx.scope, **common, **args
    )


def _swap_model(ctx: DrillContext, args: dict[str, Any]) -> lib.Fault:
    common = _common(ctx, args)
    target = ctx.resolve(args.pop("target"))
    return lib.SwapModel(target, ctx.resolve(args.pop("replacement")), scope=ctx.scope, **common)


def _hog(cls: Any) -> _Builder:
    return lambda ctx, args: cls(**_common(ctx, args), **args)


def _toxic(ctx: DrillContext, args: dict[str, Any]) -> lib.Fault:
    common = _common(ctx, args)
    proxy = _named(ctx.proxies, str(args.pop("proxy")), "proxy")
    toxic_type = str(args.pop("type"))
    if toxic_type == "down":
        return lib.ToxicFault.down(proxy, **common)
    toxic = lib.Toxic(
        toxic_type,
        name=str(args.pop("toxic_name", "")),
        stream=args.pop("stream", "downstream"),
        toxicity=float(args.pop("toxicity", 1.0)),
        attributes={k: float(v) for k, v in args.pop("attributes", {}).items()},
    )
    if args:
        raise UsageError(f"network.toxic: unknown argument(s) {sorted(args)}")
    return lib.ToxicFault(proxy, toxic, **common)


def _http(ctx: DrillContext, args: dict[str, Any]) -> lib.Fault:
    common = _common(ctx, args)
    upstream = _named(ctx.upstreams, str(args.pop("upstream")), "upstream")
    return lib.HttpFaultInjection(upstream, lib.HttpFault.from_dict(args), **common)


def _named(table: dict[str, Any], name: str, what: str) -> Any:
    if name not in table:
        raise UsageError(
            f"drill: no {what} named {name!r}; start it first with start_{what} "
            f"(started: {sorted(table) or 'none'})"
        )
    return table[name]


#: Every fault an experiment can inject, by kind, with the arguments it takes.
FAULTS: dict[str, tuple[_Builder, str]] = {
    "storage.flip_bytes": (_seeded_storage(lib.FlipBytes), "targets, count, max_files"),
    "storage.truncate": (_storage(lib.TruncateFile), "targets, keep_fraction, max_files"),
    "storage.delete": (_storage(lib.DeleteFiles), "targets, max_files"),
    "storage.fill": (_storage(lib.FillDisk, "path"), "path, leave_bytes, max_bytes"),
    "storage.read_only": (_storage(lib.MakeReadOnly), "targets, max_files"),
    "storage.slow_reads": (_storage(lib.SlowReads, "path"), "path, bytes_per_s"),
    "ransomware.encrypt": (_ransomware, "root, keyfile, max_files, files_per_s, pattern"),
    "ransomware.process": (
        _ransomware_process,
        "root, keyfile, max_files, files_per_s, pattern, wait_s",
    ),
    "process.kill": (_process(lib.KillProcess), "process [match] | pid, sig (SIGKILL)"),
    "process.hang": (_process(lib.HangProcess), "process [match] | pid, tree"),
    "process.restart": (_restart, "process | pid, command, cwd, grace_s"),
    "process.cpu_hog": (_hog(lib.CpuHog), "workers, duration_s"),
    "process.memory_hog": (_hog(lib.MemoryHog), "megabytes, duration_s"),
    "network.toxic": (_toxic, "proxy, type, attributes, stream, toxicity"),
    "http.fault": (
        _http,
        "upstream, status, retry_after, first_byte_delay_s, cut_stream_after, "
        "chunk_delay_s, malformed_body, probability, times",
    ),
    "data.label_flip": (_data(lib.LabelFlip), "dataset, copy_to, fraction, label"),
    "data.schema_break": (_data(lib.SchemaBreak), "dataset, copy_to, mode, column"),
    "data.distribution_shift": (_data(lib.DistributionShift), "dataset, fraction, scale, offset"),
    "data.nan_injection": (_data(lib.NanInjection), "dataset, copy_to, fraction"),
    "model.corrupt_weights": (_corrupt_weights, "checkpoint, mode (nan|zero), fraction, tensors"),
    "model.swap": (_swap_model, "target, replacement"),
}


def inject(fault: str, name: str | None = None, **arguments: Any) -> dict[str, Any]:
    """Build the fault ``fault`` (a kind from ``FAULTS``) in the drill's scope and inject it."""
    ctx = current()
    if fault not in FAULTS:
        raise UsageError(f"unknown fault {fault!r}; `bastion drill faults` lists: {sorted(FAULTS)}")
    try:
        built = FAULTS[fault][0](ctx, dict(arguments))
    except ScopeError as exc:
        ctx.refusals.append(exc)
        raise
    except TypeError as exc:
        raise UsageError(f"fault {fault}: {exc}; it takes {FAULTS[fault][1]}") from None
    label = name or f"{fault}#{len(ctx.faults) + 1}"
    ctx.add_fault(label, built)
    details = built.inject()
    return {"name": label, "kind": built.kind, **details}


def revert(name: str | None = None) -> list[str]:
    """Revert the fault called ``name``, or every injected fault (newest first)."""
    ctx = current()
    if name is None:
        return ctx.revert_all()
    for label, fault in ctx.faults:
        if label == name:
            fault.revert()
            return [label]
    raise UsageError(f"revert: no fault named {name!r} was injected")


def start_process(
    name: str,
    command: list[str],
    cwd: str | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Start a process the drill may then fault (it joins the scope); return its pid.
    ``python`` as the first word means this interpreter. Its output goes to
    ``<state_dir>/drill/<name>.log``."""
    ctx = current()
    argv = [sys.executable if command[0] == "python" else command[0], *command[1:]]
    log = ctx.events.path.parent / "drill" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            cwd=str(ctx.resolve(cwd)) if cwd else str(ctx.base),
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    ctx.processes[name] = proc
    ctx.widen_pid(proc.pid)
    ctx.events.emit(ek.DRILL_PROCESS_STARTED, subject=name, pid=proc.pid, command=command[:4])
    return proc.pid


def stop_process(name: str) -> int | None:
    """Stop a process this drill started (SIGTERM, then SIGKILL); return its exit code."""
    proc = current().process(name)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def start_proxy(name: str, upstream_port: int, listen_port: int = 0) -> int:
    """Start a TCP fault proxy in front of ``upstream_port`` (which must be in scope)."""
    ctx = current()
    proxy = lib.TcpFaultProxy(
        upstream_port=upstream_port,
        scope=ctx.scope,
        listen_port=listen_port,
        name=name,
        seed=ctx.seed,
        events=ctx.events,
    ).start()
    ctx.proxies[name] = proxy
    ctx.widen_port(proxy.port)
    return proxy.port


def start_upstream(name: str, port: int = 0, reply: str | None = None) -> str:
    """Start an OpenAI-compatible fault upstream on 127.0.0.1; return its URL."""
    ctx = current()
    upstream = lib.FaultyUpstream(
        name=name, port=port, reply=reply, seed=ctx.seed, events=ctx.events
    ).start()
    ctx.upstreams[name] = upstream
    ctx.widen_port(upstream.port)
    return upstream.url


def set_http_fault(upstream: str, **fault: Any) -> dict[str, Any]:
    """Change a running upstream's fault directly (no revert bookkeeping)."""
    target = _named(current().upstreams, upstream, "upstream")
    target.set_fault(lib.HttpFault.from_dict(fault))
    return asdict(target.statistics())


def http_load(
    url: str,
    *,
    duration_s: float = 10.0,
    rps: float = 20.0,
    name: str = "load",
    method: str = "GET",
    body: str | None = None,
    timeout_s: float = 2.0,
) -> dict[str, Any]:
    """Background load: request ``url`` at ``rps`` for ``duration_s`` (or until the drill
    stops); count ok and failed requests. Emits ``drill.load.summary`` with
    ``requests_ok`` and ``requests_failed`` (the RPO of a service drill).

    A request is ok when it answers 2xx: a 4xx is a failed request too (a 429 from an
    overloaded gateway, a 400 from a model that refused the input), as the client sees it.
    The body is read whole, so a cut answer is a failure as well."""
    ctx = current()
    target = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    port = target.port or 80
    if target.hostname not in ("127.0.0.1", "localhost"):
        raise UsageError(f"http_load: {url} is not on 127.0.0.1; drills load local services")
    stats: dict[str, Any] = {"requests_ok": 0, "requests_failed": 0, "first_failure_ns": None}
    ctx.load[name] = stats
    path = target.path or "/"
    interval = 1.0 / rps if rps > 0 else 0.0
    end = time.monotonic() + duration_s
    next_at = time.monotonic()
    while time.monotonic() < end and not ctx.stop.is_set():
        ok = False
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
        try:
            headers = {"Content-Type": "application/json"} if body else {}
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            ok = 200 <= response.status < 300
        except (OSError, http.client.HTTPException):
            ok = False
        finally:
            conn.close()
        with ctx.lock:
            stats["requests_ok" if ok else "requests_failed"] += 1
            if not ok and stats["first_failure_ns"] is None:
                stats["first_failure_ns"] = time.monotonic_ns()
        next_at += interval
        ctx.stop.wait(max(0.0, next_at - time.monotonic()))
    ctx.events.emit(
        ek.DRILL_LOAD_SUMMARY,
        subject=name,
        requests_ok=stats["requests_ok"],
        requests_failed=stats["requests_failed"],
        url=url,
    )
    return dict(stats)


def wait_recovered(timeout_s: float = 60.0, poll_s: float = 0.1) -> bool:
    """Block until the continuous steady-state check holds again (or ``timeout_s``).

    Put it at the end of the method: the RTO is then measured by the continuous
    hypothesis itself. Returns False on timeout (the hypothesis after the method then
    fails, and the drill reports that the system never recovered).
    """
    ctx = current()
    started = time.monotonic_ns()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not ctx.stop.is_set():
        sample = ctx.last_sample()
        if sample is not None and sample.met and sample.mono_ns > started:
            return True
        ctx.stop.wait(poll_s)
    return False


def describe_faults() -> list[dict[str, str]]:
    """The library as a list: kind, what it does (first docstring line), arguments."""
    classes = {
        getattr(lib, name).kind: getattr(lib, name)
        for name in lib.__all__
        if isinstance(getattr(lib, name), type) and issubclass(getattr(lib, name), lib.Fault)
    }
    rows = []
    for kind, (_, arguments) in FAULTS.items():
        cls = classes.get(kind)
        doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("``", "") if cls else ""
        rows.append(
            {
                "kind": kind,
                "does": " ".join(doc.split()),
                "arguments": arguments,
                "revertible": "yes" if cls is None or cls.revertible else "no",
            }
        )
    return rows
