"""Data-gate benchmark: Bastion's data gate (schema check + drift on every column)
against Evidently's DataDriftPreset on the same data, in one run, as a ratio.

    .venv/bin/python benchmarks/validate.py                 # 100,000 rows x 50 columns
    .venv/bin/python benchmarks/validate.py --rows 20000    # quicker, for development
    .venv/bin/python benchmarks/validate.py --no-evidently  # Bastion only

The data: a reference and a current table of the same size, 45 number columns (normal,
log-normal, Poisson counts: many ties) and 5 text categories; 5 number columns of the
current one are shifted by 0.5 standard deviations, so both tools have drift to find.
Goal (issue 13): the gate in <= 1 s on 2 cores, and faster than Evidently.

What is timed, for both tools, is the comparison of two tables already in memory: for
Bastion ``check_data`` (schema check, then KS / chi-squared with effect sizes and
Benjamini-Hochberg on every column, label check off: there is no label), for Evidently
``Report([DataDriftPreset()]).run(...)`` (which also builds its plots: that is what the
preset costs its users). Schema inference (done once per reference and stored) is timed
apart. Bastion's figure is the best of ``--repeat`` runs, Evidently's of
``--evidently-repeat`` (default 1: one run takes about a minute at 100,000 rows).

Evidently runs in its own venv, which this script makes on first use under
``$XDG_CACHE_HOME/bastion-bench/evidently`` (``pip install evidently``), so Bastion's
environment is never touched. If it cannot be installed here, the script says so and
prints Bastion's figures alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from bastion.validate import DataGateConfig, Table, check_data, infer_schema  # noqa: E402

NUMERIC, CATEGORICAL, SHIFTED = 45, 5, 5
_CATEGORIES = np.array([f"cat-{i:02d}" for i in range(12)], dtype=object)


def make(rows: int, seed: int, *, shifted: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {}
    for j in range(NUMERIC):
        kind = j % 3
        if kind == 0:
            x = rng.normal(10.0, 2.0, rows)
            sd = 2.0
        elif kind == 1:
            x = rng.lognormal(0.0, 0.5, rows)
            sd = float(np.sqrt((np.exp(0.25) - 1) * np.exp(0.25)))
        else:
            x = rng.poisson(4.0, rows).astype(np.float64)
            sd = 2.0
        if shifted and j < SHIFTED:
            x = x + 0.5 * sd
        columns[f"n{j:02d}"] = x
    weights = np.linspace(1.0, 3.0, _CATEGORIES.size)
    weights /= weights.sum()
    for j in range(CATEGORICAL):
        codes = np.searchsorted(np.cumsum(weights), rng.random(rows)).clip(0, _CATEGORIES.size - 1)
        columns[f"c{j}"] = _CATEGORIES[codes]
    return columns


def best(fn: Any, repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - began)
    return min(times), result


# ------------------------------------------------------------------------ Evidently

_DRIVER = r"""
import json, sys, time
import pandas as pd
ref = pd.read_parquet(sys.argv[1]); cur = pd.read_parquet(sys.argv[2]); repeat = int(sys.argv[3])
import evidently
try:  # evidently >= 0.7
    from evidently import Report
    from evidently.presets import DataDriftPreset
    new = True
except ImportError:  # evidently 0.4 - 0.6
    from evidently.report import Report
    from evidently.metric_preset import DataDriftPreset
    new = False
times = []
for _ in range(repeat):
    began = time.perf_counter()
    report = Report([DataDriftPreset()])
    result = report.run(cur, ref) if new else report.run(reference_data=ref, current_data=cur)
    times.append(time.perf_counter() - began)
drifted = None
metrics = (result.dict() if new else report.as_dict()).get("metrics", [])
for m in metrics:
    name, value = str(m.get("metric_name", m.get("metric", ""))), m.get("value", m.get("result"))
    if "DriftedColumnsCount" in name and isinstance(value, dict):
        drifted = value.get("count")
    elif isinstance(value, dict) and "number_of_drifted_columns" in value:
        drifted = value["number_of_drifted_columns"]
print(json.dumps({"version": evidently.__version__, "best_s": min(times), "drifted": drifted}))
"""

# evidently 0.7 imports a pandas function that pandas 3 removed
_EVIDENTLY = ["evidently", "pandas<3", "pyarrow"]


def _probe(python: Path) -> str:
    done = subprocess.run(
        [str(python), "-c", "import evidently, pandas, pyarrow"],
        check=False,
        capture_output=True,
        text=True,
    )
    return "" if done.returncode == 0 else (done.stderr.strip().splitlines() or ["?"])[-1]


def _evidently_python() -> tuple[Path | None, str]:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bastion-bench"
    env = cache / "evidently"
    python = env / "bin" / "python"
    if python.exists() and not _probe(python):
        return python, ""
    env.parent.mkdir(parents=True, exist_ok=True)
    print(f"making Evidently's venv in {env} (pip install {' '.join(_EVIDENTLY)}) ...")
    venv.create(env, with_pip=True, clear=True)
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *_EVIDENTLY],
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return None, "pip install evidently failed: " + " | ".join(tail)
    broken = _probe(python)
    if broken:
        return None, f"evidently installed but does not import: {broken}"
    return python, ""


def run_evidently(
    ref: dict[str, np.ndarray], cur: dict[str, np.ndarray], repeat: int
) -> dict[str, Any] | str:
    python, why = _evidently_python()
    if python is None:
        return why
    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, data in (("ref", ref), ("cur", cur)):
            path = Path(tmp) / f"{name}.parquet"
            cols = {k: (v.astype(str) if v.dtype == object else v) for k, v in data.items()}
            pq.write_table(pa.table(cols), path)
            paths.append(str(path))
        driver = Path(tmp) / "driver.py"
        driver.write_text(_DRIVER)
        done = subprocess.run(
            [str(python), str(driver), *paths, str(repeat)],
            check=False,
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        return "Evidently failed: " + " | ".join(done.stderr.strip().splitlines()[-3:])
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


# ----------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--evidently-repeat",
        type=int,
        default=1,
        help="Evidently's runs (each builds its plots too, and takes about a minute here)",
    )
    parser.add_argument("--no-evidently", action="store_true")
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0))
    print(
        f"data gate: {args.rows:,} rows x {NUMERIC + CATEGORICAL} columns "
        f"({NUMERIC} number, {CATEGORICAL} text; {SHIFTED} shifted by 0.5 sd) against a "
        f"reference of the same size; {cpus} CPUs; best of {args.repeat}"
    )
    ref_cols = make(args.rows, 1, shifted=False)
    cur_cols = make(args.rows, 2, shifted=True)
    aa_cols = make(args.rows, 3, shifted=False)

    def tables() -> tuple[Table, Table, Table]:
        return (
            Table.from_arrays(ref_cols, "reference"),
            Table.from_arrays(cur_cols, "current"),
            Table.from_arrays(aa_cols, "a/a"),
        )

    infer_s, schema = best(lambda: infer_schema(tables()[0], label=None), args.repeat)
    config = DataGateConfig(check_labels=False)

    def gate(which: int) -> Any:
        fresh = tables()  # nothing cached from an earlier run: every column parsed, sorted
        return check_data(fresh[which], fresh[0], schema, config=config)

    gate_s, verdict = best(lambda: gate(1), args.repeat)
    _, aa = best(lambda: gate(2), 1)
    assert verdict.drift is not None
    assert aa.drift is not None
    found = sorted(c.column for c in verdict.drift.drifted)
    print(f"  schema inference (once per reference, stored) {infer_s:8.3f} s")
    print(
        f"  Bastion data gate (schema + drift, 50 columns) {gate_s:8.3f} s   "
        f"goal <= 1 s: {'met' if gate_s <= 1.0 else 'NOT met'}"
    )
    print(
        f"    drifted columns found: {len(found)} of {SHIFTED} shifted ({', '.join(found)}); "
        f"on an A/A pair: {len(aa.drift.drifted)}; verdict {verdict.status}"
    )
    if args.no_evidently:
        return 0
    evidently = run_evidently(ref_cols, cur_cols, args.evidently_repeat)
    if isinstance(evidently, str):
        print(f"  Evidently: not run here ({evidently})")
        return 0
    ev_s = float(evidently["best_s"])
    print(
        f"  Evidently {evidently['version']} DataDriftPreset               {ev_s:8.3f} s   "
        f"(drifted columns it reports: {evidently['drifted']})"
    )
    print(f"  ratio Bastion / Evidently: {gate_s / ev_s:.3f}  ({ev_s / gate_s:.1f}x faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
