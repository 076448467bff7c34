"""The blast radius of a drill: which processes, paths and ports a fault may touch.

Owns: ``Scope``, the one check every fault makes before it changes anything. A scope
holds the processes Bastion started or was given (and their descendants), the paths an
experiment names (and everything under them) and the ports it names.

Must never: widen itself. A scope is frozen; ``with_pids`` etc. return a new one. A path
is compared after resolving symlinks and ``..``, so a link inside the scope that points
outside it is refused. The filesystem root, the machine's init process and the drill's
own process are refused even when named, because no drill is pointed at them on purpose.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.errors import ScopeError

__all__ = ["Scope"]


def _resolve(path: str | Path) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def _descendants(pid: int) -> set[int]:
    try:
        import psutil

        return {child.pid for child in psutil.Process(pid).children(recursive=True)}
    except Exception:
        # The parent is gone, or psutil is missing: no descendants we can prove.
        return set()


@dataclass(frozen=True)
class Scope:
    """What a drill may touch. Every fault calls one of the ``check_*`` methods first.

    ``pids``: processes Bastion started or the experiment names; their descendants are in
    scope too (a supervisor's worker). ``paths``: directories or files; anything under
    them is in scope. ``ports``: TCP ports a network fault may listen on or proxy to.
    """

    pids: frozenset[int] = frozenset()
    paths: tuple[Path, ...] = ()
    ports: frozenset[int] = frozenset()
    name: str = "drill"
    _roots: tuple[Path, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        roots = tuple(_resolve(p) for p in self.paths)
        for root in roots:
            if root == Path(root.anchor):
                raise ScopeError(
                    f"scope {self.name!r}: the filesystem root {root} cannot be in a drill's "
                    "scope; name the directories the experiment may damage"
                )
        for pid in self.pids:
            if pid <= 1:
                raise ScopeError(
                    f"scope {self.name!r}: pid {pid} cannot be in a drill's scope; "
                    "name the processes Bastion started"
                )
        object.__setattr__(self, "pids", frozenset(int(p) for p in self.pids))
        object.__setattr__(self, "ports", frozenset(int(p) for p in self.ports))
        object.__setattr__(self, "_roots", roots)

    @classmethod
    def of(
        cls,
        *,
        pids: Iterable[int] = (),
        paths: Iterable[str | Path] = (),
        ports: Iterable[int] = (),
        name: str = "drill",
    ) -> Scope:
        return cls(frozenset(pids), tuple(Path(p) for p in paths), frozenset(ports), name)

    @classmethod
    def from_config(cls, config: dict[str, Any] | None, *, base: Path | None = None) -> Scope:
        """A scope from an experiment's ``bastion_scope`` block (``pids``, ``paths``,
        ``ports``); relative paths resolve against ``base``."""
        config = config or {}
        base = base or Path.cwd()
        paths = [base / str(p) for p in config.get("paths", [])]
        return cls.of(
            pids=[int(p) for p in config.get("pids", [])],
            paths=paths,
            ports=[int(p) for p in config.get("ports", [])],
            name=str(config.get("name", "drill")),
        )

    def with_pids(self, *pids: int) -> Scope:
        return Scope(self.pids | set(pids), self.paths, self.ports, self.name)

    def with_ports(self, *ports: int) -> Scope:
        return Scope(self.pids, self.paths, self.ports | set(ports), self.name)

    def describe(self) -> str:
        parts = [
            f"pids {sorted(self.pids)}" if self.pids else "no pids",
            f"paths {[str(p) for p in self._roots]}" if self._roots else "no paths",
            f"ports {sorted(self.ports)}" if self.ports else "no ports",
        ]
        return f"scope {self.name!r} ({'; '.join(parts)})"

    # -- checks -------------------------------------------------------------------------

    def contains_path(self, path: str | Path) -> bool:
        target = _resolve(path)
        return any(target == root or target.is_relative_to(root) for root in self._roots)

    def check_path(self, path: str | Path, *, fault: str = "fault") -> Path:
        """Return ``path`` resolved, or raise ``ScopeError`` when it is outside the scope."""
        target = _resolve(path)
        if not self.contains_path(target):
            raise ScopeError(
                f"{fault}: refused to touch {target}: it is outside {self.describe()}; "
                "add the directory to the experiment's bastion_scope.paths if you mean it"
            )
        return target

    def contains_pid(self, pid: int) -> bool:
        if pid <= 1 or pid == os.getpid():
            return False
        if pid in self.pids:
            return True
        return any(pid in _descendants(parent) for parent in self.pids)

    def check_pid(self, pid: int, *, fault: str = "fault") -> int:
        """Return ``pid``, or raise ``ScopeError`` when it is not one Bastion may touch."""
        if pid == os.getpid():
            raise ScopeError(
                f"{fault}: refused to signal pid {pid}: that is the drill itself; "
                "point the fault at a process the experiment started"
            )
        if not self.contains_pid(pid):
            raise ScopeError(
                f"{fault}: refused to touch pid {pid}: it is outside {self.describe()}; "
                "add it to bastion_scope.pids (or start it from the experiment) if you mean it"
            )
        return pid

    def check_port(self, port: int, *, fault: str = "fault") -> int:
        if port not in self.ports:
            raise ScopeError(
                f"{fault}: refused to touch port {port}: it is outside {self.describe()}; "
                "add it to bastion_scope.ports if you mean it"
            )
        return port
