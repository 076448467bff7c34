"""A resumable sampler and loader: continue mid-epoch at exactly the next batch.

Owns: the data position (epoch, batches consumed in it) and the per-epoch permutation,
which is a pure function of ``(seed, epoch)`` so a resumed job redraws the same order
without replaying anything.

Why not DataLoader's own sampler state: a DataLoader with workers pulls indices ahead of
what the loop consumed, so the sampler's position overstates progress (the bug behind
Ray Train #37633). ``ResumableLoader`` counts batches the loop actually received.

Must never: use a global RNG (it would couple the data order to model RNG draws).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["ResumableLoader", "ResumableSampler"]


class ResumableSampler:
    """Batches of indices over ``range(n)``; ``state_dict`` is ``{epoch, position}``."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
    ) -> None:
        if n <= 0 or batch_size <= 0:
            raise ValueError(f"ResumableSampler(n={n}, batch_size={batch_size}): both must be > 0")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        self.epoch = 0
        self.position = 0
        self._order: torch.Tensor | None = None

    def batches_per_epoch(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def _perm(self) -> torch.Tensor:
        if self._order is None:
            if self.shuffle:
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
                self._order = torch.randperm(self.n, generator=gen)
            else:
                self._order = torch.arange(self.n)
        return self._order

    def batch(self, index: int) -> torch.Tensor:
        start = index * self.batch_size
        return self._perm()[start : start + self.batch_size]

    def next_batch(self) -> torch.Tensor:
        """The next batch of indices, rolling into the next epoch when one ends."""
        if self.position >= self.batches_per_epoch():
            self.epoch += 1
            self.position = 0
            self._order = None
        out = self.batch(self.position)
        self.position += 1
        return out

    def __iter__(self) -> Iterator[list[int]]:
        """The rest of the current epoch (as lists, for ``DataLoader(batch_sampler=...)``)."""
        while self.position < self.batches_per_epoch():
            yield self.next_batch().tolist()

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.position

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "n": self.n}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("n", self.n) != self.n or state.get("seed", self.seed) != self.seed:
            from bastion.errors import UsageError

            raise UsageError(
                f"data position was saved for n={state.get('n')} seed={state.get('seed')}, "
                f"but this sampler has n={self.n} seed={self.seed}; resume with the same "
                "dataset snapshot and seed, or start a new job"
            )
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._order = None


class ResumableLoader:
    """Wrap a map-style dataset in a DataLoader whose position survives a restart.

    Iterating yields the rest of the current epoch; ``state_dict`` counts the batches the
    loop has received, not those the workers prefetched.
    """

    def __init__(self, dataset: Any, sampler: ResumableSampler, **loader_kwargs: Any) -> None:
        self.dataset = dataset
        self.sampler = sampler
        self.loader_kwargs = loader_kwargs
        self._consumed_epoch = sampler.epoch
        self._consumed_position = sampler.position

    def __iter__(self) -> Iterator[Any]:
        from torch.utils.data import DataLoader

        if self.sampler.position >= self.sampler.batches_per_epoch():
            self.sampler.epoch += 1
            self.sampler.position = 0
            self.sampler._order = None
        epoch, start = self.sampler.epoch, self.sampler.position
        batches = [
            self.sampler.batch(i).tolist() for i in range(start, self.sampler.batches_per_epoch())
        ]
        self._consumed_epoch, self._consumed_position = epoch, start
        loader = DataLoader(self.dataset, batch_sampler=batches, **self.loader_kwargs)
        for item in loader:
            self._consumed_position += 1
            yield item
        self.sampler.position = self._consumed_position

    def state_dict(self) -> dict[str, Any]:
        return {
            **self.sampler.state_dict(),
            "epoch": self._consumed_epoch,
            "position": self._consumed_position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
        self._consumed_epoch, self._consumed_position = self.sampler.epoch, self.sampler.position
