"""The OpenAI API's response shapes, written once: every server Bastion runs that speaks
the protocol (the gateway, the model replica, the vendor stand-in) builds its answers here.

Owns: chat completions and (legacy) text completions (plain, and as SSE stream chunks
ending with ``data: [DONE]``), embeddings, the model list and the error object
(``{"error": {"message", "type", "param", "code"}}``, which the ``openai`` client raises
as ``APIError`` with that message), and ``sse`` (one server-sent event on its own lines).

Must never: invent fields the protocol does not have, or do I/O.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "SSE_DONE",
    "chat_chunk",
    "chat_completion",
    "completion",
    "completion_chunk",
    "embeddings",
    "error",
    "model_list",
    "sse",
]

SSE_DONE = b"data: [DONE]\n\n"
"""The event that ends an OpenAI stream."""


def sse(obj: Any) -> bytes:
    """``obj`` as one SSE event: ``data: <json>`` and the blank line that ends it."""
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def chat_completion(
    model: str,
    content: str,
    *,
    id: str = "chatcmpl-bastion",
    created: int | None = None,
    prompt_tokens: int = 1,
    completion_tokens: int = 1,
) -> dict[str, Any]:
    """A whole ``chat.completion`` with one assistant message that finished (``stop``)."""
    return {
        "id": id,
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def chat_chunk(
    model: str,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    *,
    id: str = "chatcmpl-bastion",
    created: int = 0,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` of a stream; the last one carries ``finish_reason``."""
    return {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def completion(
    model: str,
    texts: Sequence[str],
    *,
    id: str = "cmpl-bastion",
    created: int | None = None,
    prompt_tokens: int = 1,
) -> dict[str, Any]:
    """A whole ``text_completion``, one finished (``stop``) choice per text, in order."""
    return {
        "id": id,
        "object": "text_completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [
            {"index": i, "text": text, "logprobs": None, "finish_reason": "stop"}
            for i, text in enumerate(texts)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(texts),
            "total_tokens": prompt_tokens + len(texts),
        },
    }


def completion_chunk(
    model: str,
    text: str,
    finish_reason: str | None = None,
    *,
    index: int = 0,
    id: str = "cmpl-bastion",
    created: int = 0,
) -> dict[str, Any]:
    """One ``text_completion`` chunk of a stream; the last one carries ``finish_reason``."""
    return {
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}
        ],
    }


def embeddings(vectors: Iterable[Sequence[float]], model: str) -> dict[str, Any]:
    """An embeddings ``list``, one ``embedding`` per input, in input order."""
    data = [
        {"object": "embedding", "index": i, "embedding": list(vector)}
        for i, vector in enumerate(vectors)
    ]
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }


def model_list(ids: Iterable[str], *, owned_by: str, created: int = 0) -> dict[str, Any]:
    """The ``/v1/models`` answer."""
    return {
        "object": "list",
        "data": [
            {"id": model, "object": "model", "created": created, "owned_by": owned_by}
            for model in ids
        ],
    }


def error(message: str, type: str, code: int | str, *, param: str | None = None) -> dict[str, Any]:
    """The error object; ``type`` is the protocol's error type (``invalid_request_error``,
    ``rate_limited``, ``stream_interrupted`` ...), ``code`` the HTTP status or the
    protocol's code (``invalid_api_key``, ``model_not_found``), ``param`` the request
    field at fault, if one is."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
