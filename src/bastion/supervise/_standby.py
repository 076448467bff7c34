"""The warm standby launcher: a Python interpreter that has already imported the heavy
modules (torch and friends) and waits on stdin for the job it should become.

Owns: the launcher side of the hand-off. ``Child.standby(...)`` starts
``python -m bastion.supervise._standby --preload torch,...``; on a restart the supervisor
writes one JSON line ``{"argv": [...], "cwd": ..., "env": {...}}`` and the launcher runs
the script as ``__main__`` in this already-warm interpreter.

Why: on 2 cores, ``import torch`` plus the lazy ``torch._dynamo`` import that the first
optimizer triggers take 2-4 s, more than the whole 3 s recovery budget. A standby pays
that cost while the job is healthy, so a restart costs only restore + first step. The
same idea as a fork server (multiprocessing's forkserver, Android's zygote), without
fork: a forked copy of a process that imported torch is unsafe once threads exist.

Must never: run anything before the go line arrives, or linger when its supervisor is
gone (stdin at EOF: exit quietly).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import runpy
import sys

__all__ = ["main"]


def main(argv: list[str]) -> int:
    preload: list[str] = []
    if len(argv) >= 2 and argv[0] == "--preload":
        preload = [m for m in argv[1].split(",") if m]
    for module in preload:
        with contextlib.suppress(Exception):  # a missing optional module only costs time
            importlib.import_module(module)
    ready = os.environ.get("BASTION_STANDBY_READY_FILE")
    if ready:
        with contextlib.suppress(OSError), open(ready, "w"):  # noqa: PTH123
            pass  # tells the supervisor the imports are done
    line = sys.stdin.readline()
    if not line.strip():
        return 0  # the supervisor went away or discarded us
    request = json.loads(line)
    os.environ.clear()
    os.environ.update(request["env"])
    if request.get("cwd"):
        os.chdir(request["cwd"])
    sys.stdin.close()
    sys.stdin = open(os.devnull)  # noqa: SIM115, PTH123 - the job's stdin, as a cold start's
    args: list[str] = list(request["argv"])
    if args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = args
        sys.path.insert(0, os.path.dirname(os.path.abspath(args[0])))  # noqa: PTH100, PTH120
        runpy.run_path(args[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
