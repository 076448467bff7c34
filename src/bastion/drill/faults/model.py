"""Model faults: NaN or zeroed weights in a safetensors checkpoint; a degraded model
version swapped in for the good one.

Owns: rewriting a ``.safetensors`` file's tensors (seeded choice of tensors and
elements) and swapping a model file for another, keeping the original bytes to revert.
``degrade`` makes the "degraded version" to swap in: the same tensors plus noise.

Must never: touch a checkpoint outside the scope; write a checkpoint that is not valid
safetensors (the damage is in the numbers, not the container: a loader must accept it,
which is what makes the fault dangerous).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors.numpy import load_file, save_file

from bastion.drill.faults._base import Fault
from bastion.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from bastion.drill.faults.scope import Scope
    from bastion.events import Emit

__all__ = ["CorruptWeights", "SwapModel", "degrade"]


def _check_file(scope: Scope, path: str | Path, kind: str) -> Path:
    target = scope.check_path(path, fault=kind)
    if not target.is_file():
        raise NotFoundError(f"{kind}: checkpoint {target} does not exist")
    return target


class CorruptWeights(Fault):
    """Set ``fraction`` of the elements of the chosen float tensors to NaN (``mode="nan"``)
    or 0 (``mode="zero"``). ``tensors``: names to damage (default: every float tensor)."""

    kind = "model.corrupt_weights"

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        scope: Scope,
        mode: str = "nan",
        tensors: list[str] | None = None,
        fraction: float = 1.0,
        seed: int | None = None,
        events: Emit | None = None,
        subject: str = "",
    ) -> None:
        super().__init__(events=events, subject=subject)
        if mode not in ("nan", "zero"):
            raise UsageError(f"{self.kind}: mode {mode!r} must be 'nan' or 'zero'")
        if not 0.0 < fraction <= 1.0:
            raise UsageError(f"{self.kind}: fraction {fraction} must be in (0, 1]")
        self.path = _check_file(scope, checkpoint, self.kind)
        self.mode = mode
        self.tensors = tensors
        self.fraction = fraction
        self.seed = seed
        self._original: bytes | None = None

    def describe(self) -> dict[str, Any]:
        return {"checkpoint": str(self.path), "mode": self.mode, "fraction": self.fraction}

    def _inject(self) -> dict[str, Any]:
        self._original = self.path.read_bytes()
        weights = load_file(str(self.path))
        names = self.tensors or [n for n, t in weights.items() if t.dtype.kind == "f"]
        missing = [n for n in names if n not in weights]
        if missing:
            raise UsageError(
                f"{self.kind}: {self.path} has no tensor(s) {missing}; has {sorted(weights)}"
            )
        rng = np.random.default_rng(self.seed)
        elements = 0
        for name in names:
            t = weights[name].copy()
            flat = t.reshape(-1)
            mask = rng.random(flat.shape[0]) < self.fraction
            if self.fraction >= 1.0:
                mask[:] = True
            flat[mask] = np.nan if self.mode == "nan" else 0
            weights[name] = flat.reshape(t.shape)
            elements += int(mask.sum())
        save_file(weights, str(self.path))
        return {"tensors": len(names), "elements": elements}

    def _revert(self) -> dict[str, Any]:
        if self._original is not None:
            self.path.write_bytes(self._original)
        self._original = None
        return {}


def degrade(source: str | Path, target: str | Path, *, noise: float = 0.5, seed: int = 0) -> Path:
    """Write a degraded copy of a safetensors model: every float tensor plus Gaussian
    noise of ``noise`` times its own standard deviation. Still loads; predicts worse."""
    weights = load_file(str(source))
    rng = np.random.default_rng(seed)
    out = {}
    for name, t in weights.items():
        if t.dtype.kind == "f":
            scale = float(np.std(t)) or 1.0
            out[name] = (t + rng.normal(0.0, noise * scale, t.shape)).astype(t.dtype)
        else:
            out[name] = t
    save_file(out, str(target))
    return Path(target)


class SwapModel(Fault):
    """Put ``replacement`` (a degraded version) where ``target`` is; revert puts the
    original back. Both are files; the target must be in scope."""

    kind = "model.swap"

    def __init__(
        self,
        target: str | Path,
        replacement: str | Path,
        *,
        scope: Scope,
        events: Emit | None = None,
        subject: str = "",
    ) -> None:
        super().__init__(events=events, subject=subject)
        self.target = _check_file(scope, target, self.kind)
        self.replacement = Path(replacement).resolve()
        if not self.replacement.is_file():
            raise NotFoundError(f"{self.kind}: replacement model {self.replacement} not found")
        self._aside: Path | None = None

    def describe(self) -> dict[str, Any]:
        return {"target": str(self.target), "replacement": str(self.replacement)}

    def _inject(self) -> dict[str, Any]:
        fd, aside = tempfile.mkstemp(prefix=".bastion-model-", dir=self.target.parent)
        with open(fd, "wb") as fh, self.target.open("rb") as src:  # noqa: PTH123 - fd
            shutil.copyfileobj(src, fh)
        self._aside = Path(aside)
        shutil.copystat(self.target, self._aside)  # mkstemp makes 0600; keep the original's
        tmp = self.target.with_name(f".{self.target.name}.bastion-tmp")
        shutil.copyfile(self.replacement, tmp)
        tmp.replace(self.target)
        return {}

    def _revert(self) -> dict[str, Any]:
        if self._aside is not None:
            self._aside.replace(self.target)
        self._aside = None
        return {}
