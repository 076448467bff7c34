"""Models whose input is one tensor (the numpy MLP, ONNX): turning a request's JSON into
a batch of the model's own input shape and dtype, and its outputs back into answers.

Owns: ``TensorModel`` (a base giving ``predict``/``embed``/``reply`` from two array
functions, ``forward`` and ``hidden``), the input conventions (an input is numbers nested
to the model's row shape, or flat when every dimension is fixed, or a text of numbers
separated by commas or spaces, or a JSON array; a request holds one input or a list of
them, at most ``MAX_BATCH``) and their checks: every number finite in the model's dtype,
every shape the model's, or ``BadInput`` naming the field and the expected shape.

Must never: hand the model an array of the wrong shape or dtype, or one with NaN or an
infinity; answer with a number JSON cannot carry (a NaN output is a ``ModelError``).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from bastion.serve._formats import BadInput, ModelError

__all__ = ["MAX_BATCH", "TensorModel", "finite_json"]

MAX_BATCH = 1024
_MAX_TEXT = 1 << 20


def _reject_constant(name: str) -> float:
    raise BadInput(f"the body holds {name}, which no model can take: send finite numbers only")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadInput(
            f"the body holds {text[:40]}, out of range (infinite as a number): send finite "
            "numbers only"
        )
    return value


def finite_json(data: str | bytes) -> Any:
    """``json.loads`` that refuses ``NaN``, ``Infinity`` and numbers that overflow to an
    infinity (``1e999``) with ``BadInput``; ``ValueError`` for text that is not JSON."""
    return json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float)


def _depth(value: Any) -> int:
    depth = 0
    while isinstance(value, list) and value:
        depth += 1
        value = value[0]
    return depth


_NUMBER_TYPES = frozenset({int, float})


def _numbers_only(value: Any) -> bool:
    """Only ints and floats (not bools, not None), in nested lists. numpy walks the
    nesting in C, to at most its dimension limit, so a deep body is a 400, never a
    RecursionError; what lies deeper stays a list and fails the type check."""
    try:
        flat = np.asarray(value, dtype=object).ravel()
    except (ValueError, TypeError):
        return False
    return set(map(type, flat)) <= _NUMBER_TYPES


def _text_numbers(text: str, field: str) -> Any:
    text = text.strip()
    if len(text) > _MAX_TEXT:
        raise BadInput(f"{field}: the text is over {_MAX_TEXT} characters")
    if text.startswith("["):
        try:
            return finite_json(text)
        except ValueError:
            raise BadInput(f"{field}: {text[:40]!r} is not a JSON array of numbers") from None
    out = []
    for part in text.replace(",", " ").split():
        try:
            value = float(part)
        except ValueError:
            raise BadInput(
                f"{field}: {part[:40]!r} is not a number (give numbers separated by commas "
                "or spaces, or a JSON array)"
            ) from None
        if not math.isfinite(value):
            raise BadInput(f"{field}: {part[:40]!r} is not finite: send finite numbers only")
        out.append(value)
    return out


class TensorModel:
    """A model of one input tensor of row shape ``input_shape`` (the batch dimension
    left out; ``None`` for a dimension of any size) and ``dtype``. Subclasses give
    ``forward`` (a batch to outputs, one row per input) and ``hidden`` (to embeddings)."""

    format = "tensor"
    offload = False

    def __init__(
        self,
        name: str,
        input_shape: tuple[int | None, ...],
        dtype: np.dtype[Any],
        labels: list[Any] | None,
        input_name: str = "input",
    ) -> None:
        self.name = name
        self.input_shape = input_shape
        self.dtype = dtype
        self.labels = labels
        self.input_name = input_name

    def forward(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def hidden(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # ------------------------------------------------------------ input conventions

    @property
    def _fixed(self) -> bool:
        return all(d is not None for d in self.input_shape)

    @property
    def _size(self) -> int:
        return math.prod(d or 1 for d in self.input_shape)

    def describe(self) -> str:
        shape = "x".join("?" if d is None else str(d) for d in self.input_shape)
        if len(self.input_shape) == 0:
            what = "one number"
        elif len(self.input_shape) == 1 and self._fixed:
            what = f"{self._size} numbers"
        elif self._fixed:
            what = f"a {shape} array of numbers (or {self._size} numbers, flat)"
        else:
            what = f"a {shape} array of numbers"
        dims = ", ".join(["batch", *("?" if d is None else str(d) for d in self.input_shape)])
        return f"{what} (the model's input {self.input_name!r} is {self.dtype} [{dims}])"

    def _row(self, item: Any, field: str) -> np.ndarray:
        row = _text_numbers(item, field) if isinstance(item, str) else item
        if not _numbers_only(row):
            raise BadInput(f"{field}: each input must be {self.describe()}")
        try:
            arr = np.asarray(row, dtype=np.float64)
        except (ValueError, OverflowError):
            raise BadInput(f"{field}: each input must be {self.describe()}") from None
        if not self._matches(arr.shape):
            if self._fixed and arr.ndim == 1 and arr.size == self._size:
                arr = arr.reshape(tuple(d or 1 for d in self.input_shape))
            else:
                raise BadInput(
                    f"{field}: an input of shape {list(arr.shape)}; each input must be "
                    f"{self.describe()}"
                )
        if not np.isfinite(arr).all():
            raise BadInput(f"{field}: a number is not finite: send finite numbers only")
        return arr

    def _matches(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.input_shape) and all(
            want is None or want == got for want, got in zip(self.input_shape, shape, strict=True)
        )

    def _whole(self, rows: list[Any]) -> np.ndarray | None:
        """The common case in one conversion: every input numbers nested to the shape."""
        if any(isinstance(r, str) for r in rows) or not _numbers_only(rows):
            return None
        try:
            x = np.asarray(rows, dtype=np.float64)
        except (ValueError, OverflowError):
            return None
        return x if self._matches(x.shape[1:]) else None

    def batch(self, value: Any, field: str) -> np.ndarray:
        """``value`` (one input or a list of inputs) as an array of the model's dtype."""
        rank = len(self.input_shape)
        if isinstance(value, str):
            rows: list[Any] = [value]
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            rows = value
        elif isinstance(value, list) and value:
            depth = _depth(value)
            one = depth == rank or (rank > 1 and depth == 1)
            rows = [value] if one else value
        else:
            raise BadInput(f"{field}: give one input or a list of inputs, each {self.describe()}")
        if len(rows) > MAX_BATCH:
            raise BadInput(f"{field}: at most {MAX_BATCH} inputs per request")
        x = self._whole(rows)
        if x is None:  # texts, flat inputs, or something wrong: row by row, to say what
            arrays = [self._row(item, field) for item in rows]
            if len({a.shape for a in arrays}) > 1:
                raise BadInput(f"{field}: the inputs differ in shape; give them all one shape")
            x = np.stack(arrays)
        elif not np.isfinite(x).all():
            raise BadInput(f"{field}: a number is not finite: send finite numbers only")
        if self.dtype.kind in "iub":
            if not (x == np.round(x)).all():
                raise BadInput(f"{field}: the model takes whole numbers ({self.dtype})")
            info = np.iinfo(self.dtype) if self.dtype.kind != "b" else None
            if info is not None and ((x < info.min) | (x > info.max)).any():
                raise BadInput(f"{field}: a number is out of range for {self.dtype}")
            return x.astype(self.dtype)
        with np.errstate(over="ignore"):
            cast = x.astype(self.dtype)
        if not np.isfinite(cast).all():
            raise BadInput(f"{field}: a number is out of range for {self.dtype}")
        return cast

    # ------------------------------------------------------------ answers

    def _outputs(self, out: np.ndarray) -> np.ndarray:
        if out.dtype.kind == "f" and not np.isfinite(out).all():
            raise ModelError(f"{self.name}: the model's output is not finite (NaN or inf)")
        return out

    def _answer(self, row: np.ndarray) -> Any:
        if self.labels is not None and row.ndim == 1 and row.shape[0] == len(self.labels):
            return self.labels[int(row.argmax())]
        return row.tolist()

    def predict(self, inputs: Any, field: str) -> list[Any]:
        out = self._outputs(self.forward(self.batch(inputs, field)))
        return [self._answer(row) for row in out]

    def embed(self, inputs: Any, field: str) -> list[list[float]]:
        out = self._outputs(self.hidden(self.batch(inputs, field)))
        return [[float(v) for v in row.reshape(-1)] for row in out]

    def reply(self, text: str, field: str) -> str:
        x = self.batch(text, field)
        if x.shape[0] != 1:
            raise BadInput(f"{field}: one input per message, {self.describe()}")
        answer = self._answer(self._outputs(self.forward(x))[0])
        return answer if isinstance(answer, str) else json.dumps(answer)
