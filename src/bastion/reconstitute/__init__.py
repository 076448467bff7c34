"""Rapid model reconstitution: ``bastion model reconstitute REF [--from-lineage]``.

    reconstitute(manifest, ref)
        resolve the signed snapshot (any replica that verifies)
        restore: Vault.heal(snapshot)            every key back on every replica
        rebuild: pipeline.replay(Recipe.of(snapshot)) -> Vault.heal(rebuilt=files)
                 (refused unless hash-identical to the signed original)
        serve:   each service whose model backend resolves to it answers a real
                 request through its own replicas (its gateway started if down)
    --> Reconstitution (path, seconds to serving, phases)

How it decides and what it proves: ``docs/reconstitute.md``.
"""

from __future__ import annotations

from bastion.reconstitute._reconstitute import Reconstitution, reconstitute
from bastion.reconstitute._serving import Serving, serve_again, services_of

__all__ = ["Reconstitution", "Serving", "reconstitute", "serve_again", "services_of"]
