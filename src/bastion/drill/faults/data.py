"""Data faults on a dataset of CSV shards: label flips, schema breaks, distribution
shift, NaN injection.

Owns: rewriting shards with a seeded, counted amount of damage, and keeping each
shard's original bytes to revert. With ``copy_to`` the dataset is first copied there and
only the copy is damaged (the usual way: a drill feeds the copy to a pipeline); without
it the shards are damaged in place, so their directory must be in scope.

Must never: damage a shard outside the scope; change more than ``max_rows`` rows (the
blast radius); leave a shard half-written (each is written to a temp file and renamed).
"""

from __future__ import annotations

import csv
import io
import os
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bastion.drill.faults._base import Fault
from bastion.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from bastion.drill.faults.scope import Scope
    from bastion.events import Emit

__all__ = ["DataFault", "DistributionShift", "LabelFlip", "NanInjection", "SchemaBreak"]

_Table = tuple[list[str], list[list[str]]]


class DataFault(Fault):
    """Common part: find the shards, copy if asked, rewrite each with ``_damage``."""

    kind: ClassVar[str] = "data"

    def __init__(
        self,
        dataset: str | Path,
        *,
        scope: Scope,
        copy_to: str | Path | None = None,
        pattern: str = "*.csv",
        fraction: float = 0.1,
        seed: int | None = None,
        max_rows: int = 100_000,
        events: Emit | None = None,
        subject: str = "",
    ) -> None:
        super().__init__(events=events, subject=subject)
        if not 0.0 < fraction <= 1.0:
            raise UsageError(f"{self.kind}: fraction {fraction} must be in (0, 1]")
        source = Path(dataset).resolve()
        if not source.is_dir():
            raise NotFoundError(f"{self.kind}: dataset directory {source} does not exist")
        if copy_to is not None:
            self.root = scope.check_path(copy_to, fault=self.kind)
            self.source: Path | None = source
        else:
            self.root = scope.check_path(source, fault=self.kind)
            self.source = None
        self.pattern = pattern
        self.fraction = fraction
        self.rng = random.Random(seed)
        self.max_rows = max_rows
        self._originals: dict[Path, bytes] = {}
        self._copied = False
        self.rows_changed = 0

    def describe(self) -> dict[str, Any]:
        return {"dataset": str(self.root), "fraction": self.fraction}

    def shards(self) -> list[Path]:
        return sorted(p for p in self.root.glob(self.pattern) if p.is_file())

    @staticmethod
    def read(path: Path) -> _Table:
        rows = list(csv.reader(io.StringIO(path.read_text())))
        if not rows:
            return [], []
        return rows[0], rows[1:]

    @staticmethod
    def write(path: Path, header: list[str], rows: list[list[str]]) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        tmp = path.with_name(f".{path.name}.bastion-tmp")
        tmp.write_text(buf.getvalue())
        tmp.replace(path)

    def _pick(self, n: int) -> list[int]:
        k = max(1, round(n * self.fraction)) if n else 0
        return self.rng.sample(range(n), k)

    def _damage(self, header: list[str], rows: list[list[str]]) -> tuple[list[str], int]:
        raise NotImplementedError

    def _inject(self) -> dict[str, Any]:
        if self.source is not None and not self.root.exists():
            shutil.copytree(self.source, self.root)
            self._copied = True
        shards = self.shards()
        if not shards:
            raise NotFoundError(f"{self.kind}: no {self.pattern} shards under {self.root}")
        changed = 0
        for shard in shards:
            original = shard.read_bytes()
            header, rows = self.read(shard)
            new_header, n = self._damage(header, rows)
            if changed + n > self.max_rows:
                raise UsageError(
                    f"{self.kind}: would change more than max_rows={self.max_rows} rows; "
                    "lower fraction or raise max_rows"
                )
            self._originals[shard] = original
            self.write(shard, new_header, rows)
            changed += n
        self.rows_changed = changed
        return {"rows_changed": changed, "shards": len(shards)}

    def _revert(self) -> dict[str, Any]:
        if self._copied:
            shutil.rmtree(self.root)
        else:
            for shard, original in self._originals.items():
                tmp = shard.with_name(f".{shard.name}.bastion-tmp")
                tmp.write_bytes(original)
                os.replace(tmp, shard)  # noqa: PTH105 - atomic swap back
        self._originals.clear()
        return {"rows_restored": self.rows_changed}


class LabelFlip(DataFault):
    """Change the label of ``fraction`` of the rows to a different class seen in the data."""

    kind = "data.label_flip"

    def __init__(self, dataset: str | Path, *, label: str = "label", **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.label = label

    def _damage(self, header: list[str], rows: list[list[str]]) -> tuple[list[str], int]:
        if self.label not in header:
            raise UsageError(f"{self.kind}: no column {self.label!r} (columns: {header[:5]}...)")
        col = header.index(self.label)
        classes = sorted({r[col] for r in rows})
        if len(classes) < 2:
            return header, 0
        picked = self._pick(len(rows))
        for i in picked:
            rows[i][col] = self.rng.choice([c for c in classes if c != rows[i][col]])
        return header, len(picked)


class SchemaBreak(DataFault):
    """Break the schema: ``mode`` = drop_column | rename_column | extra_column |
    reorder | bad_type (a non-numeric value in ``fraction`` of a column's cells)."""

    kind = "data.schema_break"
    MODES = ("drop_column", "rename_column", "extra_column", "reorder", "bad_type")

    def __init__(
        self,
        dataset: str | Path,
        *,
        mode: str = "drop_column",
        column: str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(dataset, **kw)
        if mode not in self.MODES:
            raise UsageError(f"{self.kind}: mode {mode!r} is unknown; known: {list(self.MODES)}")
        self.mode = mode
        self.column = column

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "mode": self.mode}

    def _damage(self, header: list[str], rows: list[list[str]]) -> tuple[list[str], int]:
        column = self.column or header[-1]
        if column not in header:
            raise UsageError(f"{self.kind}: no column {column!r}")
        col = header.index(column)
        if self.mode == "drop_column":
            for r in rows:
                del r[col]
            return header[:col] + header[col + 1 :], len(rows)
        if self.mode == "rename_column":
            return [*header[:col], f"{column}_renamed", *header[col + 1 :]], 0
        if self.mode == "extra_column":
            for r in rows:
                r.append("extra")
            return [*header, "unexpected"], len(rows)
        if self.mode == "reorder":
            order = list(range(len(header)))
            self.rng.shuffle(order)
            for i, r in enumerate(rows):
                rows[i] = [r[j] for j in order]
            return [header[j] for j in order], len(rows)
        picked = self._pick(len(rows))
        for i in picked:
            rows[i][col] = "not-a-number"
        return header, len(picked)


class DistributionShift(DataFault):
    """Shift the feature distribution of ``fraction`` of the rows: ``x * scale + offset``
    on the numeric feature columns (all but ``label``), rounded like the originals."""

    kind = "data.distribution_shift"

    def __init__(
        self,
        dataset: str | Path,
        *,
        scale: float = 1.0,
        offset: float = 4.0,
        label: str = "label",
        **kwargs: Any,
    ) -> None:
        super().__init__(dataset, **kwargs)
        self.scale, self.offset, self.label = scale, offset, label

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "scale": self.scale, "offset": self.offset}

    def _damage(self, header: list[str], rows: list[list[str]]) -> tuple[list[str], int]:
        skip = header.index(self.label) if self.label in header else -1
        picked = self._pick(len(rows))
        for i in picked:
            for j, v in enumerate(rows[i]):
                if j == skip:
                    continue
                try:
                    x = float(v)
                except ValueError:
                    continue
                y = x * self.scale + self.offset
                rows[i][j] = str(round(y)) if v.lstrip("-").isdigit() else repr(y)
        return header, len(picked)


class NanInjection(DataFault):
    """Set ``fraction`` of the feature cells (not the label) to ``NaN``."""

    kind = "data.nan_injection"

    def __init__(self, dataset: str | Path, *, label: str = "label", **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.label = label

    def _damage(self, header: list[str], rows: list[list[str]]) -> tuple[list[str], int]:
        skip = header.index(self.label) if self.label in header else -1
        cells = [(i, j) for i in range(len(rows)) for j in range(len(header)) if j != skip]
        picked = self._pick(len(cells))
        touched = set()
        for k in picked:
            i, j = cells[k]
            rows[i][j] = "NaN"
            touched.add(i)
        return header, len(touched)
