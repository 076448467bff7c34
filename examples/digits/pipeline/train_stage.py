"""Pipeline stage: train the digits MLP on a verified dataset and write the model.

The pipeline's counterpart of ``../train.py`` (which is a supervised, checkpointed job):
it reads the training CSV the runner restored under $BASTION_STAGE_INPUTS/data (only
after the data gate's verdict, its other input, passed) and writes ``model.safetensors``
and ``model.json`` (the format the gateway and the model gate read) to
$BASTION_STAGE_OUTPUT. The runner publishes them as the next ``model/digits``, with the
recipe to make them again (``bastion model reconstitute --from-lineage``). Seeded and
single-threaded, so the same data gives the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from train import BATCH, LR, SEED, parse_rows

from bastion.train import ResumableSampler, record_environment


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    data = Path(os.environ["BASTION_STAGE_INPUTS"]) / "data"
    x, y = parse_rows([p.read_bytes() for p in sorted(data.glob("*.csv"))])
    model = nn.Sequential(nn.Linear(64, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10))
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sampler = ResumableSampler(len(y), BATCH, seed=SEED)
    for _ in range(args.steps):
        idx = sampler.next_batch()
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = Path(os.environ["BASTION_STAGE_OUTPUT"])
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    (out / "model.safetensors").write_bytes(save(weights))
    spec = {
        "arch": "mlp",
        "layers": [64, args.hidden, 10],
        "activation": "relu",
        "input_scale": 1 / 16,
        "labels": list(range(10)),
    }
    (out / "model.json").write_text(json.dumps(spec))
    # torch's version and thread counts, as this process ran: what a rebuild from this
    # model's lineage must match to be bit-exact (bastion model reconstitute)
    record_environment()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    print(f"trained {args.steps} steps, train accuracy {acc:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
