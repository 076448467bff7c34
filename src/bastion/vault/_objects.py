"""Objects: content-defined chunks, addressed by BLAKE3, stored raw or zstd-compressed.

Owns: where chunk boundaries fall, how an object is named (BLAKE3 of its plaintext, hex),
and its stored form (one header byte, then the payload).

Must never: name an object by anything but its plaintext hash (dedup and verification
both rest on it), or return bytes it has not verified against that name.

Chunk sizes (FastCDC, pyfastcdc's Cython build: the pure-Python ``fastcdc`` package is
orders of magnitude slower, far too slow for GB-per-second ingest and scrub; figures in
``docs/vault.md``):

- files under 64 MiB: min 256 KiB, average ~1 MiB, max 4 MiB. Datasets (CSV shards,
  images) dedup when appended or edited, and one object per ~1 MiB keeps a 1 GiB
  dataset at ~1,000 objects per replica (restic's 512 KiB/1 MiB/8 MiB is the same idea).
- files of 64 MiB and over (checkpoints, model weights): min 1 MiB, average ~4 MiB, max
  16 MiB. Checkpoints change almost every byte between steps, so finer chunks buy no
  dedup, and four times fewer objects means four times fewer files created per replica
  on the hot path training waits on.
- a file under the minimum is one object.

Compression: zstd level 1 where it pays. A 64 KiB sample is tried first; if it does not
shrink by 10 %, the chunk is stored raw (random weights, compressed images), so
incompressible data costs one small trial instead of a full compression pass. Level 1,
not 3: on CSV shards and integer arrays level 3 stored only a little less for markedly
more CPU, and compression was the largest CPU cost of ingest; negative levels were
faster but stored far more (measured in ``benchmarks/vault.py``; see ``docs/vault.md``).

Stored forms (first byte):

- ``00`` raw: the plaintext itself; its BLAKE3 is the object's name, so hashing the
  stored bytes is the full check.
- ``02`` sealed zstd: 32 bytes of seal, then the zstd frame. The seal is a keyed BLAKE3
  of (name, frame) under a key derived from the vault's signing key, so scrub can verify
  a compressed object at hashing speed without decompressing it, and nobody without the
  signing key (a replica's disk, someone who can write to it) can make a seal that
  passes: a forged or moved object fails the seal and is then checked in full.
- ``01`` zstd without a seal (vaults written before seals): checked by decompressing.
- ``03`` raw behind a 4 KiB header block (the byte, then zeros): for chunks that start
  page-aligned in memory (fixed-size chunks of the training's staging buffer), so the
  store can write the payload with O_DIRECT straight from where it is, no copy. Checked
  like ``00``: its BLAKE3 is the object's name.

Fixed-size chunks (``fixed_boundaries``): a caller that knows its data has nothing for
CDC to find (checkpoints: a fixed tensor layout whose bytes change every step) cuts at
fixed offsets instead; unchanged tensors still dedup, at the same offsets, and chunks of
an aligned buffer stay aligned.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import blake3
import zstandard
from pyfastcdc import FastCDC

from bastion.errors import IntegrityError

__all__ = [
    "ALIGNED",
    "ALIGNED_HEADER",
    "BIG_FILE",
    "RAW",
    "SEALED",
    "ZSTD",
    "Encoded",
    "boundaries",
    "decode",
    "encode",
    "fixed_boundaries",
    "hash_bytes",
    "iter_boundaries",
    "object_key",
    "seal",
    "verify_stored",
]

BIG_FILE = 64 << 20
_SMALL = FastCDC(1 << 20, min_size=256 << 10, max_size=4 << 20)
_LARGE = FastCDC(4 << 20, min_size=1 << 20, max_size=16 << 20)
_SAMPLE = 64 << 10
_MIN_COMPRESS = 512
_LEVEL = 1
RAW = b"\x00"
ZSTD = b"\x01"
SEALED = b"\x02"
ALIGNED = b"\x03"
ALIGNED_HEADER = 4096  # a block: the payload after it stays block-aligned on disk
_SEAL = 32
_FRAME_HEADER = 18  # the longest zstd frame header: enough to read the content size

_ALIGNED_BLOCK = ALIGNED + bytes(ALIGNED_HEADER - 1)

_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    # python-zstandard compressors are not safe to share between threads.
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "zc", None)
    if cache is None:
        cache = _local.zc = {}
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    zd: zstandard.ZstdDecompressor | None = getattr(_local, "zd", None)
    if zd is None:
        zd = _local.zd = zstandard.ZstdDecompressor()
    return zd


def boundaries(view: memoryview) -> list[tuple[int, int]]:
    """(offset, length) of each chunk of ``view``; CDC, so edits move few boundaries."""
    return list(iter_boundaries(view))


def iter_boundaries(view: memoryview) -> Iterator[tuple[int, int]]:
    """``boundaries`` one chunk at a time, so the write path can hand the first chunks of
    a big file to workers while CDC is still cutting the rest."""
    size = len(view)
    if size == 0:
        return
    cdc = _LARGE if size >= BIG_FILE else _SMALL
    if size <= cdc.min_size:
        yield (0, size)
        return
    for chunk in cdc.cut_buf(view):
        yield (chunk.offset, chunk.length)


def fixed_boundaries(size: int, chunk: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of ``chunk``-byte pieces of ``size`` bytes (the last shorter)."""
    for offset in range(0, size, chunk):
        yield (offset, min(chunk, size - offset))


def hash_bytes(data: bytes | memoryview) -> str:
    return blake3.blake3(data).hexdigest()


def object_key(digest: str) -> str:
    return f"objects/{digest[:2]}/{digest}"


@dataclass(frozen=True, slots=True)
class Encoded:
    """A chunk's stored form: ``header + payload`` (payload may be the caller's view)."""

    header: bytes
    payload: bytes | memoryview

    @property
    def size(self) -> int:
        return len(self.header) + len(self.payload)

    def parts(self) -> tuple[bytes, bytes | memoryview]:
        return (self.header, self.payload)


def seal(key: bytes, digest: str, payload: bytes | memoryview) -> bytes:
    """Keyed BLAKE3 of an object's name and stored payload (see the module docstring)."""
    hasher = blake3.blake3(bytes.fromhex(digest), key=key)
    hasher.update(payload)
    return hasher.digest()


def encode(
    view: memoryview,
    *,
    compress: bool = True,
    digest: str = "",
    seal_key: bytes | None = None,
    aligned: bool = False,
) -> Encoded:
    """Stored form of a chunk: zstd when a sample shows it pays, else raw (no copy).

    With ``seal_key`` (and the chunk's ``digest``) a compressed chunk is sealed, so scrub
    can check it without decompressing. ``aligned`` (the chunk starts page-aligned in
    memory, and is not compressed): raw behind a 4 KiB header block, so it stays aligned
    on disk and the store writes it without a copy.
    """
    size = len(view)
    if aligned and not compress:
        return Encoded(_ALIGNED_BLOCK, view)
    if compress and size >= _MIN_COMPRESS:
        sample = view[:_SAMPLE]
        probe = _compressor(_LEVEL).compress(sample)
        if len(probe) < 0.9 * len(sample):
            # A chunk no bigger than the sample (a small file) was compressed whole by
            # the probe: use that frame rather than compress it a second time.
            packed = probe if size <= _SAMPLE else _compressor(_LEVEL).compress(view)
            if len(packed) < 0.95 * size:
                if seal_key is not None and digest:
                    return Encoded(SEALED + seal(seal_key, digest, packed), packed)
                return Encoded(ZSTD, packed)
    return Encoded(RAW, view)


def decode(stored: bytes, digest: str, *, limit: int = 64 << 20) -> bytes | memoryview:
    """Plaintext of a stored object, verified against ``digest``; IntegrityError if not.

    A raw object comes back as a view into ``stored`` (no copy: reads and scrub of
    incompressible checkpoints are bound by memory bandwidth). A sealed object's seal is
    not needed here: the plaintext hash is the full check.
    """
    if not stored:
        raise IntegrityError(f"object {digest[:16]}: empty (truncated)")
    header = stored[:1]
    data: bytes | memoryview
    if header == RAW:
        data = memoryview(stored)[1:]
    elif header == ALIGNED:
        data = memoryview(stored)[ALIGNED_HEADER:]
    elif header in (ZSTD, SEALED):
        start = 1 if header == ZSTD else 1 + _SEAL
        try:
            data = _decompressor().decompress(memoryview(stored)[start:], max_output_size=limit)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"object {digest[:16]}: bad zstd frame ({exc})") from None
    else:
        raise IntegrityError(f"object {digest[:16]}: unknown header byte {header!r}")
    if hash_bytes(data) != digest:
        raise IntegrityError(f"object {digest[:16]}: content does not match its hash")
    return data


def verify_stored(
    stored: bytes, digest: str, *, seal_key: bytes | None = None, deep: bool = False
) -> tuple[int, str]:
    """Check a stored object; return (plaintext bytes covered, how it was checked).

    How: ``hashed`` (a raw object hashed as stored: its full check), ``sealed`` (a
    sealed object whose seal matched: no decompression), ``decompressed`` (content
    hashed after decompressing: ``deep``, an unsealed object, or no seal key), or
    ``seal_failed`` (the seal did not match but the content, decompressed and hashed,
    is right: a damaged seal, or one made with another key). IntegrityError if the
    object is bad.
    """
    header = stored[:1]
    if not deep:
        if header in (RAW, ALIGNED):
            start = 1 if header == RAW else ALIGNED_HEADER
            if len(stored) < start or hash_bytes(memoryview(stored)[start:]) != digest:
                raise IntegrityError(f"object {digest[:16]}: content does not match its hash")
            return len(stored) - start, "hashed"
        if header == SEALED and seal_key is not None and len(stored) > 1 + _SEAL:
            payload = memoryview(stored)[1 + _SEAL :]
            try:
                size = zstandard.frame_content_size(bytes(payload[:_FRAME_HEADER]))
            except zstandard.ZstdError:
                # a flipped bit in the frame header: the copy is bad, like a wrong hash
                raise IntegrityError(
                    f"object {digest[:16]}: its compressed frame header is damaged"
                ) from None
            if size >= 0 and seal(seal_key, digest, payload) == stored[1 : 1 + _SEAL]:
                return size, "sealed"
            return len(decode(stored, digest)), "seal_failed"
    return len(decode(stored, digest)), ("hashed" if header in (RAW, ALIGNED) else "decompressed")
