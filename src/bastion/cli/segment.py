"""``bastion segment ...``: tokens for a segment, quarantine and release. Parse, call
``bastion.segment``, render."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from bastion.cli._common import DEFAULT_MANIFEST, ManifestOption, console, load_manifest

__all__ = ["register"]

app = typer.Typer(help="Segments that contain a breach: tokens, quarantine, release.")

JsonOption = Annotated[
    bool, typer.Option("--json", help="One JSON document (keys in docs/cli-json.md).")
]


def _read(token_text: str) -> str:
    """The token given, or stdin's when it is '-' (keeps it out of the shell history)."""
    return sys.stdin.read().strip() if token_text in {"-"} else token_text


def _print(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")


@app.command()
def token(
    segment: Annotated[str, typer.Argument(help="The segment the token acts in.")],
    ops: Annotated[str, typer.Option(help="Comma-separated: read, append.")] = "read,append",
    prefix: Annotated[
        list[str], typer.Option(help="A name prefix it may touch (default: the namespace).")
    ] = [],  # noqa: B006
    ttl: Annotated[float, typer.Option(help="Seconds it lives (at most 3600).")] = 3600.0,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Mint a capability token for SEGMENT and print it (give it to a job as
    BASTION_VAULT_TOKEN; it goes in Authorization: Bearer)."""
    from bastion.segment import mint_token

    manifest = load_manifest(file)
    wanted = [o.strip() for o in ops.split(",") if o.strip()]
    sys.stdout.write(mint_token(manifest, segment, prefixes=prefix, ops=wanted, ttl_s=ttl) + "\n")


@app.command()
def attenuate(
    token_text: Annotated[str, typer.Argument(metavar="TOKEN", help="A token ('-': stdin).")],
    ops: Annotated[str | None, typer.Option(help="Fewer ops, comma-separated.")] = None,
    prefix: Annotated[
        list[str], typer.Option(help="Narrower name prefixes (under the token's own).")
    ] = [],  # noqa: B006
    ttl: Annotated[float | None, typer.Option(help="A sooner expiry, in seconds.")] = None,
) -> None:
    """Narrow a token offline (no key, no server needed) and print the narrower token."""
    from bastion.segment import attenuate as narrow

    text = _read(token_text)
    wanted = [o.strip() for o in ops.split(",") if o.strip()] if ops is not None else None
    sys.stdout.write(narrow(text, prefixes=prefix or None, ops=wanted, ttl_s=ttl) + "\n")


@app.command()
def inspect(
    token_text: Annotated[str, typer.Argument(metavar="TOKEN", help="A token ('-': stdin).")],
) -> None:
    """Print what a token's blocks claim (unverified: what it says, not what a server
    would grant)."""
    from bastion.segment import inspect_token

    text = _read(token_text)
    _print({"blocks": inspect_token(text)})


@app.command()
def revoke(
    token_text: Annotated[str, typer.Argument(metavar="TOKEN", help="A token or a block id.")],
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Revoke a token (and every token narrowed from it) on the vault server."""
    from bastion.segment import revoke_token

    token_id = revoke_token(load_manifest(file), token_text)
    console.print(f"revoked token {token_id[:8]}")


@app.command()
def quarantine(
    segment: Annotated[str, typer.Argument(help="The segment to quarantine.")],
    keep_jobs: Annotated[bool, typer.Option(help="Do not stop the segment's jobs.")] = False,
    as_json: JsonOption = False,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Revoke SEGMENT's tokens, take its backends out of every running gateway, freeze
    its protected directories and stop its jobs; the other segments keep serving."""
    from bastion.segment import quarantine as run

    report = run(load_manifest(file), segment, stop_jobs=not keep_jobs)
    if as_json:
        _print(report.to_json())
        return
    table = Table("step", "result", box=None)
    table.add_row("tokens", f"refused ({report.tokens_refused_s * 1000:.0f} ms)")
    for svc, got in sorted(report.gateways.items()):
        shown = ", ".join(got) or "(none of its backends)" if isinstance(got, list) else got
        table.add_row(f"gateway {svc}", shown)
    for directory in report.frozen:
        table.add_row("frozen", directory)
    for job, what in sorted(report.jobs.items()):
        table.add_row(f"job {job}", what)
    console.print(table)
    console.print(
        f"segment {segment} quarantined in {report.seconds * 1000:.0f} ms "
        f"(backends out in {report.backends_out_s * 1000:.0f} ms)"
    )


@app.command()
def release(
    segment: Annotated[str, typer.Argument(help="The quarantined segment.")],
    force: Annotated[bool, typer.Option(help="Release even if the check fails.")] = False,
    as_json: JsonOption = False,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Check SEGMENT (its protected directories hold their last good snapshots), then
    thaw them and put its backends back. Old tokens stay refused: mint new ones."""
    from bastion.segment import release as run

    report = run(load_manifest(file), segment, force=force)
    if as_json:
        _print(report.to_json())
        return
    console.print(
        f"segment {segment} released: {len(report.backends)} backends back, "
        f"{len(report.thawed)} directories thawed"
    )


@app.command()
def status(as_json: JsonOption = False, file: ManifestOption = DEFAULT_MANIFEST) -> None:
    """Each segment: quarantined or not, since when, and its namespace."""
    from bastion.segment import SegmentState, namespace

    manifest = load_manifest(file)
    state = SegmentState(manifest.state_dir).read()["segments"]
    rows = {
        name: {
            "quarantined": bool(state.get(name, {}).get("quarantined")),
            "since": state.get(name, {}).get("since"),
            "namespace": list(namespace(manifest, name)),
        }
        for name in manifest.segments
    }
    if as_json:
        _print({"segments": rows})
        return
    table = Table("segment", "state", "namespace", box=None)
    for name, row in rows.items():
        table.add_row(
            name, "quarantined" if row["quarantined"] else "serving", " ".join(row["namespace"])
        )
    console.print(table)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="segment")
