"""``bastion model serve MODEL``: run one local model replica from the vault."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bastion.cli._common import DEFAULT_MANIFEST, ManifestOption

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


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help="Model replicas.")
    sub.command("serve")(serve)
    app.add_typer(sub, name="model")
