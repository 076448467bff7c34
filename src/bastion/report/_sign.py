"""Writing the report's files and signing them with the vault key; checking them.

Owns: the report directory (``report.html``, ``report.json``, ``junit.xml`` and
``report.sig``) and its signature: ``report.sig`` is a signed document in the vault's
snapshot form (``BASTION-REPORT-1 <key id> <signature hex>`` then the canonical JSON
body; Ed25519 over the body, as ``vault/_snapshot.py`` signs snapshots), whose body names
each file with its size and BLAKE3.

Must never: write outside the directory it is given (the names are fixed); accept a
report whose files differ by one byte from what was signed, or one signed by a key other
than the one the verifier trusts; trust a public key carried inside the report (the
verifier's key comes from the manifest's vault or ``--key``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3

from bastion.errors import IntegrityError, UsageError
from bastion.report._render import html, junit
from bastion.vault._keys import Signer, Verifier

__all__ = ["FILES", "SIGNATURE", "Verified", "verify_report", "write_report"]

FILES = ("report.html", "report.json", "junit.xml")
SIGNATURE = "report.sig"
_MAGIC = b"BASTION-REPORT-1"
_BODY = "bastion.report-signature/1"


def _canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _write(path: Path, data: bytes) -> None:
    """Whole or not at all: a temporary file in the same directory, renamed over."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        Path(tmp).chmod(0o644)  # a report is for sharing, unlike the state directory
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(document: Mapping[str, Any], out: Path, signer: Signer) -> dict[str, Path]:
    """Write the report's three files and ``report.sig`` into ``out`` (made if missing);
    return each file's path by name."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"-o {out}: cannot make the directory: {exc.strerror}") from None
    if not out.is_dir():
        raise UsageError(f"-o {out}: not a directory")
    contents = {
        "report.json": (json.dumps(document, indent=2, sort_keys=True) + "\n").encode(),
        "report.html": html(document).encode(),
        "junit.xml": junit(document).encode(),
    }
    written = {}
    try:
        for name, data in contents.items():
            _write(out / name, data)
            written[name] = out / name
        body = {
            "schema": _BODY,
            "report_schema": document.get("schema"),
            "system": document.get("system"),
            "generated_at": document.get("generated_at"),
            "score": (document.get("score") or {}).get("value"),
            "files": {
                name: {"bytes": len(data), "blake3": blake3.blake3(data).hexdigest()}
                for name, data in sorted(contents.items())
            },
        }
        raw = _canonical(body)
        key_id = signer.public_bytes().hex()[:16]
        header = b" ".join((_MAGIC, key_id.encode(), signer.sign(raw).hex().encode()))
        _write(out / SIGNATURE, header + b"\n" + raw)
    except OSError as exc:
        raise UsageError(f"-o {out}: cannot write the report: {exc.strerror}") from None
    written[SIGNATURE] = out / SIGNATURE
    return written


@dataclass(frozen=True, slots=True)
class Verified:
    """A report that verified: who signed it, when it was made, its score, its files."""

    key_id: str
    system: str
    generated_at: str
    score: float | None
    files: tuple[str, ...]


def verify_report(out: Path, verifier: Verifier) -> Verified:
    """Check ``out``'s signature with ``verifier`` and every file against it.

    ``UsageError`` (exit 2) when ``out`` is not a report directory at all;
    ``IntegrityError`` (exit 1) when the signature or any file does not match."""
    if not out.is_dir():
        raise UsageError(f"{out}: no such directory (pass the directory `bastion report -o` wrote)")
    sig = out / SIGNATURE
    try:
        stored = sig.read_bytes()
    except FileNotFoundError:
        raise UsageError(
            f"{out}: no {SIGNATURE}, so not a signed report (write one with `bastion report -o "
            f"{out}`)"
        ) from None
    header, sep, raw = stored.partition(b"\n")
    parts = header.split(b" ")
    if not sep or len(parts) != 3 or parts[0] != _MAGIC:
        raise IntegrityError(f"{sig}: not a report signature (its header was changed)")
    if parts[1] != verifier.key_id.encode():
        raise IntegrityError(
            f"{sig}: signed by key {parts[1][:16].decode('ascii', 'replace')!r}, not the "
            f"vault's key {verifier.key_id} (another key, or the signature was replaced)"
        )
    if not re.fullmatch(rb"[0-9a-f]{128}", parts[2]) or not verifier.verify(
        bytes.fromhex(parts[2].decode("ascii")), raw
    ):
        raise IntegrityError(
            f"{sig}: the signature does not verify with the vault's key {verifier.key_id}: "
            "the signed list of files was edited or forged"
        )
    body = json.loads(raw)
    files = body.get("files") if isinstance(body, dict) else None
    if body.get("schema") != _BODY or not isinstance(files, dict) or set(files) != set(FILES):
        raise IntegrityError(f"{sig}: the signature does not name the report's files")
    for name in FILES:
        path = out / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(
                f"{path}: missing; it was signed, so the report is incomplete"
            ) from None
        digest = blake3.blake3(data).hexdigest()
        if digest != files[name]["blake3"] or len(data) != files[name]["bytes"]:
            raise IntegrityError(
                f"{path}: changed after it was signed (BLAKE3 {digest[:16]}..., signed "
                f"{str(files[name]['blake3'])[:16]}..., {len(data)} bytes, signed "
                f"{files[name]['bytes']}); regenerate it with `bastion report`"
            )
    return Verified(
        key_id=verifier.key_id,
        system=str(body.get("system")),
        generated_at=str(body.get("generated_at")),
        score=body.get("score"),
        files=FILES,
    )
