"""The blast radius of a drill: which processes, paths and ports a fault may touch.

Owns: ``Scope``, the one check every fault makes before it changes anything. A scope
holds the processes Bastion started or was given (and their descendants), the paths an
experiment names (and everything under them) and the ports it names.

Must never: widen itself. A scope is frozen; ``with_pids`` etc. return a new one. A path
is compared after resolving symlinks and ``..``, so a link inside the scope that points
outside it is refused. The filesystem root, the machine's init process and the drill's
own process are refused even when named, because no drill is pointed at them on purpose.

Copy-up (``copy_up``, the sandbox twin's): a twin's vault shares production's object files
by hard link where the filesystem cannot reflink, and a fault writes in place (as root,
read-only modes stop nobody). So before ``check_path`` hands a fault a regular file under
a ``copy_up`` root that has more than one link, the file gets its own copy (written
beside it, then renamed over it, keeping its mode and times): the fault damages the
twin's bytes, never the inode production still names. The same idea as overlayfs's
copy-up, done at the last moment so a twin costs links until a fault needs more.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
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
    ``copy_up``: roots under which a shared (hard-linked) file gets its own copy before
    ``check_path`` gives it to a fault (a sandbox twin's vault; see above).
    """

    pids: frozenset[int] = frozenset()
    paths: tuple[Path, ...] = ()
    ports: frozenset[int] = frozenset()
    name: str = "drill"
    copy_up: tuple[Path, ...] = ()
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
        object.__setattr__(self, "copy_up", tuple(_resolve(p) for p in self.copy_up))

    @classmethod
    def of(
        cls,
        *,
        pids: Iterable[int] = (),
        paths: Iterable[str | Path] = (),
        ports: Iterable[int] = (),
        name: str = "drill",
        copy_up: Iterable[str | Path] = (),
    ) -> Scope:
        return cls(
            frozenset(pids),
            tuple(Path(p) for p in paths),
            frozenset(ports),
            name,
            tuple(Path(p) for p in copy_up),
        )

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
        return replace(self, pids=self.pids | set(pids))

    def with_ports(self, *ports: int) -> Scope:
        return replace(self, ports=self.ports | set(ports))

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
        if self.copy_up:
            self._copy_up(target)
        return target

    def _copy_up(self, target: Path) -> None:
        """Give ``target`` its own inode if it is a shared file under a copy-up root."""
        try:
            info = os.lstat(target)
        except OSError:
            return
        if not stat.S_ISREG(info.st_mode) or info.st_nlink < 2:
            return
        if not any(target == r or target.is_relative_to(r) for r in self.copy_up):
            return
        private = target.with_name(f".{target.name}.{os.getpid()}.copy-up")
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with open(target, "rb") as src, os.fdopen(fd, "wb") as dst:  # noqa: PTH123
                shutil.copyfileobj(src, dst, 1 << 20)
                os.fchmod(dst.fileno(), stat.S_IMODE(info.st_mode))
            os.utime(private, ns=(info.st_atime_ns, info.st_mtime_ns))
            private.replace(target)
        except BaseException:
            private.unlink(missing_ok=True)
            raise

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
