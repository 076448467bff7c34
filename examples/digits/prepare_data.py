"""Regenerate ./dataset from scikit-learn's bundled digits (needs scikit-learn).

The shards are committed, so the example runs without scikit-learn; this script shows
where they came from.
"""

from pathlib import Path

from sklearn.datasets import load_digits


def main(shards: int = 10) -> None:
    out = Path(__file__).parent / "dataset"
    out.mkdir(exist_ok=True)
    digits = load_digits()
    x, y = digits.data.astype(int), digits.target
    n = len(y)
    header = ",".join([f"p{j}" for j in range(64)] + ["label"]) + "\n"
    for i in range(shards):
        lo, hi = i * n // shards, (i + 1) * n // shards
        lines = [
            ",".join(map(str, row)) + f",{label}\n"
            for row, label in zip(x[lo:hi], y[lo:hi], strict=True)
        ]
        (out / f"shard-{i:02d}.csv").write_text(header + "".join(lines))


if __name__ == "__main__":
    main()
