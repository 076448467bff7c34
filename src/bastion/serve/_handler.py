"""The ``handler`` model format: the user's own Python class serves the model, as
KServe's and Ray Serve's custom predictors do.

``model.json`` says ``{"format": "handler", "handler": "module:Class"}``. ``module`` is a
``.py`` file or package inside the snapshot (``predictor.py``, ``pkg/__init__.py``), or
else an installed, importable module. The class is made with no arguments, then:

- ``load(directory)`` once, with the snapshot's files on disk (restored verified from the
  vault into a private temporary directory);
- ``predict(batch)`` per request: ``batch`` is a list of inputs exactly as the request's
  JSON held them (numbers, strings, objects), and it returns a list of the same length
  of JSON-ready predictions;
- ``embed(batch)``, if the class has it, for ``/v1/embeddings``: one list of numbers per
  input.

A ``ValueError`` raised by ``predict``/``embed`` is the caller's fault: a 400 with its
message. Any other exception, or an answer of the wrong length or with a non-finite
number, is a 500 naming the handler.

Owns: ``HandlerModel`` and ``load`` (resolving ``module:Class`` safely: dotted
identifiers only; a module found in the snapshot must resolve, symlinks followed, to a
file inside the snapshot directory, and is imported from there even where an installed
module has its name).

Must never: import a module from a path outside the snapshot when the snapshot names it.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
import types
import uuid
from pathlib import Path
from typing import Any

from bastion.errors import UsageError
from bastion.serve._formats import BadInput, ModelError, ModelFiles
from bastion.serve._tensor import MAX_BATCH

__all__ = ["HandlerModel", "load"]

_SPEC = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*)$", re.ASCII)


class HandlerModel:
    """A model served by a user's handler object."""

    format = "handler"
    offload = True

    def __init__(self, handler: Any, name: str, spec: str) -> None:
        self.handler = handler
        self.name = name
        self.spec = spec

    def describe(self) -> str:
        return f"a list of inputs for the handler {self.spec}"

    def _call(self, method: str, batch: list[Any], field: str) -> list[Any]:
        if len(batch) > MAX_BATCH:
            raise BadInput(f"{field}: at most {MAX_BATCH} inputs per request")
        try:
            out = getattr(self.handler, method)(batch)
        except ValueError as exc:
            raise BadInput(f"{field}: {self.spec} refused the input: {exc}") from None
        except Exception as exc:
            raise ModelError(f"{self.name}: {self.spec}.{method} failed: {exc!r}") from None
        if not isinstance(out, list | tuple) or len(out) != len(batch):
            raise ModelError(
                f"{self.name}: {self.spec}.{method} must return a list of one answer per "
                f"input ({len(batch)}), not {type(out).__name__}"
            )
        try:
            json.dumps(out, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ModelError(
                f"{self.name}: {self.spec}.{method} returned what JSON cannot carry: {exc}"
            ) from None
        return list(out)

    def predict(self, inputs: Any, field: str) -> list[Any]:
        if not isinstance(inputs, list) or not inputs:
            raise BadInput(f"{field}: give a non-empty list of inputs")
        return self._call("predict", inputs, field)

    def embed(self, inputs: Any, field: str) -> list[list[float]]:
        if not callable(getattr(self.handler, "embed", None)):
            raise BadInput(
                f"{field}: {self.name} makes no embeddings (its handler {self.spec} has no "
                "embed method)"
            )
        batch = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(batch, list) or not batch:
            raise BadInput(f"{field}: give a string or a non-empty list of inputs")
        out = self._call("embed", batch, field)
        if not all(
            isinstance(v, list)
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
            for v in out
        ):
            raise ModelError(f"{self.name}: {self.spec}.embed must return lists of numbers")
        return [[float(x) for x in v] for v in out]

    def reply(self, text: str, field: str) -> str:
        (answer,) = self._call("predict", [text], field)
        return answer if isinstance(answer, str) else json.dumps(answer)


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root)


def _import(module: str, root: Path, ref: str) -> Any:
    top = module.split(".", maxsplit=1)[0]
    in_snapshot = (root / f"{top}.py").exists() or (root / top).is_dir()
    if not in_snapshot:
        try:
            return importlib.import_module(module)
        except ImportError as exc:
            raise UsageError(
                f"{ref}: handler module {module!r} is neither in the snapshot (no {top}.py "
                f"or {top}/) nor importable: {exc}"
            ) from None
    parts = module.split(".")
    candidates = [root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")]
    found = [c for c in candidates if c.exists()]
    if not found:
        raise UsageError(f"{ref}: the snapshot has no {'/'.join(parts)}.py for {module!r}")
    if not all(_inside(c, root) for c in [*found, root / top]):
        raise UsageError(f"{ref}: handler module {module!r} leads outside the snapshot")
    # Imported as a submodule of a package of its own whose path is the snapshot: the
    # snapshot's file is the one imported even where an installed module has its name
    # (a json.py), and two snapshots' predictor.py never meet in sys.modules. The root is
    # on sys.path during the import only, for the handler's own sibling imports.
    package = f"_bastion_snapshot_{uuid.uuid4().hex[:16]}"
    holder = types.ModuleType(package)
    holder.__path__ = [str(root)]
    sys.modules[package] = holder
    sys.path.insert(0, str(root))
    try:
        loaded = importlib.import_module(f"{package}.{module}")
    except Exception as exc:
        raise UsageError(f"{ref}: importing handler module {module!r} failed: {exc!r}") from None
    finally:
        sys.path.remove(str(root))
    where = Path(getattr(loaded, "__file__", None) or "/")
    if not _inside(where, root):
        raise UsageError(
            f"{ref}: handler module {module!r} was found at {where}, outside the snapshot; "
            "rename it in the snapshot"
        )
    return loaded


def load(files: ModelFiles, meta: dict[str, Any]) -> HandlerModel:
    ref = files.ref
    spec = meta.get("handler")
    match = _SPEC.match(spec) if isinstance(spec, str) else None
    if match is None:
        raise UsageError(
            f"{ref}: model.json's 'handler' must be 'module:Class' (dotted names only, "
            f"e.g. 'predictor:Predictor'), not {spec!r}"
        )
    module_name, class_name = match.groups()
    root = files.directory().resolve()
    cls = getattr(_import(module_name, root, ref), class_name, None)
    if not isinstance(cls, type):
        raise UsageError(f"{ref}: handler module {module_name!r} has no class {class_name!r}")
    missing = [m for m in ("load", "predict") if not callable(getattr(cls, m, None))]
    if missing:
        raise UsageError(
            f"{ref}: handler {spec} has no {' or '.join(missing)} method (a handler has "
            "load(directory) and predict(batch); see docs/serving.md)"
        )
    try:
        handler = cls()
        handler.load(root)
    except Exception as exc:
        raise UsageError(f"{ref}: handler {spec} failed to load: {exc!r}") from None
    return HandlerModel(handler, ref, f"{module_name}:{class_name}")
