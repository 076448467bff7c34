"""``bastion init``: a commented starter manifest, two local vault replicas, and keys.

Owns: the starter text and creating the state directory. Must never overwrite an existing
manifest or key unless told to (``force``), and never write a key readable by others.
"""

from __future__ import annotations

from pathlib import Path

from bastion.errors import UsageError

__all__ = ["STARTER", "init", "write_key"]

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
    from bastion.vault import make_key

    return make_key(path, force=force)


def init(directory: Path, *, system: str = "my-system", force: bool = False) -> list[Path]:
    """Create ``directory/bastion.yaml``, the vault replicas and the keys; return what was made."""
    manifest = directory / "bastion.yaml"
    if manifest.exists() and not force:
        raise UsageError(f"{manifest} exists already (pass --force to overwrite it)")
    directory.mkdir(parents=True, exist_ok=True)
    manifest.write_text(STARTER.format(system=system), encoding="utf-8")
    made = [manifest]
    state = directory / ".bastion"
    for replica in (state / "vault" / "a", state / "vault" / "b"):
        replica.mkdir(parents=True, exist_ok=True)
        made.append(replica)
    keys = (state / "keys" / "signing.key", state / "keys" / "admin.key")
    made.extend(key for key in keys if write_key(key, force=force))
    return made
