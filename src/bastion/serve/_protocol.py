"""Is a backend's answer what the OpenAI protocol promises? The gateway asks before it
commits to an answer, so a vendor that answers 200 with an HTML page, an empty body, a
JSON object of the wrong shape, or a stream that is not SSE or never finishes, is a
failing backend (retried elsewhere, counted against its breaker), never a success.

Owns: ``answer_problem`` (a whole answer: its content type and JSON shape per route) and
``StreamCheck`` (a stream, fed whole lines as they pass: the SSE framing of each line,
each ``data:`` event's JSON shape, and the finish: a ``finish_reason`` chunk, then
``data: [DONE]``, then nothing).

Kept cheap on the hot path: a whole answer is parsed once (small bodies; a large one, an
embeddings list, is only checked for its brackets); a stream event is a small JSON
object parsed once.

Must never: do I/O, change a backend's state, or reject what the protocol allows
(unknown fields, comments, ``event:``/``id:``/``retry:`` lines, usage-only chunks with
no choices).
"""

from __future__ import annotations

import json
from typing import Any

from bastion.serve._outcome import looks_like_json

__all__ = ["StreamCheck", "answer_problem"]

_FULL_CHECK = 64 * 1024  # as _outcome.looks_like_json: bigger bodies are not parsed
_CHAT = "/v1/chat/completions"
_COMPLETIONS = "/v1/completions"
_EMBEDDINGS = "/v1/embeddings"
_OPENAI_ROUTES = (_CHAT, _COMPLETIONS, _EMBEDDINGS)


def _parse(data: bytes) -> tuple[Any, str]:
    try:
        return json.loads(data), ""
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, "malformed JSON body"


def _choices_problem(obj: dict[str, Any], path: str) -> str:
    choices = obj.get("choices")
    if not isinstance(choices, list):
        return "no choices list"
    for choice in choices:
        if not isinstance(choice, dict):
            return "a choice that is not an object"
        if path == _CHAT:
            message = choice.get("message")
            if not isinstance(message, dict):
                return "a choice without a message"
            content = message.get("content")
            if content is not None and not isinstance(content, str):
                return "a message whose content is not a string"
            if content is None and not (message.get("tool_calls") or message.get("refusal")):
                return "a message with no content"
        elif not isinstance(choice.get("text"), str):
            return "a choice without text"
    return ""


def answer_problem(path: str, content_type: str, body: bytes) -> str:
    """How a 2xx whole answer on ``path`` breaks the protocol, or "" when it does not.
    On the OpenAI routes the body must be a JSON object of the route's shape; on others
    (``/v1/predict``, generic JSON) a JSON body must be whole."""
    if path not in _OPENAI_ROUTES:
        if content_type == "application/json" and not looks_like_json(body):
            return "malformed JSON body"
        return ""
    if content_type != "application/json":
        return f"content type {content_type or 'none'!r}, not application/json"
    if len(body) > _FULL_CHECK:
        return "" if looks_like_json(body) else "malformed JSON body"
    obj, problem = _parse(body)
    if problem:
        return problem
    if not isinstance(obj, dict):
        return "a JSON body that is not an object"
    if "error" in obj:
        return "an error object in a 2xx answer"
    if path == _EMBEDDINGS:
        data = obj.get("data")
        if not isinstance(data, list) or not all(
            isinstance(item, dict) and isinstance(item.get("embedding"), list | str)
            for item in data
        ):
            return "no data list of embeddings"
        return ""
    return _choices_problem(obj, path)


_FIELDS = (b"data", b"event", b"id", b"retry")


class StreamCheck:
    """The protocol check of one stream, fed its bytes in whole lines (``feed``), then
    told it ended (``end``). Each returns the first violation, or "".

    ``started`` turns True at the first event a client would act on (content, a tool
    call, or ``[DONE]``): until then nothing need reach the client, so a violation
    (including a finish chunk with no ``[DONE]`` after it) is still retried elsewhere."""

    __slots__ = ("done", "finished", "started")

    def __init__(self) -> None:
        self.started = False
        self.finished = False  # a choice had a finish_reason
        self.done = False  # data: [DONE] came

    def feed(self, lines: bytes) -> str:
        for line in lines.splitlines():
            problem = self._line(line)
            if problem:
                return problem
        return ""

    def end(self) -> str:
        if not self.done:
            return "ended without [DONE]"
        return ""

    def _line(self, line: bytes) -> str:
        if not line or line[:1] == b":":
            return ""  # an event's end, or a comment
        name, _, value = line.partition(b":")
        if name not in _FIELDS:
            return f"a line that is not SSE: {line[:40]!r}"
        if self.done:
            return "an event after [DONE]"
        if name != b"data":
            return ""
        value = value[1:] if value[:1] == b" " else value
        if value == b"[DONE]":
            self.done = True
            self.started = True
            if not self.finished:
                return "[DONE] without a finish_reason"
            return ""
        obj, problem = _parse(value)
        if problem:
            return f"an event that is not JSON: {value[:40]!r}"
        if not isinstance(obj, dict):
            return "an event that is not a JSON object"
        if "error" in obj:
            return "an error event from the backend"
        choices = obj.get("choices")
        if not isinstance(choices, list):
            return "an event without a choices list"
        for choice in choices:
            if not isinstance(choice, dict):
                return "a choice that is not an object"
            delta = choice.get("delta")
            text = choice.get("text")
            # A chat chunk's choice has a delta object, a completion chunk's a text.
            if not isinstance(delta, dict) and not isinstance(text, str):
                return "a choice without a delta object or a text"
            if choice.get("finish_reason") is not None:
                self.finished = True
            if text or (delta and any(v for k, v in delta.items() if k != "role")):
                self.started = True
        return ""
