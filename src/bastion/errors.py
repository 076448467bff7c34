"""Every error Bastion raises on purpose, in one tree.

Catch the narrowest class that fits; the CLI maps each branch to an exit code.

    BastionError                      anything Bastion raised deliberately
    ├── UsageError             (2)    the user's input is wrong; nothing was changed
    │   ├── ManifestError      (2)    bastion.yaml is wrong: carries every problem found,
    │   │                             each with file:line:column and the field path
    │   ├── InvalidNameError   (2)    an artifact name, ref or path is malformed or would
    │   │                             escape its root (``../``, absolute, NUL)
    │   └── ScopeError         (2)    a fault or action was pointed outside its declared scope
    ├── NotFoundError          (2)    a named thing (snapshot, ref, job, service) does not exist
    ├── IntegrityError         (1)    bytes do not match their hash, or a signature fails;
    │                                 the data exists but must not be trusted or served
    ├── UnavailableError       (1)    no replica / backend / worker slot answered; the data or
    │                                 service may be fine, we just could not reach it
    ├── CheckFailed            (1)    a check ran and found a problem (scrub, map, drill)
    └── InternalError          (3)    a bug in Bastion: report it, with the log's location

``IntegrityError`` is not ``UnavailableError``: the first says "what we got is wrong",
the second "we got nothing". Callers retry the second, never serve the first.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BastionError",
    "CheckFailed",
    "IntegrityError",
    "InternalError",
    "InvalidNameError",
    "ManifestError",
    "ManifestProblem",
    "NotFoundError",
    "ScopeError",
    "UnavailableError",
    "UsageError",
]


class BastionError(Exception):
    """Root of every error Bastion raises deliberately."""

    exit_code: int = 3


class UsageError(BastionError):
    """The user's input (arguments, files, names) is wrong; nothing was changed."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class ManifestProblem:
    """One problem in a manifest, located as precisely as the source allows."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ManifestError(UsageError):
    """bastion.yaml is wrong. ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[ManifestProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class InvalidNameError(UsageError):
    """An artifact name, ref or path is malformed or would escape its root."""


class ScopeError(UsageError):
    """A fault or action was pointed at something outside its declared scope."""


class NotFoundError(BastionError):
    """A named thing (snapshot, ref, job, service, component) does not exist."""

    exit_code = 2


class IntegrityError(BastionError):
    """Bytes do not match their hash, or a signature does not verify. Never serve them."""

    exit_code = 1


class UnavailableError(BastionError):
    """No replica, backend or worker slot could be reached. Retrying may help."""

    exit_code = 1


class CheckFailed(BastionError):
    """A check ran to completion and found a problem (exit code 1)."""

    exit_code = 1


class InternalError(BastionError):
    """A bug in Bastion. The CLI prints where the log is."""

    exit_code = 3
