"""Users' own models on a replica: an ONNX graph exported from a real torch module and a
handler class, each committed to a real vault and served (by a real replica process, or
the aiohttp app on 127.0.0.1), called with the real ``openai`` client and over HTTP;
tampered bytes refused at load; non-finite inputs and wrong shapes answered 400 with
OpenAI error JSON; ``/v1/completions``; 404/405 as OpenAI errors; the replica's own
``/metrics``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from bastion.errors import IntegrityError, UsageError
from bastion.manifest import load
from bastion.serve.replica import load_dir, load_vault, make_app
from bastion.serve.runner import spawn_server
from bastion.starter import write_key
from bastion.vault import Vault
from tests.helpers import served, write_model

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

LABELS = ["cat", "dog", "fox"]


class Tiny(torch.nn.Module):  # type: ignore[misc]
    """A conv net on 1x4x4 images: the input has more than one dimension."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, kernel_size=3, padding=1)
        self.head = torch.nn.Linear(32, 3)

    def forward(self, x: Any) -> Any:
        return self.head(torch.relu(self.conv(x)).flatten(1))


def _vault(example: Path) -> tuple[Path, Vault]:
    manifest = load(example / "bastion.yaml")
    assert manifest.vault is not None
    for key in (manifest.vault.key, manifest.vault.admin_key):
        assert key is not None
        write_key(key)
    for replica in manifest.vault.replicas:
        Path(replica).mkdir(parents=True, exist_ok=True)
    return example / "bastion.yaml", Vault.from_manifest(manifest)


def _export(module: Any, path: Path) -> bytes:
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter's notice
        torch.onnx.export(
            module,
            (torch.zeros(2, 1, 4, 4),),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path.read_bytes()


@pytest.fixture
def world(example_copy: Path, tmp_path: Path, seed: int) -> tuple[Path, Vault, Any, bytes]:
    torch.manual_seed(seed)
    net = Tiny()
    onnx_bytes = _export(net, tmp_path / "tiny.onnx")
    manifest_path, vault = _vault(example_copy)
    vault.commit(
        "model/tiny", files={"model.onnx": onnx_bytes, "model.json": b'{"format": "onnx"}'}
    )
    vault.commit(
        "model/tiny-labelled",
        files={
            "model.onnx": onnx_bytes,
            "model.json": json.dumps({"format": "onnx", "labels": LABELS}).encode(),
        },
    )
    return manifest_path, vault, net, onnx_bytes


def _torch(net: Any, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out: np.ndarray = net(torch.from_numpy(x.astype(np.float32))).numpy()
    return out


def _post(url: str, path: str, body: bytes | str) -> tuple[int, str, dict[str, Any]]:
    async def go() -> tuple[int, str, dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as s,
            s.post(url + path, data=body, headers={"Content-Type": "application/json"}) as r,
        ):
            text = await r.text()
            return r.status, r.headers.get("Content-Type", ""), json.loads(text)

    return asyncio.run(go())


def _get(url: str, path: str, accept: str = "", timeout: float = 60) -> tuple[int, str, str]:
    async def go() -> tuple[int, str, str]:
        headers = {"Accept": accept} if accept else {}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s,
            s.get(url + path, headers=headers) as r,
        ):
            return r.status, r.headers.get("Content-Type", ""), await r.text()

    return asyncio.run(go())


@pytest.fixture
def replica_process(world: tuple[Path, Vault, Any, bytes]) -> Iterator[str]:
    manifest_path = world[0]
    proc, port = spawn_server(
        ["-m", "bastion.serve.replica", "model/tiny@latest", "--manifest", str(manifest_path)],
        timeout_s=120,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def test_onnx_from_torch_served_by_a_replica_process(
    world: tuple[Path, Vault, Any, bytes], replica_process: str, seed: int
) -> None:
    net = world[2]
    url = replica_process
    x = np.random.default_rng(seed).normal(size=(5, 1, 4, 4)).astype(np.float32)
    expected = _torch(net, x)

    status, _, body = _post(url, "/v1/predict", json.dumps({"inputs": x.tolist()}))
    assert status == 200, body
    np.testing.assert_allclose(np.asarray(body["predictions"]), expected, rtol=1e-4, atol=1e-5)
    # One input, flat (16 numbers for a 1x4x4 input), is one prediction.
    status, _, body = _post(url, "/v1/predict", json.dumps({"inputs": x[0].ravel().tolist()}))
    assert status == 200, body
    np.testing.assert_allclose(body["predictions"][0], expected[0], rtol=1e-4, atol=1e-5)

    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    texts = [",".join(repr(float(v)) for v in row.ravel()) for row in x]
    chat = client.chat.completions.create(
        model="model/tiny@latest", messages=[{"role": "user", "content": texts[1]}]
    )
    assert chat.choices[0].message.content is not None
    np.testing.assert_allclose(
        json.loads(chat.choices[0].message.content), expected[1], rtol=1e-4, atol=1e-5
    )
    stream = client.chat.completions.create(
        model="model/tiny@latest",
        messages=[{"role": "user", "content": json.dumps(x[2].tolist())}],
        stream=True,
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    np.testing.assert_allclose(json.loads(streamed), expected[2], rtol=1e-4, atol=1e-5)
    emb = client.embeddings.create(
        model="model/tiny@latest", input=texts[:3], encoding_format="float"
    )
    np.testing.assert_allclose([d.embedding for d in emb.data], expected[:3], rtol=1e-4, atol=1e-5)
    done = client.completions.create(model="model/tiny@latest", prompt=texts[3:])
    assert [c.index for c in done.choices] == [0, 1]
    np.testing.assert_allclose(
        [json.loads(c.text) for c in done.choices], expected[3:], rtol=1e-4, atol=1e-5
    )

    # The wrong shape is a 400 naming the graph's own input shape.
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="model/tiny@latest", messages=[{"role": "user", "content": "1,2,3"}]
        )
    message = str(caught.value)
    assert "1x4x4" in message
    assert "16 numbers" in message
    assert "'image'" in message
    assert "8x8" not in message


def test_onnx_labels_and_shape_errors_in_process(
    world: tuple[Path, Vault, Any, bytes], seed: int
) -> None:
    manifest_path, _, net, _ = world
    model = load_vault(manifest_path, "model/tiny-labelled@latest")
    assert model.format == "onnx"
    x = np.random.default_rng(seed + 1).normal(size=(8, 1, 4, 4)).astype(np.float32)
    want = [LABELS[int(i)] for i in _torch(net, x).argmax(axis=1)]
    with served(make_app(model)) as url:
        status, _, body = _post(url, "/v1/predict", json.dumps({"inputs": x.tolist()}))
        assert (status, body["predictions"]) == (200, want)
        status, ctype, body = _post(url, "/v1/predict", json.dumps({"inputs": [[[1, 2]]]}))
        assert status == 400
        assert ctype.startswith("application/json")
        assert "[batch, 1, 4, 4]" in body["error"]["message"]
        assert body["error"]["type"] == "invalid_request_error"


def _tamper_chunks(manifest_path: Path, vault: Vault, ref: str, path: str) -> int:
    """Flip a byte in each stored copy of ``path``'s chunks, on every replica."""
    replicas = load(manifest_path).vault.replicas  # type: ignore[union-attr]
    hit = 0
    for chunk in vault.snapshot(ref).files[path].chunks:
        for replica in replicas:
            obj = Path(replica) / "objects" / chunk.id[:2] / chunk.id
            if obj.exists():
                obj.chmod(0o600)
                data = bytearray(obj.read_bytes())
                data[len(data) // 2] ^= 0xFF
                obj.write_bytes(bytes(data))
                hit += 1
    return hit


def test_tampered_onnx_bytes_are_refused_at_load(
    world: tuple[Path, Vault, Any, bytes],
) -> None:
    manifest_path, vault, _, _ = world
    assert load_vault(manifest_path, "model/tiny@latest").format == "onnx"
    assert (
        _tamper_chunks(manifest_path, vault, "model/tiny@latest", "model.onnx") >= 2
    )  # every replica
    with pytest.raises(IntegrityError):
        load_vault(manifest_path, "model/tiny@latest")


HANDLER = '''
import json
from pathlib import Path


class Predictor:
    """Scores a text by its length times a weight stored beside this file."""

    def load(self, directory):
        self.weight = json.loads((Path(directory) / "weights.json").read_text())["w"]

    def predict(self, batch):
        out = []
        for item in batch:
            if not isinstance(item, str):
                raise ValueError("each input must be a text")
            out.append({"text": item, "score": len(item) * self.weight})
        return out

    def embed(self, batch):
        return [[float(len(t)), self.weight] for t in batch]
'''


def test_handler_model_from_the_vault(example_copy: Path, seed: int) -> None:
    manifest_path, vault = _vault(example_copy)
    weight = 1 + seed % 7
    vault.commit(
        "model/scorer",
        files={
            "predictor.py": HANDLER.encode(),
            "weights.json": json.dumps({"w": weight}).encode(),
            "model.json": b'{"format": "handler", "handler": "predictor:Predictor"}',
        },
    )
    model = load_vault(manifest_path, "model/scorer@latest")
    assert model.format == "handler"
    with served(make_app(model)) as url:
        status, _, body = _post(url, "/v1/predict", json.dumps({"inputs": ["ab", "abcd"]}))
        assert status == 200, body
        assert body["predictions"] == [
            {"text": "ab", "score": 2 * weight},
            {"text": "abcd", "score": 4 * weight},
        ]
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        chat = client.chat.completions.create(
            model="model/scorer", messages=[{"role": "user", "content": "hello"}]
        )
        assert json.loads(chat.choices[0].message.content or "") == {
            "text": "hello",
            "score": 5 * weight,
        }
        emb = client.embeddings.create(model="model/scorer", input="abc", encoding_format="float")
        assert emb.data[0].embedding == [3.0, float(weight)]
        # The handler's ValueError is the caller's fault: a 400 with its message.
        status, _, body = _post(url, "/v1/predict", json.dumps({"inputs": [1, 2]}))
        assert status == 400
        assert "each input must be a text" in body["error"]["message"]


def test_a_module_in_the_snapshot_wins_over_an_installed_one(tmp_path: Path) -> None:
    d = _handler_dir(tmp_path, "json:Predictor", {"json.py": HANDLER, "weights.json": '{"w": 2}'})
    model = load_dir(d, "model/h@1")
    assert model.predict(["abc"], "inputs") == [{"text": "abc", "score": 6}]
    assert json.loads("[1]") == [1]  # the real json module is untouched


def _handler_dir(tmp_path: Path, spec: str, files: dict[str, str]) -> Path:
    d = tmp_path / "h"
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text)
    (d / "model.json").write_text(json.dumps({"format": "handler", "handler": spec}))
    return d


@pytest.mark.parametrize(
    ("spec", "files", "said"),
    [
        ("../predictor:Predictor", {}, "module:Class"),
        ("predictor:Missing", {"predictor.py": HANDLER}, "no class 'Missing'"),
        ("nowhere_module_xyz:P", {}, "neither in the snapshot"),
    ],
)
def test_handler_refusals(tmp_path: Path, spec: str, files: dict[str, str], said: str) -> None:
    with pytest.raises(UsageError, match=said):
        load_dir(_handler_dir(tmp_path, spec, files), "model/h@1")


def test_handler_module_may_not_lead_outside_the_snapshot(tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text(HANDLER)
    d = _handler_dir(tmp_path, "sneaky:Predictor", {"weights.json": '{"w": 1}'})
    (d / "sneaky.py").symlink_to(outside)
    with pytest.raises(UsageError, match="outside the snapshot"):
        load_dir(d, "model/h@1")


def test_unknown_format_names_the_snapshot_and_the_known_formats(example_copy: Path) -> None:
    manifest_path, vault = _vault(example_copy)
    vault.commit("model/odd", files={"model.json": b'{"format": "pickle"}'})
    with pytest.raises(UsageError) as caught:
        load_vault(manifest_path, "model/odd@latest")
    message = str(caught.value)
    assert "model/odd@" in message
    assert "'pickle'" in message
    for known in ("mlp", "onnx", "handler"):
        assert known in message


# ------------------------------------------------------------------ the digits MLP


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    model = load_dir(write_model(tmp_path_factory.mktemp("digits"), 3), "model/digits@1")
    with served(make_app(model)) as url:
        yield url, model


_PIXELS = ["1"] * 63


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/predict", '{"inputs": [[' + ",".join([*_PIXELS, "NaN"]) + "]]}"),
        ("/v1/predict", '{"inputs": [[' + ",".join([*_PIXELS, "1e999"]) + "]]}"),
        ("/v1/predict", '{"inputs": [[' + ",".join([*_PIXELS, "-Infinity"]) + "]]}"),
        ("/v1/predict", '{"inputs": [[' + ",".join([*_PIXELS, "1e39"]) + "]]}"),  # > float32
        ("/v1/embeddings", '{"input": "' + ",".join([*_PIXELS, "nan"]) + '"}'),
        (
            "/v1/chat/completions",
            json.dumps({"messages": [{"role": "user", "content": ",".join([*_PIXELS, "inf"])}]}),
        ),
        (
            "/v1/chat/completions",
            json.dumps({"messages": [{"role": "user", "content": ",".join([*_PIXELS, "1e999"])}]}),
        ),
        ("/v1/completions", json.dumps({"prompt": ",".join([*_PIXELS, "-inf"])})),
    ],
)
def test_non_finite_inputs_are_a_400(digits: tuple[str, Any], path: str, body: str) -> None:
    status, ctype, answer = _post(digits[0], path, body)
    assert status == 400, answer
    assert ctype.startswith("application/json")
    assert answer["error"]["type"] == "invalid_request_error"
    assert answer["error"]["code"] == 400
    assert "finite" in answer["error"]["message"] or "out of range" in answer["error"]["message"]


def test_completions_on_the_replica(digits: tuple[str, Any]) -> None:
    url, model = digits
    x = np.arange(64, dtype=np.float32) % 17
    want = str(int(model.logits(x[None, :])[0].argmax()))
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    prompt = ",".join(str(int(v)) for v in x)
    done = client.completions.create(model="model/digits@1", prompt=prompt)
    assert done.object == "text_completion"
    assert [c.text for c in done.choices] == [want]
    assert done.choices[0].finish_reason == "stop"
    chunks = list(client.completions.create(model="model/digits@1", prompt=prompt, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == want
    assert chunks[-1].choices[0].finish_reason == "stop"
    with pytest.raises(openai.BadRequestError, match="64 numbers"):
        client.completions.create(model="model/digits@1", prompt="1,2")


def test_404_and_405_are_openai_errors(digits: tuple[str, Any]) -> None:
    url, _ = digits
    for path, status in (("/v1/nothing", 404), ("/v1/predict", 405)):
        got, ctype, text = _get(url, path)
        assert got == status
        assert ctype.startswith("application/json")
        error = json.loads(text)["error"]
        assert error["code"] == status
        assert path in error["message"]
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    assert client.models.retrieve("model/digits@1").id == "model/digits@1"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("model/other@1")


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_replica_metrics(tmp_path: Path) -> None:
    model = load_dir(write_model(tmp_path / "m", 5), "model/digits@2")
    row = json.dumps({"inputs": [[1.0] * 64]})
    with served(make_app(model)) as url, served(make_app(model)) as other:
        for _ in range(3):
            assert _post(url, "/v1/predict", row)[0] == 200
        assert _post(url, "/v1/predict", '{"inputs": [NaN]}')[0] == 400
        status, ctype, text = _get(url, "/metrics")
        assert status == 200
        assert ctype.startswith("text/plain; version=0.0.4")
        samples = _samples(text)
        ok = (("route", "/v1/predict"), ("status", "200"))
        bad = (("route", "/v1/predict"), ("status", "400"))
        assert samples[("bastion_replica_requests_total", ok)] == 3
        assert samples[("bastion_replica_requests_total", bad)] == 1
        assert samples[("bastion_replica_request_duration_seconds_count", ok)] == 3
        assert (
            samples[("bastion_replica_request_duration_seconds_bucket", (("le", "+Inf"), *ok))] == 3
        )
        assert (
            "bastion_replica_model_info",
            (("format", "mlp"), ("model", "model/digits@2")),
        ) in samples
        # Each replica keeps its own registry: the other one counted nothing.
        assert "bastion_replica_requests_total{" not in _get(other, "/metrics")[2]
        status, ctype, text = _get(url, "/metrics", accept="application/openmetrics-text")
        assert ctype.startswith("application/openmetrics-text")
        assert text.rstrip().endswith("# EOF")


def test_a_deeply_nested_input_is_a_400_not_a_500(digits: tuple[str, Any]) -> None:
    for depth in (3, 200, 900):
        body = '{"inputs": ' + "[" * depth + "1" + "]" * depth + "}"
        status, _, answer = _post(digits[0], "/v1/predict", body)
        assert status == 400, (depth, answer)
        assert "64 numbers" in answer["error"]["message"] or "JSON" in answer["error"]["message"]


@pytest.fixture(scope="module")
def onnx_replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    d = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    _export(Tiny(), d / "model.onnx")
    (d / "model.json").write_text(json.dumps({"format": "onnx", "labels": LABELS}))
    with served(make_app(load_dir(d, "model/tiny@1"))) as url:
        yield url


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=20) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=60,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(
        ["/v1/predict", "/v1/embeddings", "/v1/chat/completions", "/v1/completions"]
    ),
    field=st.sampled_from(["inputs", "input", "messages", "prompt"]),
    value=json_values,
)
def test_no_input_makes_an_onnx_replica_500(
    onnx_replica: str, path: str, field: str, value: object
) -> None:
    status, _, answer = _post(onnx_replica, path, json.dumps({field: value}))
    assert status in (200, 400), answer


def test_a_replica_process_refuses_an_unknown_format_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text('{"format": "pickle"}')
    done = subprocess.run(
        [sys.executable, "-m", "bastion.serve.replica", "model/odd@1", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "model/odd@1" in done.stderr
    assert "mlp, onnx, handler" in done.stderr


SLOW_HANDLER = """
import threading


class Slow:
    def load(self, directory):
        self.entered = threading.Event()
        self.gate = threading.Event()

    def predict(self, batch):
        self.entered.set()
        self.gate.wait(120)
        return ["done" for _ in batch]
"""


def test_a_busy_handler_does_not_stall_health(tmp_path: Path) -> None:
    model = load_dir(_handler_dir(tmp_path, "slow:Slow", {"slow.py": SLOW_HANDLER}), "model/s@1")
    handler = model.handler  # type: ignore[attr-defined]
    answers: list[tuple[int, str, dict[str, Any]]] = []
    with served(make_app(model)) as url:
        worker = threading.Thread(
            target=lambda: answers.append(_post(url, "/v1/predict", '{"inputs": ["x"]}'))
        )
        worker.start()
        try:
            assert handler.entered.wait(60), "the handler was never called"
            # predict is inside the handler now; the replica still answers its probe.
            # (The deadline is far above a probe's answer time and far below the handler's
            # wait: a replica whose loop is blocked by predict misses it.)
            status, _, text = _get(url, "/health", timeout=30)
            assert status == 200
            assert json.loads(text)["ok"] is True
        finally:
            handler.gate.set()
            worker.join(60)
    assert [(a[0], a[2]["predictions"]) for a in answers] == [(200, ["done"])]


BROKEN_HANDLER = """
class Broken:
    def load(self, directory):
        pass

    def predict(self, batch):
        if batch == ["boom"]:
            raise RuntimeError("the GPU fell off")
        if batch == ["short"]:
            return []
        return [float("nan")]
"""


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("boom", "the GPU fell off"),
        ("short", "one answer per input"),
        ("nan", "JSON cannot carry"),
    ],
)
def test_a_failing_handler_is_a_500_naming_it(tmp_path: Path, given: str, said: str) -> None:
    d = _handler_dir(tmp_path, "broken:Broken", {"broken.py": BROKEN_HANDLER})
    with served(make_app(load_dir(d, "model/b@1"))) as url:
        status, ctype, answer = _post(url, "/v1/predict", json.dumps({"inputs": [given]}))
    assert status == 500
    assert ctype.startswith("application/json")
    assert "broken:Broken.predict" in answer["error"]["message"]
    assert said in answer["error"]["message"]
