"""``bastion model serve | promote | rollback | reconstitute``: run a replica; move
``@prod`` through gates; bring a lost model back and serving.

``promote`` exits 0 when ``@prod`` points at the snapshot, 1 when it was refused (no
passing verdict for that exact snapshot), 2 on bad input (an unknown ref; ``--force``
without the admin key). ``reconstitute`` exits 0 when the model is whole and serving, 1
when it could not be (lost with no recipe, a rebuild not hash-identical, a lineage that
cannot be replayed exactly here, a service that did not answer), 2 on a bad or unknown
ref.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bastion.cli._common import DEFAULT_MANIFEST, ManifestOption

if TYPE_CHECKING:
    from bastion.reconstitute import Reconstitution
    from bastion.validate import Promotion
    from bastion.vault import Vault

__all__ = ["register"]


def serve(
    model: Annotated[str, typer.Argument(help="A vault ref, e.g. model/digits@latest.")],
    file: ManifestOption = DEFAULT_MANIFEST,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free port, printed).")] = 0,
) -> None:
    """Serve a signature-verified model: /v1/predict, /v1/embeddings, /v1/chat/completions."""
    import asyncio

    from bastion.names import parse_ref
    from bastion.serve.replica import load_vault
    from bastion.serve.replica import serve as run

    parse_ref(model)
    asyncio.run(run(load_vault(Path(file), model), host, port))


def _vault(file: Path) -> Vault:
    from bastion.cli._common import event_log, load_manifest
    from bastion.vault import Vault

    manifest = load_manifest(file)
    return Vault.from_manifest(manifest, events=event_log(manifest))


def _said(result: Promotion, as_json: bool) -> None:
    from bastion.cli._common import console

    if as_json:
        import json

        console.print_json(json.dumps(result.to_json()))
        return
    before = f"{result.name}@{result.previous}" if result.previous is not None else "nothing"
    if not result.moved:
        console.print(f"{result.name}@prod already is {result.ref}; nothing moved")
    elif result.action == "rollback":
        console.print(f"[green]rolled back[/green] {result.name}@prod: {before} -> {result.ref}")
    elif result.action == "force":
        console.print(
            f"[yellow]FORCED[/yellow] {result.name}@prod: {before} -> {result.ref} "
            "(no verdict; recorded as model.promotion_forced)"
        )
    else:
        console.print(
            f"[green]promoted[/green] {result.name}@prod: {before} -> {result.ref} "
            f"(verdict {result.verdict})"
        )


def promote(
    ref: Annotated[str, typer.Argument(help="The model snapshot, e.g. model/digits@3.")],
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Promote without a passing verdict (needs the vault's admin key)."
        ),
    ] = False,
    reason: Annotated[str, typer.Option(help="Why, recorded with --force.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Move NAME@prod to REF, only if a passing model-gate verdict names that snapshot."""
    from bastion.validate import promote as run

    _said(run(_vault(Path(file)), ref, force=force, reason=reason), as_json)


def rollback(
    name: Annotated[str, typer.Argument(help="The model, e.g. model/digits.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Move NAME@prod back to the version promoted before the current one."""
    from bastion.validate import rollback as run

    _said(run(_vault(Path(file)), name), as_json)


def _reconstituted(result: Reconstitution, as_json: bool, *, served: bool) -> None:
    from bastion.cli._common import console

    if as_json:
        import json

        console.print_json(json.dumps(result.to_json()))
        return
    heal = result.heal
    if result.path == "rebuild":
        how = (
            f"[green]rebuilt[/green] {result.snapshot} from its lineage "
            f"(replay {result.replay_seconds:.2f} s), hash-identical to the signed original; "
            f"{heal['chunks_rebuilt']} chunk(s) written back"
        )
    else:
        how = (
            f"[green]restored[/green] {result.snapshot} from a replica copy that verified; "
            f"{heal['chunks_repaired']} chunk and {heal['documents_repaired']} document "
            "copies put back"
        )
    console.print(f"{how} ({result.why})")
    for s in result.serving:
        started = f", gateway started (pid {s.started_pid})" if s.started_pid else ""
        console.print(
            f"[green]serving[/green] {s.service} at {s.url}: answered by {s.answered_by}{started}"
        )
    if not served:
        console.print("not served (--no-serve)")
    elif not result.serving:
        console.print("no service in the manifest serves this snapshot")
    console.print(
        f"path: {result.path}; {result.seconds:.2f} s from start to "
        f"{'serving' if result.serving else 'whole'}"
    )


def reconstitute(
    ref: Annotated[str, typer.Argument(help="The model, e.g. model/digits@latest or @3.")],
    from_lineage: Annotated[
        bool,
        typer.Option(
            "--from-lineage",
            help="Rebuild it by replaying its recorded lineage, even if a replica holds it.",
        ),
    ] = False,
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="Make it whole in the vault; serve nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Bring a lost model back (restore from a replica, or rebuild from lineage, proven
    hash-identical) and serve it again; prints the path taken and the time to serving."""
    from bastion.cli._common import event_log, load_manifest
    from bastion.reconstitute import reconstitute as run

    manifest = load_manifest(Path(file))
    log = event_log(manifest)
    try:
        result = run(manifest, ref, events=log, from_lineage=from_lineage, serve=not no_serve)
    finally:
        log.close()
    _reconstituted(result, as_json, served=not no_serve)


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help="Model replicas, promotion and reconstitution.")
    sub.command("serve")(serve)
    sub.command("promote")(promote)
    sub.command("rollback")(rollback)
    sub.command("reconstitute")(reconstitute)
    app.add_typer(sub, name="model")
