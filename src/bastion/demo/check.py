"""Demo scene: check the example's manifest and open its event log."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion import event_kinds as ek
from bastion.starter import write_key
from bastion.store import parse_replica_url

if TYPE_CHECKING:
    from bastion.demo import DemoContext, Scene

TITLE = "The manifest: one description of the AI system"


def run(ctx: DemoContext) -> Scene:
    from bastion.demo import Scene

    manifest = ctx.manifest()
    scene = Scene(TITLE)
    scene.findings.append(
        f"checked {ctx.manifest_path.name}: system {manifest.system!r} with "
        f"{len(manifest.components)} components, jobs {', '.join(manifest.jobs) or 'none'}, "
        f"services {', '.join(manifest.services) or 'none'}, {len(manifest.slos)} SLOs"
    )
    if manifest.vault is not None:
        made = [k for k in (manifest.vault.key, manifest.vault.admin_key) if k and write_key(k)]
        for replica in manifest.vault.replicas:
            if parse_replica_url(replica).is_local:
                (ctx.workdir / replica).mkdir(parents=True, exist_ok=True)
        scene.findings.append(
            f"vault: {len(manifest.vault.replicas)} local replicas, {len(made)} new signing keys"
        )
    for target, rec in manifest.recovery.items():
        scene.findings.append(f"recovery target {target}: RTO {rec.rto_s:g} s, RPO {rec.rpo_s:g} s")
    with ctx.events() as log:
        event = log.emit(ek.DEMO_STARTED, subject=manifest.system, scenes="all")
        scene.findings.append(
            f"event log: {log.path} (WAL); recorded {event.kind} as event #{event.id}"
        )
    return scene
