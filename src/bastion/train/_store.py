"""Where checkpoints live: the vault, behind the four calls the checkpointer makes.

Owns: the checkpoint naming (``ckpt/<job>/step-000400``, one signed vault snapshot per
checkpoint), how a checkpoint is committed (fixed 16 MiB chunks of the staging buffer,
uncompressed, so the vault writes them with O_DIRECT straight from it), which vault a
job's checkpoints go to, and refusing a job whose vault cannot sign.

Which vault: the manifest's ``vault:``. A manifest without one still keeps its jobs'
checkpoints verified and replicated: they go to the *default vault* under the state
directory, the one ``bastion init`` writes into a starter manifest (replicas
``<state_dir>/vault/a`` and ``<state_dir>/vault/b``, keys in ``<state_dir>/keys/``),
and ``bastion init DIR`` makes its keys and directories.

How a checkpoint is verified is the vault's: the snapshot document's Ed25519 signature
when it is resolved, every chunk's BLAKE3 when it is read, a bad replica copy repaired
from a good one (``vault.repaired``); a checkpoint with no good copy is an
``IntegrityError``, and ``Checkpointer.restore`` takes the one before it.

Retention: a job's ``keep`` is passed to ``prune``, which the vault cannot honour yet
(see ``VaultStore.prune``): old checkpoints stay in the vault.

Must never: fall back to unsigned or unverified checkpoints (a missing signing key is a
``UsageError`` naming ``bastion init``), or reach behind the vault's public API.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from bastion.errors import UsageError
from bastion.events import EventLog
from bastion.manifest import Manifest
from bastion.names import parse_name
from bastion.vault import Vault, VaultClient

__all__ = [
    "CHECKPOINT_CHUNK",
    "CheckpointStore",
    "ServerStore",
    "VaultStore",
    "checkpoint_keys",
    "checkpoint_name",
    "checkpoint_replicas",
    "checkpoint_vault",
    "holds_snapshots",
    "open_store",
    "parse_step",
    "require_signing_key",
]

# A multiple of 4 KiB, so every chunk of the page-aligned staging buffer starts aligned.
CHECKPOINT_CHUNK = 16 << 20


def checkpoint_name(job: str, step: int) -> str:
    return parse_name(f"ckpt/{job}/step-{step:06d}")


def parse_step(name: str) -> int:
    return int(name.rsplit("step-", 1)[-1])


class CheckpointStore(Protocol):
    """The four things the checkpointer needs from storage (and how many copies it
    keeps, for the throughput the ``train.checkpoint.saved`` event reports)."""

    @property
    def replicas(self) -> int: ...

    def commit(
        self,
        name: str,
        files: Mapping[str, bytes | memoryview],
        *,
        meta: Mapping[str, Any],
        lineage: Sequence[str],
    ) -> str:
        """Store atomically; return the ref. Visible to ``checkpoints`` only when done."""
        ...

    def checkpoints(self, job: str) -> list[str]:
        """Names of complete checkpoints of ``job``, newest (highest step) first."""
        ...

    def read(self, name: str, path: str) -> bytes:
        """Verified bytes; ``IntegrityError`` if no replica holds a good copy."""
        ...

    def prune(self, job: str, keep: int) -> list[str]:
        """Drop all but the newest ``keep`` checkpoints; return the dropped names."""
        ...


class VaultStore:
    """The vault behind the ``CheckpointStore`` interface: each checkpoint is a signed
    snapshot ``ckpt/<job>/step-NNNNNN`` holding the state file and its skeleton."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    @property
    def replicas(self) -> int:
        """How many replicas each checkpoint is written to (for throughput figures)."""
        return len(self.vault.stores)

    def commit(
        self,
        name: str,
        files: Mapping[str, bytes | memoryview],
        *,
        meta: Mapping[str, Any],
        lineage: Sequence[str],
    ) -> str:
        # compress=False: float weights and Adam moments barely compress, and zstd would
        # cut persist throughput several-fold on 2 cores. Fixed chunks, not CDC: the
        # tensor layout is fixed and nearly every byte changes between steps (CDC finds
        # nothing; unchanged tensors still dedup at the same offsets), and chunks of the
        # page-aligned staging buffer stay aligned, so the vault stores them in its
        # aligned form and writes them with O_DIRECT straight from the buffer: no CDC
        # pass and no copy on the writer's path.
        snap = self.vault.commit(
            name,
            dict(files),
            meta=dict(meta),
            lineage=tuple(lineage),
            labels=("latest",),
            compress=False,
            chunk_size=CHECKPOINT_CHUNK,
        )
        return snap.ref

    def checkpoints(self, job: str) -> list[str]:
        return newest_first(self.vault.names(prefix=f"ckpt/{job}/"))

    def read(self, name: str, path: str) -> bytes:
        # the newest version of this step's snapshot that verifies (a step saved twice,
        # after a crash between commit and exit, has two; they hold the same state)
        return self.vault.read(self.vault.snapshot(f"{name}@latest"), path)

    def prune(self, job: str, keep: int) -> list[str]:
        """Nothing is dropped, yet. Deleting from the vault needs the admin key, which a
        training host should not hold (a stolen writer key can add, never destroy), and
        the vault's ``gc`` cannot drop them either: it keeps labelled versions and counts
        ``keep_last`` per name, and each checkpoint is its own name with one labelled
        version. Enforcing ``keep`` needs a vault operation that forgets whole names
        under the admin key (``gc`` treating ``ckpt/<job>/step-*`` as one series)."""
        return []


class ServerStore:
    """The vault server behind the ``CheckpointStore`` interface: a job that holds a
    scoped token (``BASTION_VAULT_URL`` and ``BASTION_VAULT_TOKEN``) instead of the
    signing key. The server signs each checkpoint and stamps its time; the job can
    append and read, never delete (``prune`` drops nothing, as ``VaultStore``'s)."""

    def __init__(self, client: VaultClient) -> None:
        self.client = client

    @property
    def replicas(self) -> int:
        return 1  # the server's replicas are its own; throughput is counted per upload

    def commit(
        self,
        name: str,
        files: Mapping[str, bytes | memoryview],
        *,
        meta: Mapping[str, Any],
        lineage: Sequence[str],
    ) -> str:
        snap = self.client.commit(
            name,
            dict(files),
            meta=dict(meta),
            lineage=tuple(lineage),
            compress=False,
            chunk_size=CHECKPOINT_CHUNK,
        )
        return str(snap["ref"])

    def checkpoints(self, job: str) -> list[str]:
        return newest_first(self.client.names(prefix=f"ckpt/{job}/"))

    def read(self, name: str, path: str) -> bytes:
        return self.client.read(f"{name}@latest", path)

    def prune(self, job: str, keep: int) -> list[str]:
        return []


def newest_first(names: Iterable[str]) -> list[str]:
    """The checkpoint names among a job's vault ``names`` (``.../step-N``), newest first."""
    return sorted(
        (n for n in names if n.rsplit("/", 1)[-1].startswith("step-")),
        key=parse_step,
        reverse=True,
    )


def checkpoint_replicas(manifest: Manifest) -> list[str]:
    """The replicas of ``checkpoint_vault(manifest)``, as the manifest names them."""
    if manifest.vault is not None:
        return list(manifest.vault.replicas)
    state = Path(manifest.state_dir)
    return [str(state / "vault" / "a"), str(state / "vault" / "b")]


def checkpoint_keys(manifest: Manifest) -> tuple[Path, Path]:
    """The signing and admin key files of ``checkpoint_vault(manifest)``: the manifest's
    ``vault.key`` and ``vault.admin_key``, by default ``<state_dir>/keys/signing.key`` and
    ``admin.key`` (as the vault itself defaults them)."""
    state = Path(manifest.state_dir)
    config = manifest.vault
    return (
        config.key if config is not None and config.key else state / "keys" / "signing.key",
        config.admin_key
        if config is not None and config.admin_key
        else state / "keys" / "admin.key",
    )


def checkpoint_vault(manifest: Manifest, *, events: EventLog | None = None) -> Vault:
    """The vault a manifest's jobs checkpoint into: its ``vault:``, or without one the
    default vault under the state directory (see the module docstring). Opening it makes
    its local replica directories."""
    if manifest.vault is not None:
        return Vault.from_manifest(manifest, events=events)
    state = Path(manifest.state_dir)
    signing, admin = checkpoint_keys(manifest)
    return Vault(
        checkpoint_replicas(manifest),
        key_path=signing,
        admin_key_path=admin,
        state_dir=state,
        events=events if events is not None else EventLog.in_state_dir(state),
    )


def holds_snapshots(manifest: Manifest) -> bool:
    """Whether the replicas of ``checkpoint_vault(manifest)`` that exist hold any snapshot
    (read without a key, and without making the directories of missing replicas)."""
    present = [r for r in checkpoint_replicas(manifest) if Path(r).is_dir()]
    return bool(present) and bool(Vault(present).names())


def _shown(path: Path, base: Path) -> str:
    """``path`` as the user would type it: relative to ``base`` when under it."""
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def _here(path: Path) -> str:
    """A directory as the user would type it: relative to the working one when below it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


def require_signing_key(manifest: Manifest, *, who: str) -> None:
    """Refuse (``UsageError``, exit 2) while the job's vault cannot sign, naming the fix;
    changes nothing either way.

    ``who`` starts the message (the job's name). The fix depends on what is there: a new
    vault gets ``bastion init``; a vault that already holds snapshots needs its own key
    back (a new one could not verify them); a ``.pub`` alone is a verify-only host.
    """
    key, _admin = checkpoint_keys(manifest)
    if key.exists():
        return
    where = "the vault's signing key"
    if manifest.vault is None:
        where = "the default vault's signing key (the manifest declares no vault)"
    shown = _shown(key, manifest.base_dir)
    public = key.with_name(key.name + ".pub")
    if public.exists():
        raise UsageError(
            f"{who}: {where} {shown} is missing and only its public half {public.name} is "
            "here: this host can verify snapshots but not write checkpoints; copy the "
            f"private key to {shown}"
        )
    if holds_snapshots(manifest):
        raise UsageError(
            f"{who}: {where} {shown} is missing, and the vault already holds snapshots "
            f"signed with it; put that key back at {shown} (from your backup): a new key "
            "could not verify them"
        )
    raise UsageError(
        f"{who}: {where} {shown} is missing; run `bastion init {_here(manifest.base_dir)}` "
        "to create the missing keys and replica directories"
    )


def open_store(
    manifest: Manifest, *, job: str | None = None, events: EventLog | None = None
) -> VaultStore | ServerStore:
    """Where ``job``'s checkpoints go: the vault server when the environment names one
    and a token (``BASTION_VAULT_URL``, ``BASTION_VAULT_TOKEN``: the job then needs no
    key), else the manifest's vault (or the default one), checked to be able to sign. A
    missing key is a ``UsageError`` naming the fix, never a silent downgrade to unsigned
    checkpoints."""
    from bastion.vault._client import ENV_TOKEN, ENV_TOKEN_FILE, ENV_URL

    if any(os.environ.get(k) for k in (ENV_URL, ENV_TOKEN, ENV_TOKEN_FILE)):
        return ServerStore(VaultClient.from_env())
    require_signing_key(manifest, who=job or manifest.system)
    return VaultStore(checkpoint_vault(manifest, events=events))
