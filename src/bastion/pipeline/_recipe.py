"""A stage's recipe: how its output was made, recorded with it so it can be made again.

Owns: the recipe document (``bastion.recipe/1``), kept in the signed meta of the
snapshot a command stage publishes (``meta["recipe"]``), and the code snapshot it names
(``code/<pipeline>/<stage>``: the stage's code files, relative to the manifest's
directory, committed before the output so the output's lineage can name it)::

    {"format": "bastion.recipe/1",
     "command": ["python", "pipeline/train_stage.py", "--steps", "300"],
     "workdir": ".",                      # relative to the code snapshot's root
     "code": "code/digits/train@1",       # the code, by exact version
     "inputs": {"data": "dataset/digits-train@2", ...},   # by exact version
     "config": {...}, "env": {...},
     "environment": {bastion.environment/1 record, "reported": true|false}}

``environment`` is what the stage process itself reported (``record_environment``: its
PyTorch thread counts included), or, when it reported nothing, what the runner could see
(versions only, ``reported: false``).

Must never: record code outside the manifest's directory as if it were captured (it is
listed under ``uncaptured``; a replay says so rather than run today's copy of it), or
record an input by a movable label (every input is ``name@version``).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.errors import IntegrityError
from bastion.train import PLANNED_KEYS, environment

if TYPE_CHECKING:
    from bastion.vault import Snapshot, Vault

__all__ = ["FORMAT", "Recipe", "code_tree", "record_code", "reported_environment"]

FORMAT = "bastion.recipe/1"


@dataclass(frozen=True)
class Recipe:
    """How one snapshot was made (see the module)."""

    command: tuple[str, ...]
    workdir: str
    code: str | None
    inputs: Mapping[str, str]
    config: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    environment: Mapping[str, Any] = field(default_factory=dict)
    uncaptured: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "command": list(self.command),
            "workdir": self.workdir,
            "code": self.code,
            "inputs": dict(self.inputs),
            "config": dict(self.config),
            "env": dict(self.env),
            "environment": dict(self.environment),
            "uncaptured": list(self.uncaptured),
        }

    @classmethod
    def of(cls, snap: Snapshot) -> Recipe | None:
        """The recipe in ``snap``'s signed meta; None when it was made without one (not
        by a pipeline command stage); ``IntegrityError`` when it is malformed."""
        raw = snap.meta.get("recipe")
        if raw is None:
            return None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
            raise IntegrityError(
                f"{snap.ref}: its recipe is {found!r}; this Bastion reads {FORMAT}"
            )
        try:
            return cls(
                command=tuple(str(a) for a in raw["command"]),
                workdir=str(raw["workdir"]),
                code=None if raw["code"] is None else str(raw["code"]),
                inputs={str(k): str(v) for k, v in raw["inputs"].items()},
                config=dict(raw.get("config") or {}),
                env={str(k): str(v) for k, v in (raw.get("env") or {}).items()},
                environment=dict(raw.get("environment") or {}),
                uncaptured=tuple(str(p) for p in raw.get("uncaptured") or ()),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise IntegrityError(f"{snap.ref}: malformed recipe in its meta ({exc})") from None


def code_tree(paths: Sequence[Path], base: Path) -> tuple[dict[str, Path], list[str]]:
    """The files under ``paths`` keyed by their path relative to ``base`` (directories
    walked, ``__pycache__`` skipped), and the paths outside ``base`` (not captured: the
    interpreter, a system tool)."""
    files: dict[str, Path] = {}
    outside: list[str] = []
    for path in paths:
        try:
            rel = path.resolve().relative_to(base.resolve())
        except ValueError:
            outside.append(str(path))
            continue
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d != "__pycache__")
                for name in sorted(names):
                    full = Path(root) / name
                    if full.is_file() and not full.is_symlink():
                        files[str(full.resolve().relative_to(base.resolve()))] = full
        elif path.is_file():
            files[str(rel)] = path
    return files, outside


def reported_environment(path: Path) -> dict[str, Any]:
    """What a stage process wrote with ``record_environment`` (``reported: true``), or,
    when it wrote nothing readable, the versions this process sees (``reported:
    false``; thread counts unknown)."""
    try:
        raw = json.loads(path.read_text())
        if isinstance(raw, dict):
            return {**raw, "reported": True}
    except (OSError, ValueError):
        pass
    return dict(_this_process())


@functools.cache
def _this_process() -> dict[str, Any]:
    # once per process: the versions cannot change under it, and finding a package's
    # version (importlib.metadata) reads site-packages, milliseconds a stage
    here = environment()
    return {
        "format": here["format"],
        **{k: here[k] for k in PLANNED_KEYS},
        "threads": None,
        "interop_threads": None,
        "deterministic": None,
        "reported": False,
    }


def record_code(vault: Vault, name: str, files: Mapping[str, Path]) -> str | None:
    """Commit the stage's code as the next version of ``name`` (its chunks deduplicate
    against the last one); the exact ref (None without files)."""
    if not files:
        return None
    return vault.commit(name, dict(files), meta={"kind": "stage code"}).ref
