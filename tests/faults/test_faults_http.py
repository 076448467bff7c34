"""The fault-injecting upstream, driven by the real openai client over a real socket."""

from __future__ import annotations

import json
import urllib.request

import openai
import pytest

from bastion.drill.faults import FaultyUpstream, HttpFault, HttpFaultInjection


def _client(up: FaultyUpstream) -> openai.OpenAI:
    return openai.OpenAI(base_url=up.base_url, api_key="drill-key", max_retries=0, timeout=10)


def _ask(client: openai.OpenAI) -> str:
    reply = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello there"}]
    )
    return reply.choices[0].message.content or ""


def test_healthy_plain_and_stream(seed: int) -> None:
    with FaultyUpstream(name="vendor-b", seed=seed) as up:
        client = _client(up)
        assert "hello there" in _ask(client)
        stream = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "one two three"}], stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
        assert "one two three" in text
        assert up.statistics().ok == 2


@pytest.mark.parametrize("status", [500, 503, 400])
def test_chosen_status(status: int, seed: int) -> None:
    with FaultyUpstream(seed=seed) as up:
        up.set_fault(status=status)
        with pytest.raises(openai.APIStatusError) as err:
            _ask(_client(up))
        assert err.value.status_code == status
        up.clear_fault()
        assert _ask(_client(up))


def test_429_with_and_without_retry_after(seed: int) -> None:
    with FaultyUpstream(seed=seed) as up:
        up.set_fault(status=429, retry_after=7)
        with pytest.raises(openai.RateLimitError) as err:
            _ask(_client(up))
        assert err.value.response.headers["retry-after"] == "7"
        up.set_fault(status=429)
        with pytest.raises(openai.RateLimitError) as err:
            _ask(_client(up))
        assert "retry-after" not in err.value.response.headers


def test_slow_first_byte_trips_a_client_timeout(seed: int) -> None:
    with FaultyUpstream(seed=seed) as up:
        up.set_fault(first_byte_delay_s=3.0)
        client = openai.OpenAI(base_url=up.base_url, api_key="k", max_retries=0, timeout=0.5)
        with pytest.raises(openai.APITimeoutError):
            _ask(client)


def test_stream_cut_midway(seed: int) -> None:
    with FaultyUpstream(seed=seed, reply="a b c d e f g h") as up:
        up.set_fault(cut_stream_after=3)
        stream = _client(up).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], stream=True
        )
        got: list[str] = []

        def drain() -> None:
            got.extend(chunk.choices[0].delta.content or "" for chunk in stream)

        with pytest.raises(openai.APIConnectionError):
            drain()
        assert "".join(got) == "a b c "
        assert up.statistics().by_fault == {"stream_cut": 1}


def test_malformed_body(seed: int) -> None:
    with FaultyUpstream(seed=seed) as up:
        up.set_fault(malformed_body=True)
        with pytest.raises((json.JSONDecodeError, openai.APIResponseValidationError, ValueError)):
            _ask(_client(up))


def test_times_and_runtime_control_from_another_process(seed: int) -> None:
    with FaultyUpstream(seed=seed) as up:
        request = urllib.request.Request(
            f"{up.url}/_bastion/fault",
            data=json.dumps({"status": 503, "times": 2}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert json.load(resp)["fault"]["status"] == 503
        client = _client(up)
        for _ in range(2):
            with pytest.raises(openai.InternalServerError):
                _ask(client)
        assert _ask(client)  # the fault cleared itself after two requests
        bad = urllib.request.Request(f"{up.url}/_bastion/fault", data=b'{"nope": 1}', method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(bad, timeout=5)
        assert err.value.code == 400
        err.value.close()


def test_probability_is_seeded(seed: int) -> None:
    outcomes = []
    for _ in range(2):
        with FaultyUpstream(seed=seed) as up:
            up.set_fault(status=500, probability=0.5)
            client = _client(up)
            row = []
            for _ in range(12):
                try:
                    _ask(client)
                    row.append(True)
                except openai.InternalServerError:
                    row.append(False)
            outcomes.append(row)
    assert outcomes[0] == outcomes[1]


def test_fault_object_injects_and_reverts(seed: int) -> None:
    with FaultyUpstream(seed=seed) as up:
        fault = HttpFaultInjection(up, HttpFault(status=502))
        with fault, pytest.raises(openai.APIStatusError):
            _ask(_client(up))
        assert fault.reverted
        assert _ask(_client(up))


def test_stalling_stream_spaces_its_chunks(seed: int) -> None:
    import time

    with FaultyUpstream(seed=seed, reply="a b c d") as up:
        up.set_fault(chunk_delay_s=0.3)
        stream = _client(up).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], stream=True
        )
        arrivals = [time.monotonic() for _ in stream]
        assert len(arrivals) >= 4
        assert arrivals[-1] - arrivals[0] > 0.5  # 3 gaps of 0.3 s asked; generous bound
        assert up.statistics().by_fault == {"slow_stream": 1}
