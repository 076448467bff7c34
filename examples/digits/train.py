"""Train a small MLP on the digits dataset (CSV shards in ./dataset).

A plain PyTorch script. The training issue wires Bastion's checkpoint API into it so the
job survives crashes, hangs and preemption and resumes bit-exact.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch
from torch import nn


def load_dataset(directory: Path) -> tuple[torch.Tensor, torch.Tensor]:
    rows: list[list[float]] = []
    labels: list[int] = []
    for shard in sorted(directory.glob("shard-*.csv")):
        with shard.open() as handle:
            reader = csv.reader(handle)
            next(reader)
            for row in reader:
                rows.append([float(v) / 16.0 for v in row[:-1]])
                labels.append(int(row[-1]))
    return torch.tensor(rows), torch.tensor(labels)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--data", type=Path, default=Path(__file__).parent / "dataset")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x, y = load_dataset(args.data)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for step in range(args.steps):
        idx = torch.randint(0, len(y), (64,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f}", flush=True)
    acc = (model(x).argmax(1) == y).float().mean().item()
    print(f"done: {args.steps} steps, train accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
