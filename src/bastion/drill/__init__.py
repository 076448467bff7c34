"""Drills: Bastion's faults, and experiments that inject them and measure recovery.

See ``bastion.drill.faults`` for the fault library and its ``Scope``.
"""

from __future__ import annotations

__all__: list[str] = []
