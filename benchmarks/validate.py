"""Data-gate benchmark: Bastion's data gate (schema check + drift on every column)
against Evidently's DataDriftPreset on the same data, in one run, as a ratio.

    .venv/bin/python benchmarks/validate.py                 # 100,000 rows x 50 columns
    .venv/bin/python benchmarks/validate.py --rows 20000    # quicker, for development
    .venv/bin/python benchmarks/validate.py --no-evidently  # Bastion only

The data: a reference and a current table of the same size, 45 number columns (normal,
log-normal, Poisson counts: many ties) and 5 text categories; 5 number columns of the
current one are shifted by 0.5 standard deviations, so both tools have drift to find.
Goal (issue 13): the gate in <= 1 s on 2 cores, and faster than Evidently.

Pipelines (``--pipeline-only`` for this part alone, ``--no-pipeline`` to skip it):

- the runner's overhead per stage: a chain of ``--stages`` command stages (each a short
  Python script copying its input to its output) run by ``PipelineRunner`` against the
  same commands run directly in sequence by ``subprocess.run``; the difference per
  stage is what the runner adds beyond starting the process (restoring the verified
  input, the cache key, the supervisor, publishing the signed snapshot, events, the
  journal). Goal: <= 20 ms per stage. Then the same chain again with nothing changed
  (every stage a verified cache hit).
- a cached re-run of the whole example pipeline (``examples/digits``: ingest,
  validate-data, train, evaluate, gate, promote) with nothing changed, in process and as
  ``bastion pipeline run digits`` (the CLI's own start-up included). Goal: <= 1 s.

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
import statistics
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
    parser.add_argument("--no-pipeline", action="store_true")
    parser.add_argument("--pipeline-only", action="store_true")
    parser.add_argument("--stages", type=int, default=10)
    args = parser.parse_args()
    if not args.no_pipeline:
        pipelines(args.stages, args.repeat)
    if args.pipeline_only:
        return 0
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


# ------------------------------------------------------------------------ pipelines

_COPY = """import os, sys
from pathlib import Path
given = os.environ.get("BASTION_STAGE_INPUTS")
src = Path(given, "x", "out.txt") if given else Path(sys.argv[1]) if len(sys.argv) > 1 else None
data = src.read_bytes() if src is not None and src.exists() else b"seed\\n"
out = Path(os.environ["BASTION_STAGE_OUTPUT"])
(out / "out.txt").write_bytes(data + b"+")
"""


def _chain_manifest(stages: int) -> str:
    lines = [
        "version: 1",
        "system: bench",
        "state_dir: state",
        "vault:",
        "  replicas: [state/vault/a, state/vault/b]",
        "  key: state/keys/signing.key",
        "  admin_key: state/keys/admin.key",
        "pipelines:",
        "  chain:",
        "    stages:",
    ]
    for i in range(stages):
        lines += [
            f"      s{i}:",
            f"        output: dataset/s{i}",
            "        command: [python, copy.py]",
        ]
        if i:
            lines += [f"        inputs: {{x: dataset/s{i - 1}}}"]
    return "\n".join(lines) + "\n"


def _runner(root: Path, name: str) -> tuple[Any, Any]:
    from bastion.events import EventLog
    from bastion.manifest import load
    from bastion.pipeline import PipelineRunner
    from bastion.vault import Vault

    manifest = load(root / "bastion.yaml")
    log = EventLog.in_state_dir(manifest.state_dir)
    vault = Vault.from_manifest(manifest, events=log)
    return PipelineRunner(manifest, name, vault=vault, events=log), log


def _fresh_chain(base: Path, stages: int, tag: str) -> Path:
    from bastion.starter import init

    root = base / tag
    root.mkdir()
    (root / "copy.py").write_text(_COPY)
    (root / "bastion.yaml").write_text(_chain_manifest(stages))
    init(root)
    return root


def _direct(root: Path, stages: int) -> float:
    """The same commands, one after another, each reading the last one's file."""
    work = root / "direct"
    began = time.perf_counter()
    for i in range(stages):
        out = work / f"s{i}"
        out.mkdir(parents=True)
        argv = [sys.executable, str(root / "copy.py")]
        if i:
            argv.append(str(work / f"s{i - 1}" / "out.txt"))
        subprocess.run(argv, check=True, env={**os.environ, "BASTION_STAGE_OUTPUT": str(out)})
    return time.perf_counter() - began


def _timed_run(root: Path, name: str) -> tuple[float, Any]:
    runner, log = _runner(root, name)
    began = time.perf_counter()
    record = runner.run()
    elapsed = time.perf_counter() - began
    log.close()
    return elapsed, record


def _publish_cost(root: Path, n: int) -> float:
    """The vault's part: one commit of a one-file snapshot with two labels, best of n;
    each the first version of a new name, as every stage of the chain publishes."""
    from bastion.events import EventLog
    from bastion.manifest import load
    from bastion.vault import Vault

    manifest = load(root / "bastion.yaml")
    log = EventLog.in_state_dir(manifest.state_dir)
    vault = Vault.from_manifest(manifest, events=log)
    best_s = float("inf")
    for i in range(n):
        began = time.perf_counter()
        vault.commit(f"dataset/p{i}", {"out.txt": f"{i}".encode()}, labels=("latest", f"k{i}"))
        best_s = min(best_s, time.perf_counter() - began)
    log.close()
    return best_s


def _chain(stages: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        directs: list[float] = []
        ran: list[float] = []
        cached: list[float] = []
        for i in range(repeat):
            # interleaved, so a change in the machine's load reaches both alike
            directs.append(_direct(_fresh_chain(base, stages, f"d{i}"), stages))
            root = _fresh_chain(base, stages, f"r{i}")
            elapsed, record = _timed_run(root, "chain")
            assert record.state == "succeeded", record
            ran.append(elapsed)
            elapsed, record = _timed_run(root, "chain")
            assert all(r.state == "cached" for r in record.stages.values()), record
            cached.append(elapsed)
        direct = min(directs)
        publish = _publish_cost(_fresh_chain(base, stages, "publish"), stages)
        per_direct = direct / stages * 1000
        per_runner = min(ran) / stages * 1000
        overhead = per_runner - per_direct
        paired = [(r - d) / stages * 1000 for r, d in zip(ran, directs, strict=True)]
        print(
            f"pipeline runner: a chain of {stages} command stages, best of {repeat}"
            f"\n  the commands run directly in sequence   {direct:8.3f} s   "
            f"({per_direct:.1f} ms a stage: the process start)"
            f"\n  the same stages under the runner        {min(ran):8.3f} s   "
            f"({per_runner:.1f} ms a stage)"
            f"\n  overhead per stage (verified inputs, cache key, supervisor, signed publish, "
            f"events, journal) {overhead:6.1f} ms   goal <= 20 ms: "
            f"{'met' if overhead <= 20 else 'NOT met'}   ratio runner / direct "
            f"{per_runner / per_direct:.2f}"
            f"\n    of which publishing one signed snapshot durably on 2 replicas "
            f"(vault.commit alone of a new name, 2 labels) {publish * 1000:.1f} ms; the rest "
            f"{overhead - publish * 1000:.1f} ms"
            f"\n    paired (each runner chain less the direct one just before it), median "
            f"{statistics.median(paired):.1f} ms a stage, range {min(paired):.1f}.."
            f"{max(paired):.1f} (this machine's load moves single runs by several ms)"
            f"\n  a re-run with nothing changed (every stage a verified hit) "
            f"{min(cached):7.3f} s ({min(cached) / stages * 1000:.1f} ms a stage)"
        )


def _example(repeat: int) -> None:
    import shutil

    from bastion.starter import init

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "digits"
        shutil.copytree(
            REPO / "examples" / "digits", root, ignore=shutil.ignore_patterns(".bastion")
        )
        init(root)
        bastion = [sys.executable, "-m", "bastion"]
        yaml = str(root / "bastion.yaml")
        subprocess.run(
            [*bastion, "vault", "put", "dataset/digits", str(root / "dataset"), "-f", yaml],
            check=True,
            capture_output=True,
        )
        began = time.perf_counter()
        # twice: the first promotes, which moves the gate's baseline (@prod), so the
        # second runs the gate again against it; after that nothing changes
        for _ in range(2):
            subprocess.run(
                [*bastion, "pipeline", "run", "digits", "-f", yaml], check=True, capture_output=True
            )
        first = time.perf_counter() - began
        inproc: list[float] = []
        for _ in range(repeat):
            runner, log = _runner(root, "digits")
            t0 = time.perf_counter()
            record = runner.run()
            inproc.append(time.perf_counter() - t0)
            log.close()
            assert all(r.state == "cached" for r in record.stages.values()), record
        from bastion.pipeline import read_run

        cli: list[float] = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            subprocess.run(
                [*bastion, "pipeline", "run", "digits", "-f", yaml], check=True, capture_output=True
            )
            cli.append(time.perf_counter() - t0)
            again = read_run(root / ".bastion", "digits")
            assert again is not None
            assert all(r.state == "cached" for r in again.stages.values()), again
        starts: list[float] = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            subprocess.run([*bastion, "--version"], check=True, capture_output=True)
            starts.append(time.perf_counter() - t0)
        start = min(starts)
        stages = len(record.stages)
        print(
            f"example pipeline (examples/digits, {stages} stages; the first two runs took "
            f"{first:.1f} s), a re-run with nothing changed, best of {repeat}"
            f"\n  in process (PipelineRunner.run)        {min(inproc):8.3f} s   "
            f"goal <= 1 s: {'met' if min(inproc) <= 1 else 'NOT met'}"
            f"\n  bastion pipeline run digits (CLI)      {min(cli):8.3f} s   "
            f"goal <= 1 s: {'met' if min(cli) <= 1 else 'NOT met'}"
            f"  (of which the CLI's start-up, bastion --version: {start:.3f} s)"
            f"\n  ratio CLI / first two runs: {min(cli) / first:.3f}"
        )


def pipelines(stages: int, repeat: int) -> None:
    _chain(stages, repeat)
    _example(min(repeat, 3))


if __name__ == "__main__":
    sys.exit(main())
