"""Lineage: what produced a snapshot, as a graph of the refs it names, transitively.

Owns: walking ``Snapshot.lineage`` from one ref (to a depth limit), and the graph's
shape: ``{root, nodes: {ref: info}, edges: [[child, parent]]}``.

Must never: fail because a parent is missing or does not verify (it is a node with
``in_vault: False``: the graph says what is known), or follow a cycle forever.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion.errors import IntegrityError, NotFoundError
from bastion.vault._snapshot import Snapshot

if TYPE_CHECKING:
    from bastion.vault._vault import Vault

__all__ = ["lineage"]


def lineage(vault: Vault, ref: str, depth: int = 32) -> dict[str, Any]:
    """What produced ``ref`` (see the module)."""
    root = vault.snapshot(ref)
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[list[str]] = []
    todo: list[tuple[str, Snapshot | None, int]] = [(root.ref, root, 0)]
    while todo:
        key, snap, level = todo.pop()
        if key in nodes:
            continue
        if snap is None:
            nodes[key] = {"ref": key, "in_vault": False}
            continue
        nodes[key] = {
            "ref": snap.ref,
            "in_vault": True,
            "id": snap.id,
            "created": snap.created.isoformat(timespec="seconds"),
            "meta": dict(snap.meta),
            "files": len(snap.files),
            "bytes": snap.size,
        }
        if level >= depth:
            continue
        for parent in snap.lineage:
            try:
                found: Snapshot | None = vault.snapshot(parent)
            except (NotFoundError, IntegrityError):
                found = None
            target = found.ref if found is not None else parent
            edges.append([snap.ref, target])
            todo.append((target, found, level + 1))
    return {"root": root.ref, "nodes": nodes, "edges": edges}
