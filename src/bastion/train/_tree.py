"""State trees: split a nested state (state_dicts, RNG states, counters) into tensors and
a JSON skeleton, and join them back.

Owns: the encoding of non-tensor state. Tensors and NumPy arrays go to safetensors; the
rest must be JSON-able (int, float, str, bool, None, lists, tuples, dicts with any
hashable JSON-able keys, bytes).

Why not pickle (what torch.save uses): loading a pickle runs code, so a checkpoint
planted in shared storage would own the training host. A JSON skeleton plus safetensors
cannot execute anything on load.

Must never: silently drop a value it cannot encode; that raises ``UsageError`` naming the
path of the value.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import torch

from bastion.errors import IntegrityError, UsageError

__all__ = ["flatten", "unflatten"]


def flatten(tree: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Return ``(skeleton, tensors)``; the skeleton refers to tensors by key."""
    tensors: dict[str, torch.Tensor] = {}

    def key_for(path: str) -> str:
        key, n = path or "_", 1
        while key in tensors:
            n += 1
            key = f"{path}#{n}"
        return key

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            key = key_for(path)
            tensors[key] = value.detach()
            return {"__tensor__": key}
        if isinstance(value, np.ndarray):
            key = key_for(path)
            tensors[key] = torch.from_numpy(np.ascontiguousarray(value))
            return {"__ndarray__": key}
        if isinstance(value, np.generic):
            return walk(value.item(), path)
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, bytes | bytearray):
            return {"__bytes__": base64.b64encode(bytes(value)).decode()}
        if isinstance(value, tuple):
            return {"__tuple__": [walk(v, f"{path}/{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(value)]
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in value):
                return {k: walk(v, f"{path}/{k}" if path else k) for k, v in value.items()}
            return {
                "__dict__": [
                    [walk(k, f"{path}/<key>"), walk(v, f"{path}/{k}" if path else str(k))]
                    for k, v in value.items()
                ]
            }
        raise UsageError(
            f"checkpoint state at {path or '<root>'!r} is a {type(value).__name__}, which "
            "cannot be saved without pickle; store it as a tensor, array, number, string, "
            "list or dict"
        )

    return walk(tree, ""), tensors


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Rebuild the tree written by ``flatten``."""

    def take(key: str) -> torch.Tensor:
        if key not in tensors:
            raise IntegrityError(f"checkpoint refers to tensor {key!r}, which it does not hold")
        return tensors[key]

    def walk(value: Any) -> Any:
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            if "__tensor__" in value:
                return take(value["__tensor__"])
            if "__ndarray__" in value:
                return take(value["__ndarray__"]).numpy()
            if "__bytes__" in value:
                return base64.b64decode(value["__bytes__"])
            if "__tuple__" in value:
                return tuple(walk(v) for v in value["__tuple__"])
            if "__dict__" in value:
                return {_hashable(walk(k)): walk(v) for k, v in value["__dict__"]}
            return {k: walk(v) for k, v in value.items()}
        return value

    return walk(skeleton)


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value
