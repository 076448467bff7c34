"""Every command block in README.md runs as written from a fresh clone (issue 12, item 2).

The README's fenced blocks are read in order. A shell block (``sh``, ``bash``,
``shell``) is run, line by line, with ``bash -o pipefail``, unless an HTML comment right
before it says ``<!-- readme-test: skip (why) -->``; ``<!-- readme-test: run in DIR -->``
runs it in DIR of the clone (default: the clone's root), after the blocks before it
there, and ``run in DIR (independent)`` beside them, as it needs none of them. A block
with no language is a failure: the test could not tell a command from output. A line's
expected exit code is 0, or N when its comment starts with ``# exit N``.

The clone is a copy of README.md and examples/ in a temporary directory, with the
repository's ``.venv`` linked in and its ``bin`` first on ``PATH``, as after ``make``.
Commands that run until stopped (``bastion serve``, ``bastion model serve``, ``bastion
vault guard``) start in the background; the next line runs once they print that they
are ready, and each gets SIGINT (Ctrl-C) when its block ends. The example's fixed ports
(8700 for the gateway, 8801 for its fallback) become free ports, in the copied manifest
and in the commands alike: the only change made to what the README says.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, REPO

README = REPO / "README.md"
SHELLS = {"sh", "bash", "shell"}
FENCE = re.compile(
    r"(?:<!--\s*readme-test:\s*(?P<directive>[^\n]*?)\s*-->\s*\n)?"
    r"^```(?P<lang>[^\n`]*)\n(?P<body>.*?)^```\s*$",
    re.MULTILINE | re.DOTALL,
)
# what runs until stopped, and the line it prints once it is ready for the next command
BACKGROUND = {
    re.compile(r"^bastion serve(?! status)\b"): re.compile(r"serving \S+ on http://"),
    re.compile(r"^bastion model serve\b"): re.compile(r"^PORT \d+", re.MULTILINE),
    re.compile(r"^bastion vault guard\b"): re.compile(r"guarding \d+ director"),
}
EXPECT = re.compile(r"#\s*exit (\d+)")


@dataclass
class Block:
    line: int
    lang: str
    directive: str
    body: str


def _blocks(text: str) -> list[Block]:
    return [
        Block(
            line=text.count("\n", 0, m.start("body")),
            lang=m.group("lang").strip(),
            directive=(m.group("directive") or "").strip(),
            body=m.group("body"),
        )
        for m in FENCE.finditer(text)
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Background:
    """A long-running command: its output collected by a thread, so readiness is polled."""

    def __init__(self, line: str, cwd: Path, env: dict[str, str], ready: re.Pattern[str]):
        self.line = line
        self.proc = subprocess.Popen(
            ["bash", "-c", line],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ctrl-C reaches the command and whatever it started
        )
        self.output = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 60
        while not ready.search(self.output):
            assert self.proc.poll() is None or ready.search(self.output), (
                f"{line!r} exited {self.proc.returncode} before it was ready:\n{self.output}"
            )
            assert time.monotonic() < deadline, f"{line!r} never got ready:\n{self.output}"
            time.sleep(0.05)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for chunk in self.proc.stdout:
            self.output += chunk

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _clone(root: Path) -> tuple[Path, dict[str, str]]:
    root.mkdir()
    shutil.copy2(README, root / "README.md")
    shutil.copytree(
        REPO / "examples",
        root / "examples",
        ignore=shutil.ignore_patterns(".bastion", "__pycache__", "map.*", "journal.json"),
    )
    (root / ".venv").symlink_to(REPO / ".venv")
    ports = {"8700": str(_free_port()), "8801": str(_free_port())}
    manifest = root / "examples" / EXAMPLE.name / "bastion.yaml"
    text = manifest.read_text()
    for fixed, free in ports.items():
        assert f"127.0.0.1:{fixed}" in text, f"the example no longer uses port {fixed}"
        text = text.replace(f"127.0.0.1:{fixed}", f"127.0.0.1:{free}")
    manifest.write_text(text)
    return root, ports


def test_every_shell_block_is_run_or_skipped_with_a_reason() -> None:
    blocks = _blocks(README.read_text())
    assert len(blocks) >= 8
    for block in blocks:
        assert block.lang, f"README.md:{block.line}: a block without a language (sh, text ...)"
        if block.lang in SHELLS:
            directive = block.directive
            assert (
                not directive
                or re.fullmatch(r"skip \(.{10,}\)", directive)
                or re.fullmatch(r"run in \S+( \(independent\))?", directive)
            ), f"README.md:{block.line}: unknown readme-test directive {directive!r}"
    runnable = [b for b in blocks if b.lang in SHELLS and not b.directive.startswith("skip")]
    assert len(runnable) >= 5


def _run_block(block: Block, where: Path, env: dict[str, str], ports: dict[str, str]) -> int:
    """Run one block's lines in order; return how many ran."""
    ran = 0
    running: list[Background] = []
    try:
        for offset, raw in enumerate(block.body.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            for fixed, free in ports.items():
                line = line.replace(fixed, free)
            at = f"README.md:{block.line + offset}: {raw.strip()}"
            ready = next((r for p, r in BACKGROUND.items() if p.search(line)), None)
            if ready is not None:
                running.append(Background(line, where, env, ready))
                ran += 1
                continue
            expect = EXPECT.search(line)
            done = subprocess.run(
                ["bash", "-o", "pipefail", "-c", line],
                cwd=where,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            want = int(expect.group(1)) if expect else 0
            assert done.returncode == want, (
                f"{at}\nexited {done.returncode} (want {want}):\n{done.stdout}{done.stderr}"
                + "".join(f"\n[{b.line}]\n{b.output}" for b in running)
            )
            assert "internal error" not in done.stderr, f"{at}\n{done.stderr}"
            ran += 1
    finally:
        for background in running:
            background.stop()
    return ran


def test_the_readmes_commands_run_as_written(tmp_path: Path) -> None:
    root, ports = _clone(tmp_path / "clone")
    (tmp_path / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "VIRTUAL_ENV")}
    env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["TMPDIR"] = str(tmp_path / "tmp")  # "$(mktemp -d)" lands in the test's own dir
    # Blocks that share a directory run in README order (each builds on the last); the
    # directories are independent, so each runs in a thread of its own, to keep this fast.
    chains: dict[tuple[Path, int], list[Block]] = {}
    for block in _blocks(README.read_text()):
        if block.lang in SHELLS and not block.directive.startswith("skip"):
            place = block.directive.removeprefix("run in ")
            alone = place.endswith(" (independent)")
            where = root / place.removesuffix(" (independent)").strip()
            chains.setdefault((where, block.line if alone else 0), []).append(block)
    ran: dict[tuple[Path, int], int] = {}
    failures: list[BaseException] = []

    def chain(key: tuple[Path, int], blocks: list[Block]) -> None:
        try:
            ran[key] = sum(_run_block(b, key[0], env, ports) for b in blocks)
        except BaseException as exc:  # reported below, on the test's own thread
            failures.append(exc)

    threads = [threading.Thread(target=chain, args=item) for item in chains.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    assert len(chains) >= 2
    assert sum(ran.values()) >= 20


@pytest.mark.parametrize(
    ("text", "langs"),
    [
        ("```sh\nls\n```\n\n```text\nout\n```\n", ["sh", "text"]),
        ("<!-- readme-test: skip (too slow to run) -->\n```sh\nmake x\n```\n", ["sh"]),
    ],
)
def test_the_block_reader(text: str, langs: list[str]) -> None:
    blocks = _blocks(text)
    assert [b.lang for b in blocks] == langs
    if "skip" in text:
        assert blocks[0].directive == "skip (too slow to run)"
        assert blocks[0].body == "make x\n"
