"""Reconstitution benchmark: the example's model from total loss to serving, by restore
and by rebuild, beside the original training and a plain cold start, in one run.

    python benchmarks/reconstitute.py              # the example's 300 training steps
    python benchmarks/reconstitute.py --steps 100 --rounds 1

The model is trained once by the example pipeline's real PyTorch stage (ingest -> train).
Each round then loses it and times ``bastion model reconstitute model/digits@latest``
as a user runs it (the CLI's wall clock, from the command's start to its exit, which is
after a real request through the gateway was answered by the model's own replica):

  restore   the gateway and its replica killed, vault replica ``a`` deleted (rm -rf):
            the model comes back from replica ``b``                         (goal <= 5 s)
  rebuild   the same, and every copy of the model's chunks deleted from ``b`` too:
            its lineage is replayed and proven hash-identical
                                           (goal <= 2 x the original training time)

Baselines measured in the same run, in every round (so load on a shared machine hits
them and Bastion alike): the original training (the pipeline's train stage command,
process start to exit, under the same stage contract) and a cold start (``bastion
serve`` with nothing lost, to the first answer from its replica), the floor either
path pays.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from bastion.manifest import load  # noqa: E402
from bastion.pipeline import read_run  # noqa: E402
from bastion.vault import Vault  # noqa: E402

EXAMPLE = REPO / "examples" / "digits"
BASTION = [sys.executable, "-m", "bastion"]
MODEL = "model/digits@latest"
MANIFEST = """\
version: 1
system: digits
state_dir: .bastion
vault:
  replicas: [.bastion/vault/a, .bastion/vault/b]
  key: .bastion/keys/signing.key
  admin_key: .bastion/keys/admin.key
segments: [prod]
services:
  digits:
    segment: prod
    listen: 127.0.0.1:{port}
    backends:
      - name: local
        model: model/digits@latest
        replicas: {{min: 1, max: 1}}
pipelines:
  digits:
    sources: [dataset/digits@latest]
    stages:
      ingest:
        command: [python, pipeline/split.py, train]
        inputs: {{raw: dataset/digits@latest}}
        output: dataset/digits-train
      train:
        command: [python, pipeline/train_stage.py, --steps, "{steps}"]
        code: [pipeline/train_stage.py, train.py]
        inputs: {{data: dataset/digits-train}}
        output: model/digits
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bastion(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*BASTION, *args, "-f", str(root / "bastion.yaml")],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if done.returncode != 0:
        raise SystemExit(f"bastion {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done


def answers(url: str) -> bool:
    request = urllib.request.Request(
        f"{url}/v1/predict",
        data=json.dumps({"inputs": [0.0] * 64}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status == 200 and resp.headers.get("x-bastion-backend", "").startswith(
                "local-"
            )
    except OSError:
        return False


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return
        if state == "Z":
            return
        time.sleep(0.01)


def cold_start(root: Path, url: str) -> float:
    """``bastion serve`` with nothing lost, to the first answer from its replica."""
    began = time.monotonic()
    proc = subprocess.Popen(
        [*BASTION, "serve", "digits", "-f", str(root / "bastion.yaml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while not answers(url):
            if proc.poll() is not None or time.monotonic() - began > 120:
                raise SystemExit("bastion serve did not answer")
            time.sleep(0.01)
        return time.monotonic() - began
    finally:
        kill_group(proc.pid)
        proc.wait()


def lose(root: Path, *, chunks_too: bool) -> None:
    """Total loss: replica ``a`` deleted; with ``chunks_too`` every copy of the model's
    chunks on ``b`` as well (nothing left to restore from)."""
    manifest = load(root / "bastion.yaml")
    chunks = Vault.from_manifest(manifest).snapshot(MODEL).chunk_ids()
    a, b = (root / ".bastion" / "vault" / x for x in "ab")
    for path in a.rglob("*"):
        if path.is_dir():
            path.chmod(0o700)
    shutil.rmtree(a)
    if chunks_too:
        for chunk in chunks:
            path = b / "objects" / chunk[:2] / chunk
            path.parent.chmod(0o700)
            path.unlink()


def train_once(root: Path, stage: Path, steps: int) -> float:
    """The original training as the pipeline's train stage runs it (the same command,
    the same stage contract, the inputs already restored): process start to exit."""
    out = stage / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    env = {
        **os.environ,
        "BASTION_STAGE_INPUTS": str(stage / "in"),
        "BASTION_STAGE_OUTPUT": str(out),
        "BASTION_STAGE_CONFIG": str(stage / "config.json"),
    }
    began = time.monotonic()
    subprocess.run(
        [sys.executable, "pipeline/train_stage.py", "--steps", str(steps)],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
    )
    return time.monotonic() - began


def reconstitute(root: Path) -> tuple[float, dict[str, object]]:
    began = time.monotonic()
    done = bastion("model", "reconstitute", MODEL, "--json", root=root)
    wall = time.monotonic() - began
    result = json.loads(done.stdout)
    for served in result["serving"]:
        kill_group(int(served["started_pid"]))
    return wall, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300, help="training steps (example: 300)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bastion-reconstitute-") as tmp:
        root = Path(tmp) / "digits"
        shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".bastion", "__pycache__"))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        (root / "bastion.yaml").write_text(MANIFEST.format(port=port, steps=args.steps))
        subprocess.run([*BASTION, "init", str(root)], capture_output=True, check=True)
        bastion("vault", "put", "dataset/digits", str(root / "dataset"), root=root)
        bastion("pipeline", "run", "digits", root=root)
        record = read_run(root / ".bastion", "digits")
        assert record is not None
        first = float(record.stages["train"].seconds or 0.0)
        print(f"original training ({args.steps} steps, the pipeline's train stage): {first:.2f} s")
        stage = Path(tmp) / "stage"
        Vault.from_manifest(load(root / "bastion.yaml")).restore(
            "dataset/digits-train@latest", stage / "in" / "data"
        )
        (stage / "config.json").write_text("{}")

        colds, restores, rebuilds, replays, trainings = [], [], [], [], []
        for round_ in range(args.rounds):
            # the baseline again in every round, so load on the machine hits both alike
            trainings.append(train_once(root, stage, args.steps))
            print(f"round {round_ + 1}: training {trainings[-1]:.2f} s")
            colds.append(cold_start(root, url))
            lose(root, chunks_too=False)
            wall, result = reconstitute(root)
            assert result["path"] == "restore", result
            restores.append(wall)
            print(
                f"round {round_ + 1}: cold start {colds[-1]:.2f} s; restore {wall:.2f} s "
                f"(inside: {result['seconds']:.2f} s, phases {result['phases']})"
            )
            lose(root, chunks_too=True)
            wall, result = reconstitute(root)
            assert result["path"] == "rebuild", result
            rebuilds.append(wall)
            replays.append(float(result["replay_seconds"]))  # type: ignore[arg-type]
            print(
                f"round {round_ + 1}: rebuild {wall:.2f} s (replay {replays[-1]:.2f} s, "
                f"inside: {result['seconds']:.2f} s, phases {result['phases']})"
            )

        trained = statistics.median(trainings)
        cold, restore = statistics.median(colds), statistics.median(restores)
        rebuild, replay = statistics.median(rebuilds), statistics.median(replays)
        print("\n== medians ==")
        print(f"original training      {trained:.2f} s")
        print(f"cold start (no loss)   {cold:.2f} s")
        print(f"restore to serving     {restore:.2f} s")
        print(f"rebuild to serving     {rebuild:.2f} s (replay {replay:.2f} s)")
        print("\n== ratios (goal) ==")
        print(f"restore to serving      {restore:.2f} s               (<= 5 s)")
        print(f"restore / cold start    {restore / cold:.2f}")
        print(f"rebuild / training      {rebuild / trained:.2f}                 (<= 2.0)")
        print(f"replay / training       {replay / trained:.2f}")


if __name__ == "__main__":
    main()
