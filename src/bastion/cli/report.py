"""``bastion report [-o DIR]`` and ``bastion report verify DIR``: the signed readiness report.

``bastion report`` writes ``report.html``, ``report.json`` and ``junit.xml`` into DIR and
signs them with the vault key (``report.sig``); exit 0 when written, 1 when ``--min-score``
is given and the score is below it, 2 on bad input (no signing key, a bad option, an
unreadable journal). ``verify`` exits 0 when every file is as signed, 1 when one was
edited (or signed by another key), 2 when DIR is not a report.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli._common import DEFAULT_MANIFEST, ManifestOption

__all__ = ["register"]

_AGE = re.compile(r"^([1-9][0-9]*)(h|d)$")


def _age(text: str) -> float:
    from bastion.errors import UsageError

    match = _AGE.match(text.strip())
    if match is None:
        raise UsageError(f"--max-age {text!r}: give hours or days, e.g. 12h, 30d")
    return int(match.group(1)) * (3600.0 if match.group(2) == "h" else 86400.0)


def build(
    ctx: typer.Context,
    file: ManifestOption = DEFAULT_MANIFEST,
    out: Annotated[
        Path, typer.Option("-o", "--output", help="The directory to write the report into.")
    ] = Path("report"),
    max_age: Annotated[
        str, typer.Option("--max-age", help="Evidence older than this counts as 0 (12h, 30d).")
    ] = "30d",
    journal: Annotated[
        list[Path] | None,
        typer.Option(
            "--journal", help="A drill journal to read besides <state_dir>/drills/ (repeatable)."
        ),
    ] = None,
    min_score: Annotated[
        float | None,
        typer.Option("--min-score", help="Exit 1 (and fail the JUnit case) under this score."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary (keys in docs/cli-json.md).")
    ] = False,
) -> None:
    """Write the signed readiness report: drills, SLOs, map findings, outcomes, score."""
    if ctx.invoked_subcommand is not None:
        return
    from bastion.cli._common import console, load_manifest
    from bastion.errors import UsageError
    from bastion.report import build_report, write_report
    from bastion.train._store import checkpoint_keys
    from bastion.vault._keys import Signer

    if min_score is not None and not 0 <= min_score <= 100:
        raise UsageError(f"--min-score {min_score:g}: give a score from 0 to 100")
    manifest = load_manifest(Path(file))
    key, _admin = checkpoint_keys(manifest)
    if not key.exists():
        raise UsageError(
            f"the vault's signing key {key} does not exist: the report is signed with it "
            f"(run `bastion init {manifest.base_dir}`)"
        )
    signer = Signer(key)
    doc = build_report(manifest, max_age_s=_age(max_age), journals=journal or [])
    doc["min_score"] = min_score
    written = write_report(doc, out, signer)
    value = doc["score"]["value"]
    below = min_score is not None and value < min_score
    if as_json:
        print(
            json.dumps(
                {
                    "dir": str(out),
                    "files": {name: str(path) for name, path in written.items()},
                    "score": value,
                    "parts": {p["id"]: p["counted"] for p in doc["score"]["parts"]},
                    "drills": len(doc["drills"]),
                    "findings": len(doc["findings"]),
                    "below_min_score": below,
                },
                sort_keys=True,
            )
        )
    else:
        parts = ", ".join(
            f"{p['id']} {100 * p['counted']:.0f}%"
            + ("" if p["evidence"] == "ok" else f" ({p['evidence']})")
            for p in doc["score"]["parts"]
        )
        console.print(
            f"readiness {value:g}/100 ({parts}); {len(doc['drills'])} drill run(s), "
            f"{len(doc['findings'])} finding(s); wrote {out}/report.html, report.json, "
            "junit.xml, signed in report.sig"
        )
    if below:
        raise typer.Exit(1)


def verify(
    directory: Annotated[Path, typer.Argument(help="The directory `bastion report` wrote.")],
    file: ManifestOption = DEFAULT_MANIFEST,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key", help="The public key (.pub) to trust instead of the manifest's vault key."
        ),
    ] = None,
) -> None:
    """Check a report's signature and that no file was edited since (exit 1 if one was)."""
    from bastion.cli._common import console, load_manifest
    from bastion.report import verify_report
    from bastion.vault._keys import Verifier

    if key is not None:
        verifier = Verifier.for_key_file(key.with_suffix("") if key.suffix == ".pub" else key)
    else:
        from bastion.train._store import checkpoint_keys

        verifier = Verifier.for_key_file(checkpoint_keys(load_manifest(Path(file)))[0])
    found = verify_report(directory, verifier)
    console.print(
        f"{directory}: verified: {', '.join(found.files)} as signed by key {found.key_id} "
        f"({found.system}, {found.generated_at}, score {found.score})"
    )


def register(app: typer.Typer) -> None:
    sub = typer.Typer(
        help="Write the signed readiness report into -o DIR: report.html (charts, findings, "
        "score), report.json, junit.xml and report.sig; `verify DIR` checks one.",
        invoke_without_command=True,
    )
    sub.callback()(build)
    sub.command("verify")(verify)
    app.add_typer(sub, name="report")
