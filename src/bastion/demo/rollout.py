"""Demo scene: progressive delivery of a model. A candidate with a hidden regression (its
weights degraded: it loads, passes its health probe and answers 200, but wrongly) is
rolled out as a canary under load and rolled back by the analysis; then a good candidate
(retrained longer, with a passing model-gate verdict) is rolled out the same way and
promoted through the validation gate. No client request may fail across either.

The scene runs the service's gateway, its supervised stable replicas of ``@prod`` and a
``RolloutController`` in this process (the same parts ``bastion serve`` builds), with a
short rollout policy so it ends in seconds (``POLICY``; a real service keeps the
manifest's). Every wait is for a state (a replica routable, a rollout ended), never for a
time. The models come from the validation scene when it ran before (``@prod``, the
held-out and golden sets); alone, the scene makes them the same way.

``prepare`` is shared with ``benchmarks/rollout.py``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from bastion.demo import DemoContext, Scene
    from bastion.manifest import Manifest
    from bastion.vault import Snapshot, Vault

TITLE = "Rollout: a candidate with a hidden regression rolled back, a good one promoted"
MODEL = "model/digits"
#: the demo's rollout policy: short steps, so the scene ends in seconds
POLICY: dict[str, Any] = {
    "steps": [10.0, 50.0, 100.0],
    "interval_s": 1.0,
    "looks_per_step": 1,
    "min_samples": 30,
    "max_extensions": 10,
}
_WAIT_S = 60.0
_USERS = 1000  # distinct x-bastion-user values: the canary's share is by user


@dataclass(frozen=True)
class Candidates:
    """What a rollout demo or benchmark needs: the serving model, a bad and a good
    candidate, and a request body whose answer tells them apart."""

    prod: Snapshot
    bad: Snapshot
    good: Snapshot
    body: bytes
    expected: str  # the answer of @prod and the good candidate; the bad one's differs
    gate: str  # the good candidate's model-gate verdict, in one line


def prepare(vault: Vault, workdir: Any) -> Candidates:
    """``@prod`` (made as the validation scene makes it when missing), a degraded copy of
    it (the bad candidate) and a model trained longer with a passing model-gate verdict
    against ``@prod`` (the good one)."""
    from bastion.demo.validate import _arrays, _csv, _model_files, _one_thread, train_mlp
    from bastion.drill.faults import degrade
    from bastion.errors import BastionError
    from bastion.serve.replica import Mlp
    from bastion.validate import (
        ModelGateConfig,
        ModelVerdict,
        Status,
        Table,
        read_table,
        validate_model,
    )

    source = workdir / "dataset"
    parts = [read_table(p.name, p.read_bytes()) for p in sorted(source.glob("*.csv"))]
    x, y = _arrays(Table.concat(parts))
    with _one_thread():
        later, longer = train_mlp(x[:1200], y[:1200], (200, 400))
    try:
        prod = vault.snapshot(f"{MODEL}@prod")
        holdout = vault.snapshot("dataset/digits-holdout")
        golden = vault.snapshot("dataset/digits-golden")
    except BastionError:  # the validation scene did not run: make what it leaves
        lines = [ln for p in sorted(source.glob("*.csv")) for ln in p.read_text().splitlines()[1:]]
        header = (source / "shard-00.csv").read_text().splitlines()[0]
        prod = vault.commit(MODEL, _model_files(later))
        vault.label(MODEL, prod.version, "prod")
        holdout = vault.commit(
            "dataset/digits-holdout", {"holdout.csv": _csv(header, lines[1200:1598])}
        )
        model = Mlp.from_bytes(
            vault.read(prod, "model.safetensors"), vault.read(prod, "model.json"), "p"
        )
        rows = np.arange(1598, len(y))
        right = rows[model.logits(x[rows]).argmax(axis=1) == y[rows]]
        golden = vault.commit(
            "dataset/digits-golden", {"golden.csv": _csv(header, [lines[i] for i in right])}
        )
    tmp = workdir / "rollout-models"
    tmp.mkdir(exist_ok=True)
    (tmp / "prod.safetensors").write_bytes(vault.read(prod, "model.safetensors"))
    degrade(tmp / "prod.safetensors", tmp / "bad.safetensors", noise=1.5, seed=11)
    spec = vault.read(prod, "model.json")
    bad = vault.commit(
        MODEL, {"model.safetensors": (tmp / "bad.safetensors").read_bytes(), "model.json": spec}
    )
    good = vault.commit(MODEL, _model_files(longer))
    with _one_thread():
        run = validate_model(
            vault,
            good.ref,
            prod.ref,
            holdout=holdout.ref,
            golden=golden.ref,
            config=ModelGateConfig(seed=0),
        )
    criteria = run.verdict.criteria if isinstance(run.verdict, ModelVerdict) else ()
    crit = criteria[0] if criteria else None
    gate = f"model gate on {good.ref} against {prod.ref}: {run.status.upper()}" + (
        f" ({crit.set} accuracy {crit.candidate:.3f} vs {crit.baseline:.3f})"
        if crit is not None and crit.baseline is not None
        else ""
    )
    if run.status is not Status.PASSED:
        gate += " - the good candidate's promotion will be refused"

    def predict(snap: Snapshot, rows: np.ndarray) -> np.ndarray:
        m = Mlp.from_bytes(
            vault.read(snap, "model.safetensors"), vault.read(snap, "model.json"), "m"
        )
        return np.asarray(m.logits(rows).argmax(axis=1))

    rows = x[1598:].astype(np.float32)
    p, b, g = predict(prod, rows), predict(bad, rows), predict(good, rows)
    usable = np.flatnonzero((p == g) & (p != b))
    i = int(usable[0]) if usable.size else 0
    body = json.dumps({"inputs": [rows[i].tolist()]}).encode()
    return Candidates(prod, bad, good, body, str(int(p[i])), gate)


def _placed(failures: list[tuple[float, str]], phases: list[tuple[float, str]]) -> list[str]:
    """Each distinct (phase, reason) of ``failures``, with its count: where a failed
    request fell, so a failed scene says what to look at."""
    seen: dict[tuple[str, str], int] = {}
    for when, why in failures:
        phase = next((what for began, what in reversed(phases) if began <= when), "start-up")
        seen[(phase, why)] = seen.get((phase, why), 0) + 1
    return [f"{n}x during {phase}: {why}" for (phase, why), n in seen.items()]


def with_policy(manifest: Manifest, service: str, **policy: Any) -> Manifest:
    """``manifest`` with ``services.<service>.rollout`` replaced by ``policy`` (validated)."""
    from bastion.manifest import RolloutPolicy

    svc = manifest.services[service]
    rollout = RolloutPolicy.model_validate({**svc.rollout.model_dump(), **policy})
    return manifest.model_copy(
        update={
            "services": {**manifest.services, service: svc.model_copy(update={"rollout": rollout})}
        }
    )


def run(ctx: DemoContext) -> Scene:
    from bastion import event_kinds as ek
    from bastion.demo import Scene
    from bastion.demo._load import predict_load
    from bastion.demo._load import wait_for as wait
    from bastion.errors import BastionError
    from bastion.events import EventWriter
    from bastion.rollout import RolloutController
    from bastion.serve import Gateway, GatewayThread, ReplicaSet
    from bastion.starter import init
    from bastion.vault import Vault

    scene = Scene(TITLE)
    init(ctx.workdir)  # the vault's keys (idempotent)
    base = ctx.manifest()
    service_name, service = next(iter(base.services.items()))
    manifest = with_policy(base, service_name, **POLICY)
    vault = Vault.from_manifest(manifest)
    made = prepare(vault, ctx.workdir)
    scene.findings.append(
        f"serving {made.prod.ref} (@prod); candidates: {made.bad.ref} (its weights degraded: "
        f"it loads and answers 200, wrongly) and {made.good.ref} (trained longer; "
        f"{made.gate})"
    )
    if "PASSED" not in made.gate:
        scene.ok = False
    local = next(b for b in service.backends if b.model is not None)
    sink = EventWriter.in_state_dir(manifest.state_dir, segment=service.segment or "")
    gw = Gateway(service_name, service.policy, events=sink, probe_interval_s=0.2)
    sets = {
        local.name: ReplicaSet(
            gw,
            local,
            manifest_path=ctx.manifest_path,
            log_dir=manifest.state_dir / "serve" / service_name,
            model=made.prod.ref,
        )
    }
    controller = RolloutController(gw, manifest, sets)
    counts = {"ok": 0, "failed": 0, "wrong": 0}
    backends: dict[str, int] = {}
    failures: list[tuple[float, str]] = []
    phases: list[tuple[float, str]] = []  # (when it began, what): to place each failure
    stop = threading.Event()
    results: dict[str, Any] = {}
    with GatewayThread(gw) as thread:
        thread.call(sets[local.name].start())
        loader = threading.Thread(
            target=lambda: asyncio.run(
                predict_load(
                    thread.url,
                    made.body,
                    stop,
                    counts,
                    expected=made.expected,
                    users=_USERS,
                    backends=backends,
                    failures=failures,
                )
            ),
            daemon=True,
        )
        try:
            # all of @prod's replicas up before the load: its first requests are not on a
            # lone replica while the others start
            stable = sets[local.name]
            if not wait(
                lambda: thread.run(stable.ready) >= stable.autoscaler.min_replicas, _WAIT_S
            ):
                scene.findings.append(f"the stable replicas were not ready within {_WAIT_S:g} s")
                scene.ok = False
                return scene
            phases.append((time.monotonic(), "warm-up, before the first rollout"))
            loader.start()
            wait(lambda: counts["ok"] >= 200, _WAIT_S)
            for which, snap in (("bad", made.bad), ("good", made.good)):
                phases.append((time.monotonic(), f"the rollout of {snap.ref}"))
                before = dict(counts)
                seen_before = _candidate_answers(backends)
                started = time.monotonic()
                try:
                    thread.call(controller.start(snap.ref), timeout=_WAIT_S)
                except BastionError as exc:
                    scene.findings.append(f"the rollout of {snap.ref} did not start: {exc}")
                    scene.ok = False
                    break
                ended = wait(
                    lambda: (
                        thread.run(lambda: controller.record.status)  # type: ignore[union-attr]
                        not in ("starting", "running")
                    ),
                    _WAIT_S,
                )
                record = thread.run(lambda: controller.record)
                assert record is not None
                results[which] = {
                    "record": record,
                    "ended": ended,
                    "wall_s": time.monotonic() - started,
                    "candidate_answers": _candidate_answers(backends) - seen_before,
                    "ok": counts["ok"] - before["ok"],
                    "failed": counts["failed"] - before["failed"],
                    "wrong": counts["wrong"] - before["wrong"],
                    "prod": vault.labels(MODEL).get("prod"),
                }
            # after the promotion, the promoted set answers
            phases.append((time.monotonic(), "after the promotion, the old replicas retiring"))
            after = _candidate_answers(backends)
            promoted = "good" in results and results["good"]["record"].status == "promoted"
            served = promoted and wait(lambda: _candidate_answers(backends) > after + 50, _WAIT_S)
            stop.set()
            loader.join(timeout=15)
        finally:
            stop.set()
            thread.call(controller.close())
            for rs in list(sets.values()):
                thread.call(rs.close())
    sink.close()
    events = ctx.events().query(kind="rollout.*")
    labels = vault.labels(MODEL)

    bad, good = results.get("bad"), results.get("good")
    if bad is None or good is None:
        scene.findings.append("the rollouts did not run")
        scene.ok = False
        return scene
    b_rec, g_rec = bad["record"], good["record"]
    timing = _step_to_end(events, b_rec.id, ek.ROLLOUT_ROLLED_BACK)
    scene.findings.append(
        f"canary of {made.bad.ref} under 4 concurrent clients ({_USERS} users, sticky by "
        f"x-bastion-user), steps {', '.join(f'{s:g}%' for s in POLICY['steps'])}, one "
        f"analysis every {POLICY['interval_s']:g} s: {b_rec.status.upper().replace('_', ' ')}"
        + (
            f" {timing:.2f} s ({timing / POLICY['interval_s']:.1f} intervals) after it took "
            f"{b_rec.steps[b_rec.step]:g}% of traffic"
            if timing is not None
            else ""
        )
    )
    scene.findings.append(f"  why: {_short(b_rec.reason)}")
    scene.findings.append(
        f"  it answered {bad['candidate_answers']} requests before its share went to 0 (its "
        f"wrong answers: {bad['wrong']}); {made.prod.ref} stayed @prod "
        f"(@prod is @{bad['prod']}); clients: {bad['ok']} answered, "
        f"{bad['failed']} failed"
    )
    scene.findings.append(
        f"canary of {made.good.ref}: {g_rec.status.upper()} after {g_rec.looks} analyses in "
        f"{good['wall_s']:.1f} s (its replicas' start included): {_short(g_rec.reason)}; "
        f"@prod is now @{labels.get('prod')}; the old replicas drained, then stopped"
    )
    scene.findings.append(
        f"  clients: {good['ok']} answered, {good['failed']} failed, {good['wrong']} answered "
        f"wrongly; the promoted replicas "
        + ("answer now" if served else "did not answer afterwards")
    )
    scene.findings.append(
        f"in all: {counts['ok']} client requests answered, {counts['failed']} failed"
    )
    for line in _placed(failures, phases):
        scene.findings.append(f"  failed: {line}")
    scene.ok = (
        scene.ok
        and bad["ended"]
        and b_rec.status == "rolled_back"
        and "gate" not in b_rec.reason
        and bad["candidate_answers"] > 0
        and bad["prod"] == made.prod.version
        and good["ended"]
        and g_rec.status == "promoted"
        and labels.get("prod") == made.good.version
        and served
        and counts["failed"] == 0
        and good["wrong"] == 0
    )
    return scene


def _candidate_answers(backends: dict[str, int]) -> int:
    return sum(n for name, n in list(backends.items()) if "-candidate-" in name)


def _step_to_end(events: list[Any], rollout: str, kind: str) -> float | None:
    """Seconds from the rollout's first step (its candidate taking traffic) to ``kind``."""
    mine = [e for e in events if e.data.get("rollout") == rollout]
    step = next((e for e in mine if e.kind == "rollout.step"), None)
    end = next((e for e in mine if e.kind == kind), None)
    if step is None or end is None:
        return None
    return float((end.mono_ns - step.mono_ns) / 1e9)


def _short(reason: str, limit: int = 240) -> str:
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."
