"""Train a small MLP (64 -> 64 -> 10) on the digits dataset, resiliently.

Plain PyTorch plus Bastion's checkpoint API: the job reads its input from the vault
(verified), checkpoints asynchronously every N steps, feeds the supervisor's heartbeat
on every step, writes an emergency checkpoint on SIGTERM/SIGINT, resumes bit-exact
after any crash, and stores its final model as the snapshot ``model/digits`` with
lineage (dataset, code, config, run). The inference gateway serves that snapshot.

Run it under the supervisor:  bastion train run train-digits
or alone:                     python train.py --steps 400

Either way it needs the vault's signing key: from a fresh clone, run
``bastion init examples/digits`` once (it makes the keys and replica directories the
manifest names, and leaves the manifest as it is).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

from bastion import event_kinds as ek
from bastion.errors import BastionError
from bastion.events import Emit
from bastion.manifest import load
from bastion.train import Cadence, Checkpointer, ResumableSampler, VaultStore

HERE = Path(__file__).resolve().parent
BATCH = 64
LR = 1e-3
SEED = 0


def parse_rows(blobs: list[bytes]) -> tuple[torch.Tensor, torch.Tensor]:
    rows: list[list[float]] = []
    labels: list[int] = []
    for blob in blobs:
        reader = csv.reader(io.StringIO(blob.decode()))
        next(reader)
        for row in reader:
            rows.append([float(v) / 16.0 for v in row[:-1]])
            labels.append(int(row[-1]))
    return torch.tensor(rows), torch.tensor(labels)


def load_input(vault, ref: str, local: Path, log: Emit, job: str):  # type: ignore[no-untyped-def]
    """The dataset's shards, read verified from the vault (snapshotting the local copy
    the first time, so the model's lineage names the exact bytes it trained on)."""
    name = ref.split("@", 1)[0]
    try:
        snap = vault.snapshot(ref)
    except BastionError:
        shards = sorted(local.glob("shard-*.csv"))
        snap = vault.commit(name, {p.name: p for p in shards}, meta={"source": str(local)})
    blobs = [vault.read(snap, path) for path in sorted(snap.files)]
    log.emit(ek.DEP_USED, job, target=snap.ref, via="input")
    return parse_rows(blobs), snap.ref


def state_hash(model: nn.Module, opt: torch.optim.Optimizer) -> str:
    h = hashlib.sha256()
    for key, t in sorted(model.state_dict().items()):
        h.update(key.encode() + t.numpy().tobytes())
    for idx, state in sorted(opt.state_dict()["state"].items()):
        for key, t in sorted(state.items()):
            h.update(f"{idx}.{key}".encode() + t.numpy().tobytes())
    return h.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--every", type=int, default=None, help="checkpoint every N steps")
    parser.add_argument("--manifest", type=Path, default=None)
    parser.add_argument("--job", default=os.environ.get("BASTION_JOB", "train-digits"))
    parser.add_argument("--hash-out", type=Path, default=None)
    parser.add_argument(
        "--step-ms",
        type=float,
        default=0.0,
        help="pad each step to at least this long (stands in for a bigger model, so a "
        "fault can be aimed at a given step); does not change the result",
    )
    args = parser.parse_args()
    began = time.monotonic()
    torch.manual_seed(SEED)
    # Bit-exact resume needs the same intra-op thread count in every attempt (CPU kernels
    # split their sums by thread; the default follows the machine): fix it, before any op.
    torch.set_num_threads(1)

    manifest_path = args.manifest or Path(os.environ.get("BASTION_MANIFEST", HERE / "bastion.yaml"))
    manifest = load(manifest_path)
    job_cfg = manifest.jobs.get(args.job)
    # The job's checkpointer as the manifest describes it: its vault (without the signing
    # key this stops with the fix, exit 2), its event log, its `checkpoint:` settings.
    ckpt = Checkpointer.from_env(
        args.job,
        manifest=manifest,
        **({"cadence": Cadence(every_steps=args.every)} if args.every else {}),
    )
    store = ckpt.store
    assert isinstance(store, VaultStore)
    vault = store.vault
    log = ckpt.events
    inputs = dict(job_cfg.inputs) if job_cfg else {}
    (x, y), dataset_ref = load_input(
        vault, inputs.get("data", "dataset/digits@latest"), HERE / "dataset", log, args.job
    )

    model = nn.Sequential(nn.Linear(64, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10))
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sampler = ResumableSampler(len(y), BATCH, seed=SEED)
    ckpt.track(model=model, optimizer=opt, data=sampler)
    start = ckpt.restore()
    print(f"start at step {start} ({time.monotonic() - began:.2f} s after launch)", flush=True)

    for step in range(start, args.steps):
        step_began = time.monotonic()
        idx = sampler.next_batch()
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if args.step_ms:
            time.sleep(max(0.0, args.step_ms / 1000 - (time.monotonic() - step_began)))
        ckpt.step(step + 1)
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f}", flush=True)
    ckpt.wait()  # the cadence may have begun a save of the last step: let it land first
    if ckpt.statistics().last_saved_step != args.steps:
        ckpt.save(args.steps, reason="final", block=True)

    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    digest = state_hash(model, opt)
    if args.hash_out:
        args.hash_out.write_text(digest)
    store_model(vault, model, args, job_cfg=job_cfg, dataset_ref=dataset_ref, acc=acc, log=log)
    log.emit(ek.TRAIN_FINISHED, args.job, steps=args.steps, accuracy=acc, state_hash=digest)
    ckpt.close()  # last: it also closes the event log it opened
    print(f"done: {args.steps} steps, train accuracy {acc:.3f}, state {digest[:16]}")
    return 0


def store_model(vault, model, args, *, job_cfg, dataset_ref, acc, log):  # type: ignore[no-untyped-def]
    """``model/digits``: the format the gateway serves (keep it)."""
    from safetensors.torch import save

    run_id = os.environ.get("BASTION_RUN_ID", "manual")
    config = {"steps": args.steps, "hidden": args.hidden, "batch": BATCH, "lr": LR, "seed": SEED}
    code = vault.commit(f"code/{args.job}", {"train.py": Path(__file__)})
    conf = vault.commit(
        f"config/{args.job}",
        {
            "config.json": json.dumps(
                {**config, "job": job_cfg.model_dump(mode="json") if job_cfg else None},
                sort_keys=True,
            ).encode()
        },
    )
    run = vault.commit(
        f"run/{args.job}",
        {"run.json": json.dumps({"run_id": run_id, "accuracy": acc}, sort_keys=True).encode()},
        meta={"run_id": run_id},
    )
    lineage = [r for r in (dataset_ref, code.ref, conf.ref, run.ref) if r]
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    spec = {
        "arch": "mlp",
        "layers": [64, args.hidden, 10],
        "activation": "relu",
        "input_scale": 1 / 16,
        "labels": list(range(10)),
    }
    snap = vault.commit(
        "model/digits",
        {"model.safetensors": save(weights), "model.json": json.dumps(spec).encode()},
        meta={"accuracy": acc, "steps": args.steps, "job": args.job, "run_id": run_id},
        lineage=lineage,
    )
    log.emit(ek.TRAIN_MODEL_STORED, args.job, ref=snap.ref, lineage=lineage, accuracy=acc)
    print(f"stored {snap.ref} (lineage: {', '.join(lineage)})", flush=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BastionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
