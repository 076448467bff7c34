"""``bastion model serve | promote | rollback``: run a replica; move ``@prod`` through gates.

``promote`` exits 0 when ``@prod`` points at the snapshot, 1 when it was refused (no
passing verdict for that exact snapshot), 2 on bad input (an unknown ref; ``--force``
without the admin key).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bastion.cli._common import DEFAULT_MANIFEST, ManifestOption

if TYPE_CHECKING:
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


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help="Model replicas and promotion.")
    sub.command("serve")(serve)
    sub.command("promote")(promote)
    sub.command("rollback")(rollback)
    app.add_typer(sub, name="model")
