"""A seeded, paired bootstrap of per-example means.

Owns: ``bootstrap_means``: resample the examples of one evaluation set with replacement,
``replicates`` times, and return the mean of each per-example series on every replicate.
Every series is resampled with the *same* indices, so a candidate's and a baseline's
values on one replicate are paired: the interval of their difference is much narrower
than two separate intervals would suggest, because the examples both get right (or
wrong) cancel. ``interval`` takes the percentile interval.

Must never: depend on anything but its arguments. The stream is NumPy's PCG64 seeded
with ``(seed, crc32(name))``: one set's draws do not change when another set is added,
and the same inputs, seed and NumPy version give the same replicates bit for bit.
Replicates are drawn in blocks to bound memory; the blocks' order is fixed, so the
draws are the same whatever the block size.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

__all__ = ["bootstrap_means", "interval"]

_BLOCK_CELLS = 2_000_000


def bootstrap_means(
    series: Sequence[np.ndarray], *, replicates: int, seed: int, name: str
) -> list[np.ndarray]:
    """For each series (all of one length n), its mean on each of ``replicates``
    resamples of the n examples; a series holding NaN gives NaN means."""
    n = series[0].shape[0] if series else 0
    if n == 0 or replicates <= 0:
        return [np.full(max(replicates, 0), np.nan) for _ in series]
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    out = [np.empty(replicates) for _ in series]
    # One replicate's n indices are drawn in one call, replicate after replicate, so the
    # stream does not depend on how many replicates share a block.
    per_block = max(1, _BLOCK_CELLS // n)
    done = 0
    while done < replicates:
        rows = min(per_block, replicates - done)
        idx = np.stack([rng.integers(0, n, size=n) for _ in range(rows)])
        for values, means in zip(series, out, strict=True):
            means[done : done + rows] = values[idx].mean(axis=1)
        done += rows
    return out


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval holding ``level`` of the replicates (NaN if any is NaN)."""
    if samples.size == 0 or np.isnan(samples).any():
        return float("nan"), float("nan")
    tail = (1 - level) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return float(low), float(high)
