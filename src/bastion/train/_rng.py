"""Every random number generator a training script touches, as one stateful object.

Owns: capturing and restoring the Python, NumPy-global, torch CPU and torch CUDA RNG
states. Bit-exact resume needs all four: dropout, shuffling and augmentation each may
draw from a different one.

Must never: reseed anything (restoring state is not reseeding).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["RNGState"]


class RNGState:
    """``state_dict()`` / ``load_state_dict()`` over the process's global RNGs."""

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        for i, s in enumerate(state.get("cuda", [])):
            if torch.cuda.is_available() and i < torch.cuda.device_count():
                torch.cuda.set_rng_state(s, i)
