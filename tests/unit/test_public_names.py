"""Every module's ``__all__`` is exactly its public names (as httpx's
``test_exported_members.py``): a helper that leaks out without a leading underscore, or a
name promised in ``__all__`` that is gone, fails here.

A module's public names are read from its source: the names it defines at top level, and,
for a package's ``__init__``, the names it re-exports from inside the package. The CLI
modules and the demo's scenes are left out: their API is the command line (pinned by the
CLI tests), and each scene module is ``TITLE`` + ``run`` by the demo's own contract.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import bastion

SKIP_PREFIXES = ("bastion.cli", "bastion.demo.", "bastion.__main__")


def _modules() -> list[str]:
    names = ["bastion"]
    for info in pkgutil.walk_packages(bastion.__path__, "bastion."):
        if info.name.startswith(SKIP_PREFIXES):
            continue
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        names.append(info.name)
    return sorted(names)


def _is_type_var(value: ast.expr | None) -> bool:
    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id in {"TypeVar", "ParamSpec", "TypeVarTuple"}
    )


def _public_names(name: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, ast.Assign) and not _is_type_var(node.value):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out.add(target.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out.add(node.target.id)
        elif (
            isinstance(node, ast.ImportFrom)
            and is_package
            and node.level == 0
            and (node.module or "").startswith(name + ".")
        ):
            out.update(alias.asname or alias.name for alias in node.names)
    return {n for n in out if not n.startswith("_")}


@pytest.mark.parametrize("name", _modules())
def test_all_is_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    declared = getattr(module, "__all__", None)
    assert declared is not None, f"{name} has no __all__"
    assert len(declared) == len(set(declared)), f"{name}.__all__ repeats a name"
    missing = [n for n in declared if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it lacks: {missing}"
    assert module.__file__ is not None
    leaked = sorted(_public_names(name, Path(module.__file__)) - set(declared))
    assert not leaked, (
        f"{name} has public names outside __all__: {leaked} "
        "(add them to __all__, or give them a leading underscore)"
    )
