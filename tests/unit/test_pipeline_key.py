"""The cache key (hypothesis): any change to input snapshot ids, code bytes, command,
config, environment variables or the environment lock gives another key (0 false
hits), the same parts give the same key, and anything without a canonical form (a
non-finite or non-JSON config value, a code path that is not a regular file) refuses to
make a key at all (the stage then runs uncached)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.pipeline import Unhashable, canonical, stage_key
from bastion.pipeline._key import code_digest, environment_lock

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
ids = st.text("0123456789abcdef", min_size=8, max_size=8)
parts = st.fixed_dictionaries(
    {
        "uses": st.sampled_from(["command", "gate"]),
        "command": st.lists(st.text(max_size=6), min_size=1, max_size=3),
        "inputs": st.dictionaries(st.sampled_from("abc"), st.none() | ids, max_size=3),
        "code": st.dictionaries(st.sampled_from(["x.py", "y.py"]), ids, max_size=2),
        "config": st.dictionaries(st.text(max_size=4), json_value, max_size=3),
        "env": st.dictionaries(st.sampled_from("XYZ"), st.text(max_size=4), max_size=2),
        "environment": st.dictionaries(
            st.sampled_from(["python", "lock"]), st.text(max_size=4), max_size=2
        ),
        "output": st.sampled_from(["dataset/a", "model/m"]),
    }
)


def _same(a: Any, b: Any) -> bool:
    """Equal as the key must see them: the same JSON (1 and 1.0 and True differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


@settings(max_examples=400, deadline=None)
@given(parts, parts)
def test_different_parts_never_share_a_key(a: dict[str, Any], b: dict[str, Any]) -> None:
    same = all(_same(a[k], b[k]) for k in a)
    assert (stage_key(**a) == stage_key(**b)) == same


@settings(max_examples=300, deadline=None)
@given(parts, st.data())
def test_one_mutation_in_any_part_changes_the_key(a: dict[str, Any], data: st.DataObject) -> None:
    field = data.draw(st.sampled_from(sorted(a)))
    b = dict(a)
    b[field] = data.draw(parts)[field]
    if _same(a[field], b[field]):
        return
    assert stage_key(**a) != stage_key(**b), field


@pytest.mark.parametrize(
    "bad", [math.nan, math.inf, -math.inf, {1: "x"}, b"bytes", (1, 2), {1, 2}, object()]
)
def test_a_value_with_no_canonical_form_refuses_a_key(bad: Any) -> None:
    with pytest.raises(Unhashable):
        canonical({"config": {"x": [bad]}})


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=64), st.binary(max_size=64))
def test_code_bytes_decide_the_code_digest(tmp_path: Path, one: bytes, two: bytes) -> None:
    path = tmp_path / "stage.py"
    path.write_bytes(one)
    first = code_digest([path], tmp_path)
    path.write_bytes(two)
    assert (code_digest([path], tmp_path) == first) == (one == two)


def test_a_code_path_that_is_not_a_regular_file_refuses_a_key(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(Unhashable, match="not a regular file"):
        code_digest([fifo], tmp_path)
    with pytest.raises(Unhashable, match="No such file"):
        code_digest([tmp_path / "missing.py"], tmp_path)
    nested = tmp_path / "pkg"
    nested.mkdir()
    (nested / "ok.py").write_text("x = 1\n")
    os.mkfifo(nested / "sock")
    with pytest.raises(Unhashable):
        code_digest([nested], tmp_path)


def test_the_environment_lock_names_every_distribution_and_a_lock_files_bytes(
    tmp_path: Path,
) -> None:
    env = environment_lock()
    assert any(d.startswith("numpy==") for d in env["distributions"])
    lock = tmp_path / "requirements.lock"
    lock.write_text("numpy==1\n")
    first = environment_lock(lock)
    lock.write_text("numpy==2\n")
    assert environment_lock(lock) != first
