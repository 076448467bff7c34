"""A replica in this process's memory, with failures on demand: the vault's tests run on it.

Owns: ``MemoryStore``, a ``Store`` that keeps values in a dict, and the failures a test
can switch on while the vault runs against it (in the spirit of httpx's
``MockTransport``):

- ``unavailable = True``: ``available()`` is False and every call raises
  ``UnavailableError`` (an unmounted disk, a bucket that does not answer);
- ``full = True``: ``available()`` stays True but every ``put`` raises ``OSError``
  ENOSPC (a disk that fills up in the middle of a commit);
- ``corrupt_reads(prefix)``: ``get`` returns the stored value with its last byte
  flipped, while the value itself stays intact (a bad cable or controller), until
  ``heal()``;
- ``damage(key)``: flip a byte of the stored value itself (bit rot, which a repair fixes);
- ``delay_s``: every call first waits this long through the injected ``sleep`` (a slow
  replica; give ``sleep=clock.advance`` to make it slow on a ``ManualClock``).

Must never: share values with another process (``worker_url`` is None, so the vault's
ingest stays on threads), or be used for data anyone wants to keep.
"""

from __future__ import annotations

import contextlib
import errno
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import asdict

from bastion.errors import InvalidNameError, NotFoundError, UnavailableError
from bastion.store._protocol import Buffer, StoreStatistics

__all__ = ["MemoryStore"]


class MemoryStore:
    """One replica in memory. Thread-safe. ``clock`` (wall seconds) dates values for
    ``age``; ``sleep`` is how ``delay_s`` waits."""

    def __init__(
        self,
        name: str = "memory",
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._url = f"memory://{name}"
        self._clock = clock
        self._sleep = sleep
        self._values: dict[str, tuple[bytes, float]] = {}
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._stats: dict[str, int] = {n: 0 for n in asdict(StoreStatistics("")) if n != "url"}
        self._corrupt: tuple[str, ...] = ()
        self.unavailable = False
        self.full = False
        self.delay_s = 0.0
        #: calls made, by method name: what a test may assert about the vault's behaviour
        self.calls: dict[str, int] = {}

    @property
    def url(self) -> str:
        return self._url

    @property
    def worker_url(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"MemoryStore({self._url!r}, {len(self._values)} keys)"

    # ---------------------------------------------------------------- injection

    def corrupt_reads(self, prefix: str = "") -> None:
        """From now on ``get`` of a key under ``prefix`` returns damaged bytes."""
        self._corrupt = (*self._corrupt, prefix)

    def heal(self) -> None:
        """Undo every injected failure (unavailable, full, corrupt reads, delay)."""
        self._corrupt = ()
        self.unavailable = self.full = False
        self.delay_s = 0.0

    def damage(self, key: str, offset: int = -1) -> None:
        """Flip one byte of the stored value of ``key`` (persistent damage)."""
        with self._guard:
            value, born = self._values[key]
            self._values[key] = (_flip(value, offset), born)

    def stored_keys(self) -> list[str]:
        """Every key held, sorted (injection and failures ignored)."""
        with self._guard:
            return sorted(self._values)

    # ----------------------------------------------------------------- the Store

    def _enter(self, method: str) -> None:
        with self._guard:
            self.calls[method] = self.calls.get(method, 0) + 1
        if self.delay_s:
            self._sleep(self.delay_s)
        if self.unavailable:
            raise UnavailableError(f"vault replica {self._url} is unavailable (injected)")

    @staticmethod
    def _check(key: str) -> None:
        parts = key.split("/")
        if not key or key.startswith("/") or "" in parts or ".." in parts or "\x00" in key:
            raise InvalidNameError(f"store key {key!r} is not a safe relative key")

    def available(self) -> bool:
        return not self.unavailable

    def put(
        self, key: str, parts: Sequence[Buffer], *, replace: bool = False, durable: bool = True
    ) -> bool:
        self._check(key)
        self._enter("put")
        if self.full:
            with self._guard:
                self._stats["errors"] += 1
            raise OSError(errno.ENOSPC, f"No space left on device (injected, {self._url})")
        value = b"".join(parts)
        with self._guard:
            if key in self._values and not replace:
                self._stats["put_existing"] += 1
                return False
            self._values[key] = (value, self._clock())
            self._stats["puts"] += 1
            self._stats["put_bytes"] += len(value)
        return True

    def get(self, key: str) -> bytes:
        self._check(key)
        self._enter("get")
        with self._guard:
            found = self._values.get(key)
            if found is None:
                raise NotFoundError(f"{key} is not on vault replica {self._url}")
            self._stats["gets"] += 1
            self._stats["get_bytes"] += len(found[0])
        value = found[0]
        if any(key.startswith(p) for p in self._corrupt):
            value = _flip(value, -1)
        return value

    def has(self, key: str) -> bool:
        self._check(key)
        self._enter("has")
        with self._guard:
            return key in self._values

    def size(self, key: str) -> int:
        self._check(key)
        self._enter("size")
        with self._guard:
            if key not in self._values:
                raise NotFoundError(f"{key} is not on vault replica {self._url}")
            return len(self._values[key][0])

    def age(self, key: str) -> float:
        self._check(key)
        self._enter("age")
        with self._guard:
            if key not in self._values:
                raise NotFoundError(f"{key} is not on vault replica {self._url}")
            return self._clock() - self._values[key][1]

    def list(self, prefix: str = "") -> Iterator[str]:
        if prefix and not prefix.endswith("/"):
            raise InvalidNameError(f"store prefix {prefix!r} must end with '/'")
        self._enter("list")
        with self._guard:
            found = sorted(k for k in self._values if k.startswith(prefix))
        yield from found

    def delete(self, key: str) -> bool:
        self._check(key)
        self._enter("delete")
        with self._guard:
            if self._values.pop(key, None) is None:
                return False
            self._stats["deletes"] += 1
        return True

    def sync(self, keys: Collection[str] | None = None) -> None:
        self._enter("sync")
        if keys is not None:
            with self._guard:
                missing = [k for k in keys if k not in self._values]
            if missing:
                raise NotFoundError(f"{missing[0]} is not on vault replica {self._url}")

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """In-process only: a memory replica has no other process to exclude."""
        self._enter("lock")
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            yield

    def cleanup(self) -> int:
        self._enter("cleanup")
        return 0  # a put is one dict assignment: nothing is ever left half-written

    def statistics(self) -> StoreStatistics:
        with self._guard:
            return StoreStatistics(self._url, **self._stats)

    def absorb_statistics(self, delta: StoreStatistics) -> None:
        with self._guard:
            for name in self._stats:
                self._stats[name] += getattr(delta, name)


def _flip(value: bytes, offset: int) -> bytes:
    if not value:
        return b"\x00"
    damaged = bytearray(value)
    damaged[offset % len(value)] ^= 0x5A
    return bytes(damaged)
