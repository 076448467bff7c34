"""``bastion init``: a commented starter manifest, or, beside an existing one, the keys
and replica directories its vault still lacks.

Owns: the starter text, and setting up the vault a manifest's data and jobs use (its
``vault:``, or the default vault under the state directory that ``bastion.train``
checkpoints into when a manifest declares none): local replica directories, the Ed25519
signing and admin keys (PKCS8 PEM, mode 0600, each with a ``.pub``), and where the admin
key goes: beside the signing key by default (with a plain note that it belongs off the
hosts that write), or at ``admin_key_out``, leaving this host only its public half (what
the vault pins at its first commit), so this host can write but never delete.

Which vault: ``Vault.from_manifest``'s, the one place that says it (the manifest's
``vault:``, or the default vault, see ``bastion.vault.vault_replicas``), which is where
training checkpoints too. Layer: orchestration. It reads the manifest and drives the
vault, so it sits above it (the foundation must not import a capability).

Must never: change an existing manifest (``force`` writes a fresh starter over it, and
only the manifest), replace an existing key, make a private key where only its ``.pub``
is (a verify-only host), or make a signing key for a vault that already holds snapshots
(a new key could not verify them: the old one must come back from a backup).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bastion.errors import UsageError
from bastion.events import EventLog
from bastion.manifest import Manifest, load, loads
from bastion.store import open_store, parse_replica_url
from bastion.vault import Vault, make_key, vault_keys, vault_replicas

__all__ = ["STARTER", "Setup", "init", "set_up_vault", "write_key"]

STARTER = """\
# bastion.yaml: one description of your AI system; every Bastion command reads it.
# Check it with `bastion check`; editors can validate it against `bastion schema`.
# Relative paths resolve against this file's directory.
version: 1
system: {system}
state_dir: .bastion              # events, keys and local state

vault:                           # datasets, checkpoints and models, content-addressed
  replicas:                      # every write is durable on each reachable replica
    - .bastion/vault/a
    - .bastion/vault/b           # put this on another disk (or s3:// later)
  key: .bastion/keys/signing.key     # Ed25519: signs every snapshot
  admin_key: .bastion/keys/admin.key # needed to delete; keep it offline

segments: [prod, staging]

components:                      # what the system depends on
  - id: training-data
    kind: dataset
    location: on-prem
    availability: 0.999
  # - id: vendor-b
  #   kind: vendor-api
  #   location: third-party
  #   provider: vendor-b
  #   availability: 0.995

jobs: {{}}
  # train:
  #   segment: staging
  #   command: [python, train.py]
  #   inputs: {{data: dataset/training-data@latest}}
  #   checkpoint: {{every_steps: 50}}
  #   restart: {{max: 10}}
  #   heartbeat_timeout_s: 30

services: {{}}
  # api:
  #   segment: prod
  #   listen: 127.0.0.1:8700
  #   backends:
  #     - {{name: local, model: model/my-model@prod, replicas: {{min: 2, max: 4}}}}
  #     - {{name: vendor-b, url: http://127.0.0.1:8801, tier: fallback}}

slos: []
  # - {{id: api-availability, service: api, objective: 0.999}}

recovery:                        # targets the drills measure against
  software: {{rto_s: 30, rpo_s: 60}}
  site: {{rto_s: 300, rpo_s: 300}}
"""


def write_key(path: Path, *, force: bool = False) -> bool:
    """Write a new Ed25519 private key (PEM, mode 0600) and its ``.pub``.

    False if one exists already. The vault owns key-making (``bastion.vault.make_key``).
    """
    return make_key(path, force=force)


@dataclass(frozen=True)
class Setup:
    """What ``init`` did."""

    manifest: Path
    wrote_manifest: bool
    """False: an existing manifest was left exactly as it was."""
    made: tuple[Path, ...]
    """Replica directories and keys created now (nothing, when all were there)."""
    notes: tuple[str, ...]
    """What was deliberately not made, and why (one sentence each)."""


def init(
    directory: Path,
    *,
    system: str = "my-system",
    force: bool = False,
    admin_key_out: Path | None = None,
) -> Setup:
    """Make ``directory/bastion.yaml`` from the starter if there is none (or ``force``),
    then whatever its vault lacks: local replica directories and keys. Idempotent: a
    second run makes nothing. ``admin_key_out``: make the admin key there instead (see
    ``set_up_vault``)."""
    path = directory / "bastion.yaml"
    wrote = False
    if admin_key_out is not None and admin_key_out.exists():
        raise UsageError(_out_exists(admin_key_out))
    if force or not path.exists():
        text = STARTER.format(system=system)
        loads(text, filename=str(path), base_dir=directory.resolve())  # a bad --system
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        wrote = True
    made, notes = set_up_vault(load(path), admin_key_out=admin_key_out)
    return Setup(path, wrote, tuple(made), tuple(notes))


def _out_exists(out: Path) -> str:
    return (
        f"--admin-key-out {out}: a file is there already, and a key is never replaced; "
        "give a path where no file is"
    )


def set_up_vault(
    manifest: Manifest, *, admin_key_out: Path | None = None
) -> tuple[list[Path], list[str]]:
    """Make the replica directories and keys ``manifest``'s vault lacks; return what was
    made and notes on what was left alone. ``UsageError`` (nothing made) when the signing
    key is gone from a vault that holds snapshots: only that key can verify them.

    ``admin_key_out``: make the admin key there, and only its public half where the
    vault looks for it (``vault.admin_key`` + ``.pub``: the vault pins it at the first
    commit and checks gc's key against it). ``UsageError`` (nothing made) if an admin
    key, or its public half, is already here, or a file is at ``admin_key_out``.
    """
    if manifest.vault is None and not manifest.jobs:
        return [], ["the manifest declares no vault and no jobs: no vault to set up"]
    replicas = vault_replicas(manifest)
    signing, admin = vault_keys(manifest)
    if admin_key_out is not None:
        if admin_key_out.exists():
            raise UsageError(_out_exists(admin_key_out))
        here = admin if admin.exists() else _public(admin)
        if here.exists():
            raise UsageError(
                f"--admin-key-out {admin_key_out}: this vault's admin key is here already "
                f"({here}); to take it off this host, move it yourself (mv {admin} "
                f"{admin_key_out}) and keep {_public(admin).name} here"
            )
    keys = (("signing", signing), ("admin", admin))
    absent = [(role, key) for role, key in keys if not key.exists()]
    existing = bool(absent) and _holds_snapshots(replicas)
    if existing and not signing.exists() and not _public(signing).exists():
        raise UsageError(
            f"{signing}: the vault's signing key is missing, and the vault "
            f"({', '.join(replicas)}) already holds snapshots signed with it; put that "
            "key back from your backup: a new key could not verify them"
        )
    notes: list[str] = []
    if manifest.vault is None:
        notes.append(
            "the manifest declares no vault: its jobs checkpoint into the default vault "
            f"under {manifest.state_dir}"
        )
    missing = [Path(r) for r in replicas if not Path(r).is_dir()]
    with EventLog.in_state_dir(manifest.state_dir) as log:
        Vault.from_manifest(manifest, events=log)  # opening a local replica makes its directory
    made = [p for p in missing if p.is_dir()]  # (a URL is never a directory here)
    for role, key in absent:
        if _public(key).exists():
            notes.append(
                f"{role} key {key}: only its public half is here (a verify-only host); "
                "no private key was made"
            )
        elif existing:
            notes.append(
                f"admin key {key}: not made, as the vault already holds snapshots (a new "
                "admin key would not match one pinned in its replicas); bring the admin "
                "key here only to run gc"
            )
        elif role == "admin" and admin_key_out is not None:
            made.extend(_admin_elsewhere(key, admin_key_out))
            notes.append(
                f"the admin key (it deletes from the vault) is at {admin_key_out}, not on "
                f"this host's vault; this host keeps only its public half "
                f"{_public(key)}, so it can write but never delete. Move "
                f"{admin_key_out} offline; bring it back to {key} (or point "
                "vault.admin_key at it) only to run `bastion vault gc`"
            )
        elif make_key(key):
            made.append(key)
            if role == "admin":
                notes.append(
                    f"the admin key {key} deletes from the vault, and it is beside the "
                    "signing key: keep it off hosts that write (training nodes, CI). Move "
                    f"it offline and keep {_public(key).name} here, or make it elsewhere "
                    "with `bastion init --admin-key-out PATH`"
                )
    return made, notes


def _admin_elsewhere(admin: Path, out: Path) -> list[Path]:
    """The admin key at ``out`` (and ``out.pub``), and its public half at the vault's
    ``admin.pub``, where the vault pins it from; the files made."""
    make_key(out)
    admin.parent.mkdir(parents=True, exist_ok=True)
    admin.parent.chmod(0o700)
    _public(admin).write_bytes(_public(out).read_bytes())
    return [out, _public(admin)]


def _holds_snapshots(replicas: list[str]) -> bool:
    """Whether the local replicas that exist hold any snapshot (read without a key, and
    without making the directory of a missing replica: only ``tmp/`` in one that is
    there, which a bare directory made by hand lacks)."""
    present = []
    for url in replicas:
        parsed = parse_replica_url(url)
        if parsed.is_local and Path(parsed.location).is_dir():
            present.append(open_store(url))
    return bool(present) and bool(Vault(present).names())


def _public(key: Path) -> Path:
    return key.with_name(key.name + ".pub")
