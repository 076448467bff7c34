"""Demo scene: continuous validation. A poisoned dataset is stopped at the data gate and
``@prod`` does not move; a clean one passes, the model trained on it passes the model gate
and is promoted; then the model file under a live replica is swapped, the replica
restarts on it and answers 200 but wrongly, and golden probes eject it while client
requests keep succeeding on the other replica.

Every wait is for a state (a replica routable, a golden round answered, a backend
ejected), never for a time, so the scene holds on a slow, busy machine. The models are
trained here with NumPy (a 64-32-10 ReLU MLP, full-batch Adam, fixed seeds, a second or
so), in the layout the replicas serve and the model gate reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from bastion.demo import DemoContext, Scene
    from bastion.validate import Table
    from bastion.vault import Vault

TITLE = "Validation: a poisoned dataset stopped, a clean one promoted, a swapped model caught"
MODEL = "model/digits"
_SPEC = {"arch": "mlp", "layers": [64, 32, 10], "activation": "relu", "input_scale": 1 / 16}
_TRAIN, _HOLDOUT = 1200, 1598  # rows [0, 1200) train, [1200, 1598) held out, the rest golden
_WAIT_S = 60.0
_EVERY_S = 1.0


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Small matrices run faster on one BLAS thread than on many fighting over a busy
    machine's two cores (the training here, the gates' statistics)."""
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
    except ImportError:  # not a dependency of Bastion's; without it, only slower
        yield
        return
    with threadpool_limits(1):
        yield


def train_mlp(x: np.ndarray, y: np.ndarray, keep: tuple[int, ...]) -> list[dict[str, np.ndarray]]:
    """One training run of the example's 64-32-10 ReLU MLP (full-batch Adam, seed 0); the
    weights after each of the steps in ``keep``, as safetensors keys. The model gate's
    tests train with it too."""
    rng = np.random.default_rng(0)
    params = [
        rng.normal(0, 1 / 8, (32, 64)).astype(np.float32),
        np.zeros(32, np.float32),
        rng.normal(0, 1 / np.sqrt(32), (10, 32)).astype(np.float32),
        np.zeros(10, np.float32),
    ]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    xs, target = x / 16, np.eye(10, dtype=np.float32)[y]
    names = ("0.weight", "0.bias", "2.weight", "2.bias")
    out = []
    for t in range(1, max(keep) + 1):
        w0, b0, w1, b1 = params
        h = np.maximum(xs @ w0.T + b0, 0)
        z = h @ w1.T + b1
        p = np.exp(z - z.max(axis=1, keepdims=True))
        g = (p / p.sum(axis=1, keepdims=True) - target) / len(y)
        gh = g @ w1
        gh[h <= 0] = 0
        for i, grad in enumerate((gh.T @ xs, gh.sum(0), g.T @ h, g.sum(0))):
            m[i] = 0.9 * m[i] + 0.1 * grad
            v[i] = 0.999 * v[i] + 0.001 * grad * grad
            params[i] -= 0.01 * (m[i] / (1 - 0.9**t)) / (np.sqrt(v[i] / (1 - 0.999**t)) + 1e-8)
        if t in keep:
            out.append(dict(zip(names, (p.copy() for p in params), strict=True)))
    return out


def _model_files(weights: dict[str, np.ndarray]) -> dict[str, bytes]:
    from safetensors.numpy import save

    spec = {**_SPEC, "labels": list(range(10))}
    return {"model.safetensors": save(weights), "model.json": json.dumps(spec).encode()}


def _arrays(table: Table) -> tuple[np.ndarray, np.ndarray]:
    x = np.column_stack([table.numbers(f"p{i}").values for i in range(64)]).astype(np.float32)
    return x, table.numbers("label").values.astype(int)


def _csv(header: str, lines: list[str]) -> bytes:
    return ("\n".join([header, *lines]) + "\n").encode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(cond: Callable[[], bool], seconds: float = _WAIT_S) -> bool:
    from bastion.demo._load import wait_for

    return wait_for(cond, seconds)


def _gates(ctx: DemoContext, vault: Vault, scene: Scene) -> dict[str, Any] | None:
    """Parts 1 and 2: the poisoned dataset stopped, the clean one and its model promoted."""
    from bastion.drill.faults import LabelFlip, Scope
    from bastion.validate import (
        ModelGateConfig,
        ModelVerdict,
        PromotionRefused,
        Status,
        Table,
        promote,
        read_table,
        validate_data,
        validate_model,
    )

    source = ctx.workdir / "dataset"
    reference = vault.commit("dataset/digits", {p.name: p for p in sorted(source.glob("*.csv"))})
    parts = [read_table(p.name, p.read_bytes()) for p in sorted(source.glob("*.csv"))]
    x, y = _arrays(Table.concat(parts))
    lines = [ln for p in sorted(source.glob("*.csv")) for ln in p.read_text().splitlines()[1:]]
    header = (source / "shard-00.csv").read_text().splitlines()[0]

    # production before the scene: a model trained briefly, the baseline to beat
    early, later = train_mlp(x[:_TRAIN], y[:_TRAIN], (80, 200))
    baseline = vault.commit(MODEL, _model_files(early))
    vault.label(MODEL, baseline.version, "prod")
    holdout = vault.commit(
        "dataset/digits-holdout", {"holdout.csv": _csv(header, lines[_TRAIN:_HOLDOUT])}
    )

    # 1. a poisoned batch: labels flipped (LabelFlip from the fault library)
    poisoned_dir = ctx.workdir / "incoming-poisoned"
    with LabelFlip(source, scope=Scope.of(paths=[poisoned_dir]), copy_to=poisoned_dir, seed=7):
        poisoned = vault.commit(
            "dataset/digits", {p.name: p for p in sorted(poisoned_dir.glob("*.csv"))}
        )
    run = validate_data(vault, poisoned.ref, reference.ref)
    first = run.verdict.findings[0] if run.verdict.findings else None
    prod_after = vault.labels(MODEL).get("prod")
    scene.findings.append(
        f"data gate on the poisoned {poisoned.ref} (labels flipped): {run.status.upper()}"
        + (f" - {first.check}: {first.message}" if first else "")
    )
    scene.findings.append(
        f"so nothing was trained on it: {MODEL}@prod is still @{prod_after} "
        f"(verdict {run.snapshot.ref if run.snapshot else '-'})"
    )
    if run.status is Status.PASSED or prod_after != baseline.version:
        scene.ok = False
        return None

    # 2. a clean batch passes; the model trained on it passes the model gate; promoted
    clean = vault.commit("dataset/digits", {p.name: p for p in sorted(source.glob("*.csv"))})
    data_run = validate_data(vault, clean.ref, reference.ref)
    candidate = vault.commit(
        MODEL,
        _model_files(later),
        lineage=[clean.ref],
    )
    # the golden set: examples past the held-out rows that the candidate answers right
    from bastion.serve.replica import Mlp

    model = Mlp.from_bytes(
        vault.read(candidate, "model.safetensors"), vault.read(candidate, "model.json"), "c"
    )
    rows = np.arange(_HOLDOUT, len(y))
    right = rows[model.logits(x[rows]).argmax(axis=1) == y[rows]]
    golden = vault.commit(
        "dataset/digits-golden", {"golden.csv": _csv(header, [lines[i] for i in right])}
    )
    refused = ""
    try:
        promote(vault, candidate.ref)
    except PromotionRefused as exc:
        refused = exc.reason
    gate = validate_model(
        vault,
        candidate.ref,
        f"{MODEL}@prod",
        holdout=holdout.ref,
        golden=golden.ref,
        config=ModelGateConfig(seed=0),
    )
    scene.findings.append(
        f"data gate on the clean {clean.ref}: {data_run.status.upper()}; {candidate.ref} "
        "trained on it; promoting it before its model gate was refused (no verdict names it)"
    )
    criteria = gate.verdict.criteria if isinstance(gate.verdict, ModelVerdict) else ()
    crit = criteria[0] if criteria else None
    detail = (
        f" ({crit.set} accuracy {crit.candidate:.3f} vs {crit.baseline:.3f}, "
        f"95% lower bound of the gain {crit.low:+.3f})"
        if crit is not None and crit.baseline is not None
        else ""
    )
    if data_run.status is not Status.PASSED or gate.status is not Status.PASSED or not refused:
        scene.findings.append(f"model gate: {gate.status.upper()}{detail}")
        scene.ok = False
        return None
    done = promote(vault, candidate.ref)
    scene.findings.append(
        f"model gate: PASSED{detail}; promoted {MODEL}@prod @{done.previous} -> "
        f"@{done.version} (verdict {done.verdict})"
    )
    return {"candidate": candidate, "golden": golden.ref}


def _swap(ctx: DemoContext, vault: Vault, scene: Scene, candidate: Any, golden_ref: str) -> None:
    """Part 3: two supervised replicas of @prod behind the gateway with golden probes;
    the model under one is swapped, it restarts on it, and golden probes eject it."""
    from bastion import event_kinds as ek
    from bastion.demo._load import predict_load
    from bastion.drill.faults import Scope, SwapModel, degrade
    from bastion.events import EventWriter
    from bastion.serve import Gateway, GatewayThread, GoldenProber, UpstreamSpec, load_golden
    from bastion.supervise import Backoff, ProcessSpec, RestartBudget, Supervisor

    manifest = ctx.manifest()
    service_name, service = next(iter(manifest.services.items()))
    golden = load_golden(vault, golden_ref)
    sink = EventWriter.in_state_dir(manifest.state_dir, segment=service.segment or "")
    gw = Gateway(service_name, service.policy, events=sink, probe_interval_s=0.2)
    prober = GoldenProber(gw, golden, every_s=_EVERY_S)
    root = ctx.workdir / "replicas"
    sups: dict[str, Supervisor] = {}
    for name in ("digits-a", "digits-b"):
        vault.restore(candidate, root / name)
        port = _free_port()
        gw.add_upstream(
            UpstreamSpec(name, f"http://127.0.0.1:{port}", kind="local", probe_path="/health"),
            needs_probe=True,
        )
        argv = [sys.executable, "-m", "bastion.serve.replica", candidate.ref, "--dir"]
        spec = ProcessSpec(
            argv=[*argv, str(root / name), "--port", str(port)],
            name=name,
            log_path=root / f"{name}.log",
        )
        sups[name] = Supervisor(
            spec,
            backoff=Backoff(initial=0.05, factor=2.0, cap=1.0, jitter=0.2),
            budget=RestartBudget(max_restarts=10, window_s=600),
            restart_on="always",
            grace_s=2.0,
        )
    counts = {"ok": 0, "failed": 0, "wrong": 0}
    stop = threading.Event()
    body = json.dumps({"inputs": [list(golden.inputs[0])]}).encode()
    expected = golden.expected[0]

    victim = "digits-a"
    caught = held_out = False
    with GatewayThread(gw) as thread:
        try:
            for sup in sups.values():
                sup.start()
            thread.call(prober.start())

            def rounds(name: str, result: str) -> int:
                return int(thread.run(lambda: prober.counts.get((name, result), 0)))

            if not _wait(lambda: all(rounds(n, "right") >= 1 for n in sups)):
                scene.findings.append("the replicas did not answer a golden round in time")
                scene.ok = False
                return
            loader = threading.Thread(
                target=lambda: asyncio.run(
                    predict_load(thread.url, body, stop, counts, expected=expected)
                ),
                daemon=True,
            )
            loader.start()
            _wait(lambda: counts["ok"] >= 200)
            target = root / victim / "model.safetensors"
            worse = degrade(target, ctx.workdir / "degraded.safetensors", noise=1.0, seed=7)
            child = sups[victim].child
            with SwapModel(target, worse, scope=Scope.of(paths=[root / victim])):
                if child is not None:
                    os.kill(child.pid, signal.SIGKILL)  # it restarts, on the swapped file
                caught = _wait(lambda: victim in thread.run(lambda: set(prober.failing)))
                before = counts["ok"]
                _wait(lambda: counts["ok"] >= before + 200)
                held_out = not thread.run(gw.pool.upstreams[victim].routable)
            stop.set()
            loader.join(timeout=15)
            stats = thread.run(prober.statistics)
        finally:
            stop.set()
            thread.call(prober.close())
            for sup in sups.values():
                sup.stop(timeout=5)
    sink.close()
    events = ctx.events().query(kind="serve.*")
    failed = [e for e in events if e.kind == ek.SERVE_GOLDEN_FAILED and e.subject == service_name]
    held_s = failed[-1].data.get("held_s") if failed else None
    scene.findings.append(
        f"served {MODEL}@prod from 2 supervised replicas, golden probes every {_EVERY_S:g} s "
        f"({len(golden)} examples from {golden.ref}, labelled x-bastion-probe: golden)"
    )
    if caught and held_s is not None:
        scene.findings.append(
            f"swapped the model file under {victim} (SwapModel, degraded weights); it restarted "
            f"on it and passed its health probe, but was held out until a golden round: it "
            f"answered {failed[-1].data['wrong']} of {failed[-1].data['total']} golden "
            f"examples wrongly and was ejected {held_s:.2f} s ({held_s / _EVERY_S:.2f} probe "
            "intervals) after it was up again"
        )
    else:
        scene.findings.append(f"{victim} was not caught by golden probes within {_WAIT_S:g} s")
    scene.findings.append(
        f"client requests under 4 concurrent clients: {counts['ok']} answered, "
        f"{counts['failed']} failed, {counts['wrong']} answered wrongly; "
        f"{sum(stats.rounds.values())} golden rounds (counted apart from user traffic); "
        f"{victim} still held out: {held_out}"
    )
    scene.ok = (
        scene.ok
        and caught
        and held_s is not None
        and held_out
        and counts["failed"] == 0
        and counts["wrong"] == 0
    )


def run(ctx: DemoContext) -> Scene:
    from bastion.demo import Scene
    from bastion.starter import init
    from bastion.vault import Vault

    scene = Scene(TITLE)
    init(ctx.workdir)  # the vault's keys, as a user's `bastion init` makes them (idempotent)
    vault = Vault.from_manifest(ctx.manifest())
    shutil.rmtree(ctx.workdir / "replicas", ignore_errors=True)
    with _one_thread():
        made = _gates(ctx, vault, scene)
    if made is None:
        scene.ok = False
        return scene
    _swap(ctx, vault, scene, made["candidate"], made["golden"])
    return scene
