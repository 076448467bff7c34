"""Bastion keeps AI workloads running through failures, and proves it by measuring recovery.

The foundation's public names are re-exported here; each capability (``bastion.vault``,
``bastion.train``, ``bastion.serve``, ``bastion.map``, ``bastion.drill``) exports its own.
"""

from importlib.metadata import PackageNotFoundError, version

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
from bastion.events import Event, EventLog
from bastion.manifest import Manifest, load
from bastion.names import Ref, parse_name, parse_ref

try:
    __version__ = version("bastion")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

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
