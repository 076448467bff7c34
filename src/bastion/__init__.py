"""Bastion keeps AI workloads running through failures, and proves it by measuring recovery.

The foundation's public names are re-exported here; each capability (``bastion.vault``,
``bastion.train``, ``bastion.serve``, ``bastion.map``, ``bastion.drill``) exports its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion._lazy import lazy as _lazy
from bastion.errors import (
    BastionError,
    CheckFailed,
    IntegrityError,
    InternalError,
    InvalidNameError,
    ManifestError,
    ManifestProblem,
    NotFoundError,
    ScopeError,
    UnavailableError,
    UsageError,
)

if TYPE_CHECKING:
    from bastion.events import Event, EventLog
    from bastion.manifest import Manifest, load
    from bastion.names import Ref, parse_name, parse_ref

    __version__: str

# Imported on first use (PEP 562): every ``bastion`` command imports this package, and
# the manifest's pydantic models and the version's importlib.metadata are a large part
# of the CLI's start-up, which most commands never need (issue 13).
_LAZY = {
    "Event": "bastion.events",
    "EventLog": "bastion.events",
    "Manifest": "bastion.manifest",
    "load": "bastion.manifest",
    "Ref": "bastion.names",
    "parse_name": "bastion.names",
    "parse_ref": "bastion.names",
}


_lazy_getattr, __dir__ = _lazy(__name__, _LAZY)


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("bastion")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            found = "0.0.0"
        globals()["__version__"] = found
        return found
    return _lazy_getattr(name)


__all__ = [
    "BastionError",
    "CheckFailed",
    "Event",
    "EventLog",
    "IntegrityError",
    "InternalError",
    "InvalidNameError",
    "Manifest",
    "ManifestError",
    "ManifestProblem",
    "NotFoundError",
    "Ref",
    "ScopeError",
    "UnavailableError",
    "UsageError",
    "__version__",
    "load",
    "parse_name",
    "parse_ref",
]
