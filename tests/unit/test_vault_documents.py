"""Snapshot documents are untrusted input on a replica: fuzz the parser, and check that
every edit of a signed document is rejected."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import IntegrityError
from bastion.vault._keys import Signer, Verifier, make_key
from bastion.vault._snapshot import decode_document, encode_document


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Signer, Verifier]:
    path: Path = tmp_path_factory.mktemp("k") / "signing.key"
    make_key(path)
    return Signer(path), Verifier.for_key_file(path)


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(max_size=512))
def test_random_bytes_never_verify(keys: tuple[Signer, Verifier], blob: bytes) -> None:
    with pytest.raises(IntegrityError):
        decode_document(blob, keys[1], "fuzz")


@settings(max_examples=200, deadline=None)
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_any_byte_edit_is_rejected(keys: tuple[Signer, Verifier], position: int, flip: int) -> None:
    signer, verifier = keys
    stored, _ = encode_document({"type": "snapshot", "name": "model/m", "version": 1}, signer)
    edited = bytearray(stored)
    edited[position % len(edited)] ^= flip
    with pytest.raises(IntegrityError):
        decode_document(bytes(edited), verifier, "edited")


def test_other_key_is_rejected(keys: tuple[Signer, Verifier], tmp_path: Path) -> None:
    make_key(tmp_path / "other.key")
    stored, _ = encode_document({"type": "snapshot"}, Signer(tmp_path / "other.key"))
    with pytest.raises(IntegrityError):
        decode_document(stored, keys[1], "forged")
    body, _ = decode_document(encode_document({"a": 1}, keys[0])[0], keys[1], "ok")
    assert body == {"a": 1}
