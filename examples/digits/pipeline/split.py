"""Pipeline stage: one split of the digits shards (train, holdout or golden).

Reads the verified raw snapshot the runner restored under $BASTION_STAGE_INPUTS/raw and
writes one CSV to $BASTION_STAGE_OUTPUT: rows 0-1199 are ``train``, 1200-1596
``holdout``, 1597- ``golden`` (the split the validation tests use). Deterministic: the
same input bytes give the same output bytes, so a resumed or cached run publishes the
same snapshot content.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SPLITS = {"train": (0, 1200), "holdout": (1200, 1597), "golden": (1597, None)}


def main(split: str) -> int:
    raw = Path(os.environ["BASTION_STAGE_INPUTS"]) / "raw"
    out = Path(os.environ["BASTION_STAGE_OUTPUT"])
    header = ""
    rows: list[str] = []
    for shard in sorted(raw.glob("*.csv")):
        lines = shard.read_text().splitlines()
        header = header or lines[0]
        rows.extend(lines[1:])
    lo, hi = SPLITS[split]
    (out / f"{split}.csv").write_text("\n".join([header, *rows[lo:hi]]) + "\n")
    print(f"{split}: {len(rows[lo:hi])} rows", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
