"""Models as the gate sees them: weights checked for finiteness, then run on a table.

Owns: ``load_model`` (the example's format, ``model.safetensors`` + ``model.json``, as
``bastion.serve.replica`` serves it: the same NumPy forward pass, so a verdict speaks
for what a replica will answer, and no torch import), the count of non-finite weights in
every float tensor (including ones the forward pass would not touch), and ``evaluate``:
a model's answers on a table with a label column, as an ``Evaluation``.

Must never: read the vault (it is handed bytes), or hide a non-finite output: an example
whose logits are not all finite is marked, and its metrics become NaN.

Labels are compared as text in one canonical form: a whole number as ``3`` (so a CSV's
``3``, a float ``3.0`` and the model's ``3`` are one class), anything else as written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from bastion.errors import IntegrityError, UsageError
from bastion.validate._metrics import Evaluation
from bastion.validate._table import Table

if TYPE_CHECKING:
    from bastion.serve.replica import Mlp

__all__ = ["LoadedModel", "evaluate", "load_model"]


def _label_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float | np.integer | np.floating):
        f = float(value)
        return str(int(f)) if f.is_integer() else repr(f)
    return str(value)


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model ready to evaluate: its forward pass, its classes as text, and per float
    tensor the number of weights that are NaN or infinite."""

    name: str
    mlp: Mlp
    labels: tuple[str, ...]
    nonfinite: dict[str, int]

    @property
    def n_inputs(self) -> int:
        return self.mlp.n_inputs


def load_model(tensors: bytes, spec: bytes, name: str) -> LoadedModel:
    """Read ``model.safetensors`` and ``model.json`` (the format ``train.py`` stores)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    from bastion.serve.replica import Mlp

    try:
        arrays = load(tensors)
        meta = json.loads(spec)
        mlp = Mlp.from_bytes(tensors, spec, name)
    except (SafetensorError, ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(
            f"{name}: not a model this gate can load (model.safetensors with <i>.weight / "
            f"<i>.bias, and model.json): {exc}"
        ) from None
    nonfinite = {
        key: int((~np.isfinite(t)).sum())
        for key, t in sorted(arrays.items())
        if t.dtype.kind == "f"
    }
    labels = tuple(_label_text(v) for v in mlp.labels)
    if not isinstance(meta, dict) or len(labels) != mlp.weights[-1][0].shape[0]:
        raise IntegrityError(
            f"{name}: model.json names {len(labels)} labels, the last layer has "
            f"{mlp.weights[-1][0].shape[0]} outputs"
        )
    return LoadedModel(name, mlp, labels, nonfinite)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def _label_texts(table: Table, label: str) -> list[str | None]:
    """Each row's label in canonical text (None where missing)."""
    nums = table.numbers(label)
    if not table.is_text(label):
        return [None if np.isnan(v) else _label_text(v) for v in nums.values.tolist()]
    cells, missing = table.text(label)
    out: list[str | None] = []
    for i, cell in enumerate(cells.tolist()):
        if missing[i]:
            out.append(None)
        elif nums.not_numbers[i]:
            out.append(str(cell))
        else:
            out.append(_label_text(nums.values[i]))
    return out


def evaluate(model: LoadedModel, table: Table, *, label: str, name: str) -> Evaluation:
    """``model``'s answers on ``table``: the features are every column but ``label``,
    in order, and must be as many as the model's inputs."""
    if label not in table.columns:
        raise UsageError(
            f"{table.source or name}: no label column {label!r} (columns: "
            f"{', '.join(table.names[:5])}...); name it with --label"
        )
    features = [c for c in table.names if c != label]
    if len(features) != model.n_inputs:
        raise UsageError(
            f"{table.source or name}: {len(features)} feature columns, but {model.name} takes "
            f"{model.n_inputs} inputs"
        )
    n = table.rows
    if n == 0:
        empty = np.empty(0)
        return Evaluation(name, empty.astype(np.int64), empty.astype(np.int64), empty, empty > 0)
    x = np.column_stack([table.numbers(f).values for f in features]).astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        logits = model.mlp.logits(x)
    finite = np.isfinite(logits).all(axis=1)
    probabilities = _softmax(logits)
    predicted = np.where(finite, probabilities.argmax(axis=1), -1)
    index = {text: i for i, text in enumerate(model.labels)}
    if table.is_text(label):
        cells, missing = table.text(label)
        nums = table.numbers(label)
        texts = [
            None
            if missing[i]
            else (_label_text(nums.values[i]) if not nums.not_numbers[i] else str(c))
            for i, c in enumerate(cells.tolist())
        ]
    else:
        values = table.numbers(label).values
        texts = [None if np.isnan(v) else _label_text(v) for v in values.tolist()]
    truth = np.array([index.get(t, -1) if t is not None else -1 for t in texts], dtype=np.int64)
    rows = np.arange(n)
    true_p = np.where(truth >= 0, probabilities[rows, np.maximum(truth, 0)], 0.0)
    true_p = np.where(finite, true_p, np.nan)
    return Evaluation(name, truth, predicted.astype(np.int64), true_p, finite)
