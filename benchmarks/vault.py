"""Vault benchmark: Bastion against `cp -r` (the floor) and restic, on the same data.

    .venv/bin/python benchmarks/vault.py --size 1024      # ~1 GiB, like the issue's table

Dataset (like the issue's): ~40 % random binaries, ~40 % compressible text and arrays,
~20 % small files (4-40 KiB). Every tool reads the same source from the page cache.
Goals (issue 3): ingest into 2 replicas >= 0.8 of cp's throughput (cp to two dirs + sync);
scrub >= 1 GB/s on one core and >= 3x restic check --read-data; restore <= 1.2x cp back.
Scrub is measured twice: by seals (the default) and ``deep`` (every compressed object
decompressed); the goal figures use the default and both are printed.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from bastion.vault import Vault, make_key


def make_dataset(root: Path, size_mib: int, seed: int = 7) -> tuple[int, int]:
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    total = size_mib << 20
    budget = {"bin": total * 0.4, "text": total * 0.4, "small": total * 0.2}
    files = written = 0
    for kind, amount in budget.items():
        done = 0
        d = root / kind
        d.mkdir(parents=True, exist_ok=True)
        while done < amount:
            if kind == "bin":
                data = os.urandom(rng.randint(1 << 20, 8 << 20))
                name = f"{files:05d}.bin"
            elif kind == "text":
                if rng.random() < 0.5:
                    rows = rng.randint(20_000, 120_000)
                    arr = nrng.integers(0, 1000, size=(rows, 4))
                    data = "\n".join(",".join(map(str, r)) for r in arr[:, :].tolist()).encode()
                    name = f"{files:05d}.csv"
                else:
                    data = (
                        nrng.integers(0, 255, size=rng.randint(1 << 20, 4 << 20) // 8)
                        .astype(np.int64)
                        .tobytes()
                    )
                    name = f"{files:05d}.npy"
            else:
                data = os.urandom(rng.randint(4 << 10, 40 << 10) // 2) * 2
                name = f"{files:05d}.dat"
            (d / name).write_bytes(data)
            done += len(data)
            files += 1
            written += len(data)
    return files, written


def _drop_caches() -> bool:
    """Empty the page cache (root only), so the next read comes from the disk."""
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def timed(cmd: list[str], **kw: object) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1024, help="dataset size in MiB")
    parser.add_argument("--dir", type=Path, default=None, help="work dir (default: a temp dir)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bastion-bench-", dir=args.dir))
    try:
        run(work, args.size)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, size_mib: int) -> None:
    src = work / "src"
    files, nbytes = make_dataset(src, size_mib)
    subprocess.run(["sync"], check=True)
    print(f"dataset: {files} files, {nbytes / 2**20:.0f} MiB in {src}")
    mb = nbytes / 1e6
    res: dict[str, float] = {}

    # Ingest, alternated three times into fresh directories; medians are compared. On
    # this shared VM the same `cp -r` x2 + sync has taken 2.5 s and 8 s within the hour
    # (its time is page-cache memcpy, whose speed the host decides), so one pair of runs
    # says little. Each run starts with no dirty pages left by the one before.
    make_key(work / "keys" / "signing.key")
    tree = {p.relative_to(src).as_posix(): p for p in sorted(src.rglob("*")) if p.is_file()}
    cp_runs: list[float] = []
    put_runs: list[float] = []
    vault: Vault | None = None
    for attempt in range(3):
        subprocess.run(["sync"], check=True)
        start = time.perf_counter()
        subprocess.run(["cp", "-r", str(src), str(work / f"cp{attempt}a")], check=True)
        subprocess.run(["cp", "-r", str(src), str(work / f"cp{attempt}b")], check=True)
        subprocess.run(["sync"], check=True)
        cp_runs.append(time.perf_counter() - start)
        # Bastion: ingest into 2 fresh replicas (durable before the snapshot is visible)
        subprocess.run(["sync"], check=True)
        vault = Vault(
            [work / f"v{attempt}a", work / f"v{attempt}b"],
            key_path=work / "keys" / "signing.key",
            state_dir=work / f"st{attempt}",
        )
        start = time.perf_counter()
        vault.commit("dataset/bench", tree)
        put_runs.append(time.perf_counter() - start)
    assert vault is not None
    res["cp2"] = statistics.median(cp_runs)
    res["bastion_put"] = statistics.median(put_runs)
    print(
        "ingest runs (cp -r x2 + sync / bastion, ratio): "
        + ", ".join(
            f"{c:.2f}/{b:.2f} ({c / b:.2f})" for c, b in zip(cp_runs, put_runs, strict=True)
        )
    )
    replica = work / "v2a"
    stored = sum(p.stat().st_size for p in replica.rglob("*") if p.is_file())

    # Bastion scrub: every object on both replicas, verified, one thread hashing (reads
    # run ahead in I/O threads). The default checks raw objects by hashing them and
    # compressed ones by their seal (no decompression); deep decompresses and hashes
    # every compressed object's content. Measured cold (page cache dropped, as for a
    # vault nobody has read lately; needs root) and warm (read just before), and restic
    # check --read-data the same two ways below.
    cold = _drop_caches()
    report = vault.scrub(repair=False)
    res["bastion_scrub_cold" if cold else "bastion_scrub_first"] = report.seconds
    warm = vault.scrub(repair=False)
    res["bastion_scrub"] = warm.seconds
    scrub_gbps = warm.gb_per_s
    deep = vault.scrub(repair=False, deep=True)
    res["bastion_scrub_deep"] = deep.seconds

    # restore vs cp -r back, alternated three times; the medians are compared. Creating
    # ~10,000 files costs 50 us to 1 ms each on this shared disk depending on what else
    # runs, so one pair of runs can be 2x off either way. Each run starts with no dirty
    # pages left by the one before (an untimed sync), so neither pays for the other's
    # writeback.
    back_runs: list[float] = []
    restore_runs: list[float] = []
    for attempt in range(3):
        subprocess.run(["sync"], check=True)
        start = time.perf_counter()
        subprocess.run(
            ["cp", "-r", str(work / "cp0a"), str(work / f"cp-back{attempt}")], check=True
        )
        back_runs.append(time.perf_counter() - start)
        subprocess.run(["sync"], check=True)
        start = time.perf_counter()
        vault.restore("dataset/bench", work / f"restored{attempt}")
        restore_runs.append(time.perf_counter() - start)
    res["cp_back"] = statistics.median(back_runs)
    res["bastion_restore"] = statistics.median(restore_runs)
    print(
        "restore runs (bastion / cp -r back): "
        + ", ".join(f"{b:.2f}/{c:.2f}" for b, c in zip(restore_runs, back_runs, strict=True))
    )
    same = subprocess.run(["diff", "-rq", str(src), str(work / "restored2")], check=False)

    restic = shutil.which("restic")
    if restic:
        env = {**os.environ, "RESTIC_PASSWORD": "bench", "RESTIC_REPOSITORY": str(work / "rr")}
        subprocess.run([restic, "init"], env=env, check=True, stdout=subprocess.DEVNULL)
        res["restic_backup"] = timed([restic, "backup", "-q", "."], env=env, cwd=src)
        if cold:
            _drop_caches()
            res["restic_check_cold"] = timed([restic, "check", "--read-data"], env=env)
        res["restic_check"] = timed([restic, "check", "--read-data"], env=env)
        subprocess.run(["sync"], check=True)
        res["restic_restore"] = timed(
            [restic, "restore", "latest", "--target", str(work / "rr-out")], env=env
        )

    print(f"\n{'operation':42} {'seconds':>8} {'MB/s':>8}")
    for key, seconds in res.items():
        print(f"{key:42} {seconds:8.2f} {mb / seconds:8.0f}")
    print(f"\nstored per replica: {stored / 2**20:.0f} MiB of {nbytes / 2**20:.0f} MiB")
    print(f"restore bit-identical: {same.returncode == 0}")
    print("\nratios against the goals:")
    ingest = res["cp2"] / res["bastion_put"]
    print(
        f"  ingest, 2 replicas: {ingest:.2f} of cp -r x2 + sync throughput, medians of 3 "
        "(goal >= 0.8)"
    )
    print(
        f"  scrub (seals), warm: {scrub_gbps:.2f} GB/s verified over both replicas, one thread "
        f"hashing ({warm.bytes_read / 2**20:.0f} MiB read, {warm.decompressed} of "
        f"{warm.copies_checked} copies decompressed)   (goal >= 1 GB/s)"
    )
    print(f"  scrub (seals), {'cold' if cold else 'first run'}: {report.gb_per_s:.2f} GB/s")
    print(
        f"  scrub --deep: {deep.gb_per_s:.2f} GB/s ({deep.decompressed} of "
        f"{deep.copies_checked} copies decompressed)"
    )
    print(
        f"  restore: {res['bastion_restore'] / res['cp_back']:.2f}x cp -r back, medians of 3 "
        "(goal <= 1.2x)"
    )
    if restic:
        print(
            "  ingest vs restic backup (1 repo): "
            f"{res['restic_backup'] / res['bastion_put']:.2f}x faster"
        )
        restic_gbps = nbytes / 1e9 / res["restic_check"]
        print(
            f"  scrub vs restic check --read-data, warm: {scrub_gbps / restic_gbps:.2f}x, "
            f"--deep {deep.gb_per_s / restic_gbps:.2f}x "
            f"({restic_gbps:.2f} GB/s, one repository)   (goal >= 3x)"
        )
        if cold:
            restic_cold = nbytes / 1e9 / res["restic_check_cold"]
            print(
                f"  scrub vs restic check --read-data, cold: {report.gb_per_s / restic_cold:.2f}x "
                f"({report.gb_per_s:.2f} vs {restic_cold:.2f} GB/s; Bastion reads both replicas)"
            )
        print(
            "  restore vs restic restore: "
            f"{res['restic_restore'] / res['bastion_restore']:.2f}x faster"
        )
    else:
        print("  restic not installed (/usr/bin/restic): baseline skipped")


if __name__ == "__main__":
    main()
