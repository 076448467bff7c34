"""Ed25519 keys: making them, loading them, signing and verifying snapshot documents.

Owns: the key files (PEM PKCS8, mode 0600; a ``.pub`` next to each private key so a
reader can verify without the signing key) and the signature primitive.

Must never: write a key readable by others, log or emit key material, or accept a
signature from any key other than the one the vault is configured to trust.

Why Ed25519 (asymmetric) rather than restic's shared-secret MAC (restic #187): whoever
can read a vault must not be able to forge what it serves; a verifier holds only the
public key.
"""

from __future__ import annotations

import os
from pathlib import Path

import blake3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from bastion.errors import UsageError

__all__ = ["Signer", "Verifier", "make_key", "public_path"]

_SEAL_CONTEXT = "bastion vault 2026-11 object seal v1"


def public_path(key_path: Path) -> Path:
    return key_path.with_name(key_path.name + ".pub")


def make_key(path: Path, *, force: bool = False) -> bool:
    """Write a new Ed25519 private key (PEM, 0600) and its ``.pub``; False if one exists."""
    if path.exists() and not force:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public_path(path).write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return True


def _load_private(path: Path, role: str) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(
            f"{role} key {path} does not exist (run `bastion init`, or set vault.key in "
            "bastion.yaml)"
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise UsageError(f"{role} key {path} is not a PEM Ed25519 private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{role} key {path} is not an Ed25519 key")
    return key


class Signer:
    """Holds a private key; signs bytes. Loaded only when something is written."""

    def __init__(self, path: Path, role: str = "signing") -> None:
        self.path = path
        self._key = _load_private(path, role)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def public_bytes(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def seal_key(self) -> bytes:
        """A 32-byte key for sealing stored objects, derived from the private key.

        One-way (BLAKE3 key derivation): a seal never reveals the signing key, and only a
        holder of the signing key can make one.
        """
        raw = self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return blake3.blake3(raw, derive_key_context=_SEAL_CONTEXT).digest()


class Verifier:
    """Holds the one public key the vault trusts."""

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.raw = raw
        self.key_id = raw.hex()[:16]

    @classmethod
    def for_key_file(cls, path: Path, role: str = "signing") -> Verifier:
        """From the private key, or from its ``.pub`` when only that is present."""
        if path.exists():
            return cls(_load_private(path, role).public_key())
        pub = public_path(path)
        try:
            key = serialization.load_pem_public_key(pub.read_bytes())
        except FileNotFoundError:
            raise UsageError(
                f"{role} key {path} (or {pub.name}) does not exist; run `bastion init`"
            ) from None
        if not isinstance(key, Ed25519PublicKey):
            raise UsageError(f"{pub} is not an Ed25519 public key")
        return cls(key)

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            self._key.verify(signature, data)
        except InvalidSignature:
            return False
        return True
