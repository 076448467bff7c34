"""The example's model format, ``mlp``: a ReLU MLP as ``model.safetensors`` (keys
``<i>.weight`` / ``<i>.bias``, as ``torch.nn.Sequential`` of ``Linear`` and ``ReLU``
saves them) and ``model.json`` (``input_scale``, ``labels``), run by numpy.

Owns: ``Mlp`` (the forward pass: no torch import, so a replica starts in well under a
second), ``random_model`` (the files of an untrained digits MLP: the demo's and the
tests' stand-in) and ``load`` (the format's loader for ``_formats``).

Must never: import torch.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from bastion.errors import UsageError
from bastion.serve._formats import ModelFiles
from bastion.serve._tensor import TensorModel

__all__ = ["Mlp", "load", "random_model"]


class Mlp(TensorModel):
    """A ReLU MLP stored as safetensors keys ``<i>.weight`` / ``<i>.bias``."""

    format = "mlp"
    labels: list[Any]

    def __init__(
        self,
        weights: list[tuple[np.ndarray, np.ndarray]],
        input_scale: float,
        labels: list[Any],
        name: str,
    ) -> None:
        self.weights = weights
        self.input_scale = input_scale
        super().__init__(name, (int(weights[0][0].shape[1]),), np.dtype(np.float32), labels)

    @classmethod
    def from_bytes(cls, tensors: bytes, meta_json: bytes, name: str) -> Mlp:
        from safetensors.numpy import load as load_tensors

        meta = json.loads(meta_json)
        arrays = load_tensors(tensors)
        layers = sorted({int(k.split(".")[0]) for k in arrays})
        weights = [
            (arrays[f"{i}.weight"].astype(np.float32), arrays[f"{i}.bias"].astype(np.float32))
            for i in layers
        ]
        return cls(
            weights,
            float(meta.get("input_scale", 1.0)),
            list(meta.get("labels", range(weights[-1][0].shape[0]))),
            name,
        )

    @property
    def n_inputs(self) -> int:
        return int(self.weights[0][0].shape[1])

    def hidden(self, batch: np.ndarray) -> np.ndarray:
        h = batch * self.input_scale
        for w, b in self.weights[:-1]:
            h = np.maximum(h @ w.T + b, 0.0)
        return h

    def logits(self, x: np.ndarray) -> np.ndarray:
        w, b = self.weights[-1]
        out: np.ndarray = self.hidden(x) @ w.T + b
        return out

    def forward(self, batch: np.ndarray) -> np.ndarray:
        return self.logits(batch)


def load(files: ModelFiles, meta: dict[str, Any]) -> Mlp:
    if "model.safetensors" not in files.names:
        raise UsageError(
            f"{files.ref}: format 'mlp' needs model.safetensors beside model.json "
            "(see docs/serving.md)"
        )
    return Mlp.from_bytes(files.read("model.safetensors"), files.read("model.json"), files.ref)


def random_model(seed: int) -> dict[str, bytes]:
    """The files of an untrained 64-64-10 digits MLP with weights drawn from ``seed``:
    ``model.safetensors`` and ``model.json``, as a vault snapshot or a directory holds them."""
    from safetensors.numpy import save

    rng = np.random.default_rng(seed)
    tensors = {
        "0.weight": rng.normal(size=(64, 64)).astype(np.float32),
        "0.bias": np.zeros(64, np.float32),
        "2.weight": rng.normal(size=(10, 64)).astype(np.float32),
        "2.bias": np.zeros(10, np.float32),
    }
    meta = {
        "arch": "mlp",
        "layers": [64, 64, 10],
        "activation": "relu",
        "input_scale": 1 / 16,
        "labels": list(range(10)),
    }
    return {"model.safetensors": save(tensors), "model.json": json.dumps(meta).encode()}
