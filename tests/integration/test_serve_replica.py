"""The model replica server: its numpy forward pass matches PyTorch on the same weights,
its routes answer as documented, and no input (fuzzed with hypothesis) makes it 500."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.serve.replica import Mlp, load_dir, make_app
from tests.helpers import served, write_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("model"), 7)


@pytest.fixture(scope="module")
def replica(model_dir: Path) -> Iterator[str]:
    with served(make_app(load_dir(model_dir, "model/digits@1"))) as url:
        yield url


def _post(url: str, path: str, body: bytes) -> tuple[int, str]:
    async def go() -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as s,
            s.post(url + path, data=body, headers={"Content-Type": "application/json"}) as r,
        ):
            return r.status, await r.text()

    return asyncio.run(go())


def test_numpy_forward_matches_pytorch(model_dir: Path) -> None:
    torch = pytest.importorskip("torch")
    mlp = load_dir(model_dir)
    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    from safetensors.torch import load_file

    net.load_state_dict(load_file(str(model_dir / "model.safetensors")))
    x = np.random.default_rng(0).uniform(0, 16, size=(32, 64)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x) / 16).numpy()
    np.testing.assert_allclose(mlp.logits(x), expected, rtol=1e-4, atol=1e-4)


def test_routes(replica: str, model_dir: Path) -> None:
    mlp: Mlp = load_dir(model_dir)
    x = [[float(i % 17) for i in range(64)]]
    status, text = _post(replica, "/v1/predict", json.dumps({"inputs": x}).encode())
    assert status == 200
    assert json.loads(text)["predictions"] == [int(mlp.logits(np.asarray(x)).argmax())]
    status, text = _post(replica, "/v1/embeddings", json.dumps({"input": x}).encode())
    assert status == 200
    assert len(json.loads(text)["data"][0]["embedding"]) == 64
    content = ",".join(str(v) for v in x[0])
    status, text = _post(
        replica,
        "/v1/chat/completions",
        json.dumps({"model": "m", "messages": [{"role": "user", "content": content}]}).encode(),
    )
    assert status == 200
    assert json.loads(text)["choices"][0]["message"]["content"] == str(
        int(mlp.logits(np.asarray(x)).argmax())
    )
    status, _ = _post(replica, "/v1/predict", b"[" * 100_000)
    assert status == 400
    status, text = _post(replica, "/v1/predict", json.dumps({"inputs": [[1, 2]]}).encode())
    assert status == 400
    assert "64 numbers" in json.loads(text)["error"]["message"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=70) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=80,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(["/v1/predict", "/v1/embeddings", "/v1/chat/completions"]),
    field=st.sampled_from(["inputs", "input", "messages"]),
    value=json_values,
    raw=st.one_of(st.none(), st.binary(max_size=40)),
)
def test_no_input_makes_a_500(
    replica: str, path: str, field: str, value: object, raw: bytes | None
) -> None:
    body = raw if raw is not None else json.dumps({field: value}).encode()
    status, text = _post(replica, path, body)
    assert status in (200, 400), (status, text)
