"""Untrusted fault specs (the upstream's control endpoint, experiment arguments) are
parsed into faults or refused with a UsageError; nothing else escapes."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.drill.faults import HttpFault, Toxic
from bastion.errors import UsageError

_values = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "status",
                "retry_after",
                "first_byte_delay_s",
                "cut_stream_after",
                "malformed_body",
                "probability",
                "times",
                "bogus",
            ]
        ),
        _values,
        max_size=5,
    )
)
@settings(max_examples=300, deadline=None)
def test_http_fault_from_dict_fuzz(data: dict[str, Any]) -> None:
    with contextlib.suppress(UsageError):
        fault = HttpFault.from_dict(data)
        assert fault.status is None or 100 <= fault.status <= 599
        assert 0.0 <= fault.probability <= 1.0


@given(st.text(max_size=12), st.text(max_size=12), st.floats(allow_nan=True))
@settings(max_examples=200, deadline=None)
def test_toxic_fuzz(kind: str, stream: str, toxicity: float) -> None:
    with contextlib.suppress(UsageError):
        toxic = Toxic(kind, stream=stream, toxicity=toxicity)  # type: ignore[arg-type]
        assert toxic.type in (
            "latency",
            "bandwidth",
            "timeout",
            "reset_peer",
            "slicer",
            "limit_data",
        )
        assert 0.0 <= toxic.toxicity <= 1.0


def test_known_fault_parses() -> None:
    fault = HttpFault.from_dict({"status": 429, "retry_after": 2, "times": 3})
    assert (fault.status, fault.retry_after, fault.times) == (429, 2.0, 3)
