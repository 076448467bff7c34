"""Shared test fixtures.

``seed``: every fault test takes its randomness from this fixture, which prints the seed
so a failure can be replayed with ``BASTION_SEED=<n> pytest ...``.
"""

from __future__ import annotations

import os
import random
import secrets
from pathlib import Path

import pytest

from tests.pg_server import log, pg_server  # noqa: F401 - fixtures for every test
from tests.s3_servers import (  # noqa: F401 - one S3 server per kind per session
    moto_server_fixture,
    moto_server_process_fixture,
    weed_server_fixture,
    weed_server_process_fixture,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "digits"


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    value = int(os.environ.get("BASTION_SEED") or secrets.randbelow(2**32))
    print(f"\n[{request.node.nodeid}] random seed: {value} (replay: BASTION_SEED={value})")
    return value


@pytest.fixture
def rng(seed: int) -> random.Random:
    return random.Random(seed)


@pytest.fixture
def example_copy(tmp_path: Path) -> Path:
    """A fresh copy of examples/digits, so a test may damage it freely."""
    import shutil

    target = tmp_path / "digits"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".bastion", "__pycache__"))
    return target
