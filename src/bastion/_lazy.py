"""Names a package exports but imports only when first used (PEP 562).

A package's ``__init__`` whose exports would pull in heavy modules (pydantic, aiohttp,
PyTorch, the gateway) at import writes::

    if TYPE_CHECKING:  # type checkers and readers still see every name
        from bastion.vault._server import VaultServer

    __getattr__, __dir__ = lazy(__name__, {"VaultServer": "bastion.vault._server"})

A name's module may be relative to the package (``"._server"``). The first lookup imports
it and keeps the value in the package's namespace, so later lookups never come back here.

Must never: import anything at start-up beyond ``sys`` (every ``bastion`` command imports
the top package, and this module with it).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy"]


def lazy(
    package: str, table: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for the module ``package``: each name of ``table`` is
    imported from its module (``name -> module``) when first asked for."""

    def getattr_(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        import importlib

        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    def dir_() -> list[str]:
        return sorted({*vars(sys.modules[package]), *table})

    return getattr_, dir_
