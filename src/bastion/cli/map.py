"""``bastion map``: the dependency map, its SPOFs and availability against the targets.

Exit 1 when a target is breached, a SPOF exists, or (with ``--observed``) the event log saw
a dependency nobody declared, so the map can gate CI; ``--exit-zero`` reports the same
and exits 0. A drawing written to stdout (``--format dot`` or ``mermaid``) exits 0 whatever
it shows, so ``bastion map --format dot | dot -Tpng`` works under ``set -o pipefail``.
Exit 2 for bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bastion.cli._common import DEFAULT_MANIFEST, ManifestOption, console, event_log
from bastion.errors import UsageError

# bastion.map (networkx) loads only when the map is drawn: every other command starts
# without it. The default is bastion.map.DEFAULT_BETA (tests/unit/test_cli_help.py
# keeps the two equal).
DEFAULT_BETA = 0.1

__all__ = ["register"]


def map_cmd(
    file: ManifestOption = DEFAULT_MANIFEST,
    fmt: Annotated[
        str, typer.Option("--format", help="text, json, mermaid, dot or html.")
    ] = "text",
    out: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write here instead of stdout.")
    ] = None,
    max_order: Annotated[
        int, typer.Option("--max-order", help="Largest cut set to find (1 = SPOFs only).")
    ] = 2,
    observed: Annotated[
        bool,
        typer.Option("--observed", help="Also list dependencies the event log saw undeclared."),
    ] = False,
    beta: Annotated[
        float,
        typer.Option(help="Common-cause beta factor: share of a failure a group shares."),
    ] = DEFAULT_BETA,
    exit_zero: Annotated[
        bool,
        typer.Option(
            "--exit-zero", help="Exit 0 even with SPOFs or breaches (the verdict is still shown)."
        ),
    ] = False,
) -> None:
    """Find single points of failure and compute exact availability from the manifest.

    Exit 1 on a SPOF, a breached target or an undeclared dependency (not for dot or
    mermaid written to stdout, nor with --exit-zero); 2 for bad input."""
    from bastion.manifest import load
    from bastion.map import FORMATS, ObservedReport, map_manifest, observed_dependencies, render
    from bastion.serve._spend import spend_by_backend

    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if not 1 <= max_order <= 6:
        raise UsageError(f"--max-order {max_order}: use 1 (SPOFs only) to 6")
    if not 0 <= beta < 1:
        raise UsageError(f"--beta {beta}: use a fraction in [0, 1), e.g. 0.1")
    manifest = load(file)
    report = map_manifest(
        manifest, max_order=max_order, beta=beta, spend=spend_by_backend(manifest.state_dir)
    )
    seen: ObservedReport | None = None
    if observed:
        # the log the manifest's events: names (a PostgreSQL database several hosts
        # share), else events.db; a missing file means nothing ran yet, and is not made
        # just to be read
        if manifest.events is not None or (manifest.state_dir / "events.db").exists():
            with event_log(manifest) as log:
                seen = observed_dependencies(manifest, log)
        else:
            seen = ObservedReport()
    text = render(report, fmt, seen)
    if out is not None:
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"-o {out}: cannot write: {exc.strerror}") from None
        console.print(f"wrote {out} ({fmt}); verdict: {'ok' if report.ok else 'FAIL'}")
    else:
        print(text, end="")
    drawing_piped = out is None and fmt in ("dot", "mermaid")
    failed = not report.ok or (seen is not None and seen.undeclared)
    if failed and not exit_zero and not drawing_piped:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("map")(map_cmd)
