"""The numerical environment a training run's bytes depend on: record it, compare two.

Owns: the environment record (``bastion.environment/1``): the interpreter, the machine,
the versions of PyTorch and NumPy, and, from inside the process that trained, PyTorch's
intra-op and inter-op thread counts (CPU kernels split their sums by thread, so another
count gives other bits) and whether deterministic algorithms were on; writing it where
the runner asked (``$BASTION_STAGE_ENVIRONMENT``: ``record_environment``); and naming
every difference between a recorded environment and another (``differences``), so a
replay that cannot be exact is said to be so before or after it runs.

Must never: import PyTorch to find its version (a parent process that only plans a
replay must not pay torch's import), or report a thread count it did not read from
PyTorch itself (without torch imported, the counts are ``None``: unknown, not 1).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "ENV_STAGE_ENVIRONMENT",
    "PLANNED_KEYS",
    "differences",
    "environment",
    "record_environment",
]

ENV_STAGE_ENVIRONMENT = "BASTION_STAGE_ENVIRONMENT"
"""Where a stage (or a rebuild) writes its ``environment()`` (``record_environment``)."""

_FORMAT = "bastion.environment/1"

PLANNED_KEYS = ("python", "implementation", "machine", "system", "torch", "numpy")
"""The keys a process can compare before it runs anything: what is installed. The
others (threads, deterministic) are known only inside the run."""


def _version(dist: str) -> str | None:
    module = sys.modules.get(dist)
    found = getattr(module, "__version__", None) if module is not None else None
    if isinstance(found, str):
        return found
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """This process's environment record (see the module)."""
    record: dict[str, Any] = {
        "format": _FORMAT,
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "machine": platform.machine(),
        "system": platform.system(),
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "threads": None,
        "interop_threads": None,
        "deterministic": None,
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        record["threads"] = int(torch.get_num_threads())
        record["interop_threads"] = int(torch.get_num_interop_threads())
        record["deterministic"] = bool(torch.are_deterministic_algorithms_enabled())
    return record


def record_environment(path: Path | None = None) -> dict[str, Any]:
    """Write ``environment()`` as JSON to ``path`` (default: ``$BASTION_STAGE_ENVIRONMENT``,
    which the pipeline runner and ``bastion model reconstitute`` set; nothing is
    written when neither is given) and return it. Call it at the end of training, from
    the process that trained."""
    record = environment()
    target = path if path is not None else os.environ.get(ENV_STAGE_ENVIRONMENT)
    if target:
        Path(target).write_text(json.dumps(record, sort_keys=True))
    return record


def differences(
    recorded: Mapping[str, Any], here: Mapping[str, Any], *, keys: tuple[str, ...] | None = None
) -> list[str]:
    """Each difference between ``recorded`` and ``here`` as ``"torch 2.3.0 recorded,
    2.5.1 here"``, over ``keys`` (default: every key either has but ``format``). A key
    one side does not know (None: torch not imported there, a run that recorded no
    thread count) is no difference; the rebuild's hash is the proof that remains."""
    names = keys or tuple(sorted((set(recorded) | set(here)) - {"format"}))
    out = []
    for key in names:
        want, have = recorded.get(key), here.get(key)
        if want is None or have is None or want == have:
            continue
        out.append(f"{key} {want} recorded, {have} here")
    return out
