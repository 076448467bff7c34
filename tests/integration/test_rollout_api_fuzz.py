"""Hypothesis fuzz of the gateway's rollout routes (``/bastion/rollout``): any body a
client can send gets a clear 4xx with an OpenAI error object (or, for one that names a
real snapshot, the reason it is not rolled out), never a 500, and never a rollout
started by accident."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.manifest import load
from bastion.rollout import RolloutController
from bastion.serve import Gateway, GatewayThread
from tests.conftest import EXAMPLE
from tests.helpers import commit_model


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GatewayThread, RolloutController]]:
    example = tmp_path_factory.mktemp("fuzz") / "digits"
    shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns(".bastion", "__pycache__"))
    commit_model(example, 1)
    manifest = load(example / "bastion.yaml")
    service = manifest.services["digits"]
    gw = Gateway("digits", service.policy)
    # no stable replica set: the candidate is judged against the backend's own ref
    controller = RolloutController(gw, manifest, {})
    with GatewayThread(gw) as thread:
        yield thread, controller


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
refs = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "model/digits@1",  # the snapshot served already: nothing to roll out
            "model/digits@latest",
            "model/digits@99",
            "dataset/digits@1",
            "model/other@1",
            "model/../x@1",
            "model/digits@",
        ]
    ),
)
starts = st.fixed_dictionaries(
    {"candidate": refs},
    optional={
        "strategy": st.one_of(
            st.sampled_from(["canary", "shadow", "blue-green"]), st.text(max_size=10), json_values
        ),
        "backend": st.one_of(st.sampled_from(["local", "vendor-b", "nope"]), json_values),
    },
)


async def _send(url: str, path: str, body: bytes) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.post(url + path, data=body) as r:
        return r.status, await r.text()


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(
        ["/bastion/rollout", "/bastion/rollout/promote", "/bastion/rollout/abort"]
    ),
    body=st.one_of(
        starts.map(lambda v: json.dumps(v).encode()),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=64),
    ),
)
def test_no_rollout_request_makes_a_500_or_a_rollout(
    gateway: tuple[GatewayThread, RolloutController], path: str, body: bytes
) -> None:
    thread, controller = gateway
    status, text = thread.call(_send(thread.url, path, body))
    assert 400 <= status < 500, (status, text)
    assert json.loads(text)["error"]["message"], text
    assert controller.record is None  # nothing was started


def test_get_says_there_is_no_rollout(gateway: tuple[GatewayThread, RolloutController]) -> None:
    thread, _ = gateway

    async def get() -> tuple[int, str]:
        async with aiohttp.ClientSession() as s, s.get(thread.url + "/bastion/rollout") as r:
            return r.status, await r.text()

    status, text = thread.call(get())
    assert status == 200
    assert json.loads(text) == {"rollout": None}


def test_the_served_snapshot_is_refused_by_name(
    gateway: tuple[GatewayThread, RolloutController],
) -> None:
    thread, _ = gateway
    status, text = thread.call(
        _send(thread.url, "/bastion/rollout", json.dumps({"candidate": "model/digits@1"}).encode())
    )
    assert status == 400
    assert "nothing to roll out" in json.loads(text)["error"]["message"]
    status, text = thread.call(_send(thread.url, "/bastion/rollout/abort", b"{}"))
    assert status == 409
    assert "no rollout in progress" in json.loads(text)["error"]["message"]
