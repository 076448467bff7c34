"""S3 ingest: the vault's 1 GiB data set into a vault whose replica is a local S3 server
(SeaweedFS on loopback), against boto3's own ``upload_file`` of the same files to the
same server (the floor), in the same run, alternated. Goal (issue 18): >= 0.8x.

    .venv/bin/python benchmarks/scale_s3.py              # 1 GiB, 2 runs of each
    .venv/bin/python benchmarks/scale_s3.py --size 256   # quicker

The floor uploads the files through 8 threads of ``upload_file`` (boto3's transfer
manager: multipart above 8 MiB, CRC32 checksums by default), which is how one would
copy a tree to S3 well with boto3 alone. The vault does more per byte: content-defined
chunking, BLAKE3 of every chunk, zstd where it pays, a BLAKE3 of every stored object
for its metadata, a signed snapshot document, and fewer bytes to send where zstd
worked. restic (``restic backup`` to an ``s3:`` repository on the same server) is
printed beside them when a ``restic`` binary is on PATH; it is said when it is not.

``main()`` is what ``benchmarks/scale.py`` calls; ``run()`` returns the figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.vault import make_dataset  # noqa: E402 (the 1 GiB data set, shared)
from tests import s3_servers  # noqa: E402 (starts SeaweedFS on free loopback ports)

from bastion.vault import Vault, make_key  # noqa: E402


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _floor(server: s3_servers.S3Server, bucket: str, tree: dict[str, Path]) -> float:
    from boto3.s3.transfer import TransferConfig

    client = server.client()
    client.create_bucket(Bucket=bucket)
    config = TransferConfig(max_concurrency=8)
    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda item: client.upload_file(str(item[1]), bucket, item[0], Config=config),
                tree.items(),
            )
        )
    return time.perf_counter() - start


def _vault(server: s3_servers.S3Server, bucket: str, tree: dict[str, Path], work: Path) -> float:
    vault = Vault(
        [server.url(bucket)],
        key_path=work / "keys" / "signing.key",
        state_dir=work / f"state-{bucket}",
    )
    start = time.perf_counter()
    vault.commit("dataset/bench", tree)
    took = time.perf_counter() - start
    stats = vault.statistics().replicas.replicas[0].store
    print(f"  vault run {bucket}: {stats.puts} objects, {stats.put_bytes / 2**20:.0f} MiB sent")
    return took


def _restic(server: s3_servers.S3Server, src: Path, work: Path) -> float | None:
    restic = shutil.which("restic")
    if restic is None:
        return None
    env = {
        **os.environ,
        **s3_servers.aws_env(),
        "RESTIC_PASSWORD": "bench",
        "RESTIC_REPOSITORY": f"s3:{server.endpoint}/restic-bench",
        "RESTIC_CACHE_DIR": str(work / "restic-cache"),
    }
    server.client().create_bucket(Bucket="restic-bench")
    subprocess.run([restic, "init"], check=True, env=env, stdout=subprocess.DEVNULL)
    start = time.perf_counter()
    subprocess.run(
        [restic, "backup", "--quiet", str(src)], check=True, env=env, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def run(size_mib: int = 1024, runs: int = 2, work: Path | None = None) -> dict[str, Any]:
    """Build the data set, start SeaweedFS, time both ingests ``runs`` times; the figures."""
    os.environ.update(s3_servers.aws_env())
    work = Path(tempfile.mkdtemp(prefix="bastion-s3-bench-", dir=work))
    server = None
    try:
        src = work / "src"
        files, nbytes = make_dataset(src, size_mib)
        tree = {p.relative_to(src).as_posix(): p for p in sorted(src.rglob("*")) if p.is_file()}
        make_key(work / "keys" / "signing.key")
        print(f"dataset: {files} files, {nbytes / 2**20:.0f} MiB; load {_load()}")
        why = s3_servers.available("weed")
        if why is not None:
            raise SystemExit(f"scale_s3: {why}")
        server = s3_servers.start("weed")
        floor_runs: list[float] = []
        vault_runs: list[float] = []
        for attempt in range(runs):
            floor_runs.append(_floor(server, f"floor-{attempt}", tree))
            vault_runs.append(_vault(server, f"vault-{attempt}", tree, work))
            print(
                f"  run {attempt}: upload_file {floor_runs[-1]:.2f} s, vault "
                f"{vault_runs[-1]:.2f} s; load {_load()}"
            )
        floor, vault = statistics.median(floor_runs), statistics.median(vault_runs)
        mb = nbytes / 1e6
        ratio = floor / vault
        out: dict[str, Any] = {
            "bytes": nbytes,
            "files": files,
            "floor_s": floor,
            "vault_s": vault,
            "floor_mb_s": mb / floor,
            "vault_mb_s": mb / vault,
            "ratio": ratio,
            "load": _load(),
        }
        print(
            f"S3 ingest (SeaweedFS on loopback): boto3 upload_file {mb / floor:.0f} MB/s, "
            f"vault {mb / vault:.0f} MB/s: {ratio:.2f}x of the floor (goal >= 0.8x) "
            f"{'ok' if ratio >= 0.8 else 'BELOW GOAL'}; load {_load()}"
        )
        restic = _restic(server, src, work)
        if restic is None:
            print("restic: not installed here (no restic on PATH), so not measured")
        else:
            out["restic_s"] = restic
            print(
                f"restic backup to the same server: {mb / restic:.0f} MB/s "
                f"({floor / restic:.2f}x of the floor)"
            )
        return out
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="data set size in MiB")
    parser.add_argument("--runs", type=int, default=2, help="runs of each, alternated")
    parser.add_argument("--dir", type=Path, default=None, help="work dir (default: a temp dir)")
    args = parser.parse_args(argv)
    return run(args.size, args.runs, args.dir)


if __name__ == "__main__":
    main()
