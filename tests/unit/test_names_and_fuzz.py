"""Artifact names and the manifest parser under hostile input (hypothesis)."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.errors import InvalidNameError, ManifestError
from bastion.manifest import loads
from bastion.names import parse_name, parse_ref


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "../etc/passwd",
        "/etc/passwd",
        "model/../x",
        "model/a\x00b",
        "model\\x",
        "model",
        "weights/x",
        "model/.hidden/..",
        "model/a/./b",
        "C:/x",
        "model/a b",
        "dataset/x\n",  # Python's $ allowed one trailing newline
        "dataset/x\n/y",
    ],
)
def test_bad_names_rejected(bad: str) -> None:
    with pytest.raises(InvalidNameError):
        parse_name(bad)


def test_refs() -> None:
    assert parse_ref("model/digits@7").rev == 7
    assert parse_ref("model/digits@prod").rev == "prod"
    assert parse_ref("ckpt/train-digits/step-000400").rev is None
    assert str(parse_ref("dataset/digits@latest")) == "dataset/digits@latest"
    assert parse_ref("dataset/digits").kind == "dataset"
    with pytest.raises(InvalidNameError, match="revision"):
        parse_ref("model/digits@../x")
    with pytest.raises(InvalidNameError, match="revision"):
        parse_ref("model/digits@prod\n")


@given(st.text(max_size=60))
def test_accepted_names_never_escape(text: str) -> None:
    try:
        name = parse_name(text)
    except InvalidNameError:
        return
    path = PurePosixPath("/root") / name
    assert not PurePosixPath(name).is_absolute()
    assert ".." not in PurePosixPath(name).parts
    assert "\x00" not in name
    assert str(path).startswith("/root/")


yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12)
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_loader_never_crashes_on_text(text: str) -> None:
    try:
        loads(text)
    except ManifestError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.line >= 1
            assert problem.column >= 1


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "version",
                "system",
                "components",
                "jobs",
                "services",
                "slos",
                "vault",
                "recovery",
                "segments",
                "state_dir",
                "bogus",
            ]
        ),
        yaml_values,
        max_size=8,
    )
)
def test_loader_never_crashes_on_structures(doc: dict[str, object]) -> None:
    import io

    from ruamel.yaml import YAML

    buf = io.StringIO()
    YAML(typ="safe").dump(doc, buf)
    try:
        loads(buf.getvalue())
    except ManifestError as exc:
        assert all(p.line >= 1 for p in exc.problems)
