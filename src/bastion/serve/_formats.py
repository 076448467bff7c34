"""Which model format a snapshot holds, and loading it: the one place a replica turns a
snapshot's files into a ``ServedModel``.

Owns: ``ServedModel`` (what the replica's routes call: ``predict``, ``embed``, ``reply``),
``BadInput`` (a request's input is wrong: the replica answers 400 with its message),
``ModelFiles`` (a snapshot's files, read verified from the vault or from a plain
directory), ``FORMATS`` (each known format and the module that loads it) and
``load_model`` (read ``model.json``, pick the format, load).

The format is named by ``model.json``'s ``"format"`` key: ``mlp`` (the example's numpy
MLP, also chosen for a ``model.json`` with no ``format`` and ``"arch": "mlp"``), ``onnx``
(``_onnx``) or ``handler`` (``_handler``). A snapshot with ``model.onnx`` and no
``model.json`` is ``onnx``. Formats are imported only when used, so an MLP replica never
imports onnxruntime.

Must never: load bytes the vault did not verify (``ModelFiles.from_vault`` reads through
``Vault.read``/``Vault.restore``, which check every chunk's hash and the snapshot's
signature); guess a format it does not know (the error names the snapshot and the known
formats).
"""

from __future__ import annotations

import atexit
import importlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bastion.errors import UsageError

if TYPE_CHECKING:
    from bastion.vault import Vault
    from bastion.vault._snapshot import Snapshot

__all__ = [
    "FORMATS",
    "BadInput",
    "ModelError",
    "ModelFiles",
    "ServedModel",
    "load_model",
]

META = "model.json"


class BadInput(Exception):
    """A request's input is wrong (shape, type, a non-finite number): answered 400 with
    this message, which names the field and what the model expects."""


class ModelError(Exception):
    """The model failed on a valid input (a handler raised, an output is not finite):
    answered 500 with this message."""


class ServedModel(Protocol):
    """What a replica serves. ``inputs`` is the request's JSON value (``/v1/predict``'s
    ``inputs``, ``/v1/embeddings``' ``input``): one input or a list of them."""

    @property
    def name(self) -> str: ...

    @property
    def format(self) -> str: ...

    @property
    def offload(self) -> bool:
        """True when a request may take long: the replica runs it in a worker thread."""
        ...

    def describe(self) -> str:
        """The input the model takes, for error messages (``64 numbers``)."""
        ...

    def predict(self, inputs: Any, field: str) -> list[Any]:
        """One JSON-ready prediction per input; ``BadInput`` naming ``field`` if wrong."""
        ...

    def embed(self, inputs: Any, field: str) -> list[list[float]]:
        """One vector per input."""
        ...

    def reply(self, text: str, field: str) -> str:
        """The answer to one chat message or completion prompt, as text."""
        ...


@dataclass
class ModelFiles:
    """A snapshot's files: ``read`` one (verified when from the vault), ``names`` of all,
    and ``directory`` (the files on disk, restored once into a private temporary
    directory when they come from the vault, for formats that load from a path)."""

    ref: str
    names: frozenset[str]
    read: Callable[[str], bytes]
    _materialise: Callable[[], Path]
    _dir: Path | None = field(default=None, repr=False)

    def directory(self) -> Path:
        if self._dir is None:
            self._dir = self._materialise()
        return self._dir

    @classmethod
    def from_dir(cls, directory: Path, ref: str) -> ModelFiles:
        """A plain directory (development and tests; nothing is verified)."""
        root = directory.resolve()
        names = frozenset(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

        def read(path: str) -> bytes:
            return (root / path).read_bytes()

        return cls(ref, names, read, lambda: root, root)

    @classmethod
    def from_vault(cls, vault: Vault, snap: Snapshot) -> ModelFiles:
        """A signature-verified vault snapshot."""

        def materialise() -> Path:
            # mkdtemp makes the directory 0700: the model's files stay private.
            dest = Path(tempfile.mkdtemp(prefix="bastion-model-"))
            atexit.register(shutil.rmtree, dest, ignore_errors=True)
            vault.restore(snap, dest)
            return dest

        return cls(
            snap.ref, frozenset(snap.files), lambda path: vault.read(snap, path), materialise
        )


_Loader = Callable[[ModelFiles, dict[str, Any]], ServedModel]

FORMATS: dict[str, str] = {
    "mlp": "bastion.serve._mlp",
    "onnx": "bastion.serve._onnx",
    "handler": "bastion.serve._handler",
}
"""Each known format and the module whose ``load(files, meta)`` loads it."""


def _meta(files: ModelFiles) -> dict[str, Any]:
    if META not in files.names:
        if "model.onnx" in files.names:
            return {"format": "onnx"}
        raise UsageError(
            f"{files.ref}: no {META} saying which model format it holds (it has: "
            f"{', '.join(sorted(files.names)[:5]) or 'no files'}); add a {META} such as "
            f'{{"format": "onnx", "file": "model.onnx"}} (known formats: '
            f"{', '.join(FORMATS)}; see docs/serving.md)"
        )
    try:
        meta = json.loads(files.read(META))
    except (ValueError, UnicodeDecodeError):
        raise UsageError(f"{files.ref}: {META} is not valid JSON") from None
    if not isinstance(meta, dict):
        raise UsageError(f"{files.ref}: {META} must be a JSON object")
    return meta


def format_of(meta: dict[str, Any]) -> Any:
    if "format" in meta:
        return meta["format"]
    return "mlp" if meta.get("arch") == "mlp" else None


def load_model(files: ModelFiles) -> ServedModel:
    """Load the model ``files`` hold, in the format its ``model.json`` names."""
    meta = _meta(files)
    fmt = format_of(meta)
    if not isinstance(fmt, str) or fmt not in FORMATS:
        said = "no format" if fmt is None else f"format {fmt!r}"
        raise UsageError(
            f"{files.ref}: {META} names {said}, which this replica cannot serve; set "
            f'"format" to one of: {", ".join(FORMATS)} (see docs/serving.md)'
        )
    loader: _Loader = importlib.import_module(FORMATS[fmt]).load
    return loader(files, meta)
