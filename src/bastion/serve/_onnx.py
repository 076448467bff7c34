"""The ``onnx`` model format: an ONNX graph (``torch.onnx.export`` makes one from a
PyTorch module) run by onnxruntime on the CPU.

``model.json`` says ``{"format": "onnx"}`` and may add ``file`` (default
``model.onnx``), ``labels`` (then a prediction is the label of the output's largest
value, as a classifier's), ``output`` (the output to predict with; default the first)
and ``embedding_output`` (the output ``/v1/embeddings`` returns; default ``output``).
The input's shape and dtype are the graph's own: its first dimension is the batch.

Owns: ``OnnxModel`` and ``load``. The graph's bytes come through ``ModelFiles.read``,
which for a vault snapshot checks every chunk's hash: tampered bytes never reach
onnxruntime.

Must never: load a graph from a path outside the snapshot, or take the input's shape
from anywhere but the graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bastion.errors import UsageError
from bastion.serve._formats import ModelFiles
from bastion.serve._tensor import TensorModel

__all__ = ["OnnxModel", "load"]

# onnxruntime's type strings for the dtypes a JSON request can carry.
_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


class OnnxModel(TensorModel):
    """An onnxruntime session over one graph of one input."""

    format = "onnx"
    offload = True

    def __init__(
        self, session: Any, name: str, labels: list[Any] | None, output: str, embedding: str
    ) -> None:
        (inp,) = session.get_inputs()
        shape = tuple(d if isinstance(d, int) and d > 0 else None for d in inp.shape[1:])
        super().__init__(name, shape, np.dtype(_DTYPES[inp.type]), labels, inp.name)
        self.session = session
        self.output = output
        self.embedding = embedding

    def _run(self, batch: np.ndarray, output: str) -> np.ndarray:
        (out,) = self.session.run([output], {self.input_name: batch})
        return np.asarray(out).reshape(batch.shape[0], -1) if out.ndim == 1 else np.asarray(out)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        return self._run(batch, self.output)

    def hidden(self, batch: np.ndarray) -> np.ndarray:
        return self._run(batch, self.embedding)


def load(files: ModelFiles, meta: dict[str, Any]) -> OnnxModel:
    import onnxruntime as ort

    ref = files.ref
    file = meta.get("file", "model.onnx")
    if not isinstance(file, str):
        raise UsageError(f"{ref}: model.json's 'file' must be a path inside the snapshot")
    # Read by name from the snapshot's own list: no path can reach outside it.
    if file not in files.names:
        raise UsageError(
            f"{ref}: model.json names {file!r}, which the snapshot does not have (it has: "
            f"{', '.join(sorted(files.names)[:5])})"
        )
    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initialisers are not the user's
    graph = files.read(file)  # verified: a tampered byte is an IntegrityError here
    try:
        session = ort.InferenceSession(
            graph, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise UsageError(
            f"{ref}: {file} is not an ONNX graph onnxruntime can load: {exc}"
        ) from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise UsageError(
            f"{ref}: {file} takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
            "the onnx format serves graphs of one input: serve this one with a handler "
            "(docs/serving.md)"
        )
    if inputs[0].type not in _DTYPES:
        raise UsageError(
            f"{ref}: {file}'s input {inputs[0].name!r} is {inputs[0].type}, which JSON "
            f"cannot carry (known: {', '.join(_DTYPES)})"
        )
    outputs = [o.name for o in session.get_outputs()]
    output = meta.get("output", outputs[0])
    embedding = meta.get("embedding_output", output)
    for key, value in (("output", output), ("embedding_output", embedding)):
        if value not in outputs:
            raise UsageError(
                f"{ref}: model.json's {key} {value!r} is not an output of {file} "
                f"(its outputs: {', '.join(outputs)})"
            )
    labels = meta.get("labels")
    if labels is not None and not isinstance(labels, list):
        raise UsageError(f"{ref}: model.json's 'labels' must be a list")
    return OnnxModel(session, ref, labels, output, embedding)
