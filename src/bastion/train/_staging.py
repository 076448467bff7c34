"""Staging: copy the training state into one reused, preallocated buffer laid out as a
safetensors file, so the training loop blocks only for ``copy_``.

Owns: the flat buffer, its safetensors header and the tensor views into it.

Why by hand and not ``safetensors.torch.save``: the library serialises into a fresh
``bytes`` object (an allocation plus a second copy of the whole state per checkpoint,
the very cost the issue's table shows: ``clone()`` 0.30 s vs ``copy_`` into reused
buffers 0.072 s). Laying the buffer out as the file itself means the header is written
once, each save is one ``copy_`` per tensor, and the background writer hands the vault
a ``memoryview`` of the finished file with no further copy. Reading uses the library.

Must never: hand out the buffer while a save that uses it is in flight (the checkpointer
keeps at most one save in flight for exactly this reason).
"""

from __future__ import annotations

import json
import mmap
from dataclasses import dataclass

import torch

__all__ = ["DTYPES", "StagingBuffer", "layout_key"]

DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.uint16: "U16",
    torch.uint32: "U32",
    torch.uint64: "U64",
    torch.bool: "BOOL",
}
_ALIGN = 64

LayoutKey = tuple[tuple[str, torch.dtype, tuple[int, ...]], ...]


def layout_key(tensors: dict[str, torch.Tensor]) -> LayoutKey:
    return tuple((k, t.dtype, tuple(t.shape)) for k, t in tensors.items())


@dataclass
class _Slot:
    key: str
    view: torch.Tensor


class StagingBuffer:
    """One safetensors-shaped buffer for a fixed set of (name, dtype, shape)."""

    def __init__(self, tensors: dict[str, torch.Tensor], *, pin: bool = False) -> None:
        for key, t in tensors.items():
            if t.dtype not in DTYPES:
                raise TypeError(f"tensor {key!r} has dtype {t.dtype}, which safetensors lacks")
        self.key = layout_key(tensors)
        # Widest dtype first: every offset is then a multiple of its own item size, so each
        # tensor can be a typed view of the byte buffer (safetensors forbids gaps).
        order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
        header: dict[str, object] = {}
        offset = 0
        spans: list[tuple[str, int, int]] = []
        for k in order:
            n = tensors[k].numel() * tensors[k].element_size()
            header[k] = {
                "dtype": DTYPES[tensors[k].dtype],
                "shape": list(tensors[k].shape),
                "data_offsets": [offset, offset + n],
            }
            spans.append((k, offset, n))
            offset += n
        raw = json.dumps(header, separators=(",", ":")).encode()
        pad = (-(8 + len(raw))) % _ALIGN  # spaces are valid JSON padding
        head = raw + b" " * pad
        self.data_start = 8 + len(head)
        self.nbytes = self.data_start + offset
        if pin:
            self.buffer = torch.empty(self.nbytes, dtype=torch.uint8, pin_memory=True)
        else:
            # Anonymous mmap: page-aligned, so the writer can use O_DIRECT from it.
            self._map = mmap.mmap(-1, self.nbytes)
            self.buffer = torch.frombuffer(self._map, dtype=torch.uint8)
        self.buffer[:8] = torch.frombuffer(
            bytearray(len(head).to_bytes(8, "little")), dtype=torch.uint8
        )
        self.buffer[8 : self.data_start] = torch.frombuffer(bytearray(head), dtype=torch.uint8)
        self._slots: dict[str, _Slot] = {}
        for k, start, n in spans:
            t = tensors[k]
            flat = self.buffer[self.data_start + start : self.data_start + start + n]
            self._slots[k] = _Slot(k, flat.view(t.dtype).view(tuple(t.shape)))

    def fits(self, tensors: dict[str, torch.Tensor]) -> bool:
        return layout_key(tensors) == self.key

    def stage(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy every tensor into its view (device tensors: async copy, then one sync)."""
        cuda = False
        for k, t in tensors.items():
            cuda = cuda or t.is_cuda
            self._slots[k].view.copy_(t, non_blocking=t.is_cuda)
        if cuda:
            torch.cuda.synchronize()

    def memoryview(self) -> memoryview:
        """The whole safetensors file, without a copy."""
        view: memoryview = self.buffer.numpy().data
        return view.cast("B")
