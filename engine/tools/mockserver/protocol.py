"""The OpenAI wire format the mock speaks: request parsing, error bodies and the completion body.

Pure functions and constants, no server state: ``parse_chat`` validates a chat request body (400 / 404
as ``BadRequest``), ``read_prompt`` finds the prompt's token estimate and the last user message,
``extract_solution`` the student solution inside it, ``completion_body`` renders a chat completion;
``err`` and the ``E_*`` constants are OpenAI-style error bodies. Tokens are estimated as ``ceil(chars / 4)``.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = [
    "JSON",
    "BadRequest",
    "ceil4",
    "completion_body",
    "context_error",
    "err",
    "extract_solution",
    "parse_chat",
    "read_prompt",
]

JSON = "application/json"
_SEPARATOR = "\n\n-----------------"
_SOLUTION_MARK = "{student_solution}: "


def err(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


E_AUTH = err("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
E_500 = err("The server had an error while processing your request. Sorry about that!", "server_error")
E_503 = err("The engine is currently overloaded, please try again later.", "server_error", "overloaded")
E_429 = err("Rate limit reached. Please try again later.", "requests", "rate_limit_exceeded")
E_BUSY = err("Too many concurrent requests.", "requests", "concurrency_limit_exceeded")
E_FAIL = err("The server is failing (fail_after_s elapsed).", "server_error")
E_NOTFOUND = err("Not found.", "invalid_request_error", "not_found")
MALFORMED = b'{"id": "chatcmpl-mock", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assis'


class BadRequest(Exception):
    """A chat request the mock refuses before admission: its HTTP status and error body."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def parse_chat(
    raw: bytes, model: str, student_model: str | None = None
) -> tuple[list[dict[str, Any]], int | None, bool]:
    """The messages, ``max_tokens`` (or ``max_completion_tokens``) and whether it asks for ``student_model``
    (else ``model``) of a chat request body.

    Raises ``BadRequest``: 400 for a body that is not a JSON object, lacks a model, has no messages,
    asks to stream or has a bad ``max_tokens``; 404 for any other model (checked in that order)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest(400, err("We could not parse the JSON body of your request.", "invalid_request_error")) from None
    if not isinstance(body, dict):
        raise BadRequest(400, err("The request body must be a JSON object.", "invalid_request_error"))
    name = body.get("model")
    if not isinstance(name, str):
        raise BadRequest(400, err("you must provide a model parameter", "invalid_request_error", None, "model"))
    student = student_model is not None and name == student_model
    if name != model and not student:
        raise BadRequest(404, err(f"The model '{name}' does not exist or you do not have access to it.",
                                  "invalid_request_error", "model_not_found", "model"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise BadRequest(400, err("'messages' must be a non-empty array of message objects.",
                                  "invalid_request_error", None, "messages"))
    if body.get("stream"):
        raise BadRequest(400, err("stream=true is not supported by the mock server.", "invalid_request_error",
                                  None, "stream"))
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                   or max_tokens < 1):
        raise BadRequest(400, err("max_tokens must be a positive integer.", "invalid_request_error", None,
                                  "max_tokens"))
    return messages, max_tokens, student


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI "parts" form
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def read_prompt(messages: list[dict[str, Any]]) -> tuple[int, str]:
    """(prompt tokens over all messages, the text of the LAST user message, else of the last message)."""
    prompt_chars = 0
    user_text = None
    for m in messages:
        text = _content_text(m.get("content"))
        prompt_chars += len(text)
        if m.get("role") == "user":
            user_text = text
    if user_text is None:
        user_text = _content_text(messages[-1].get("content"))
    return ceil4(prompt_chars), user_text


def extract_solution(user_text: str) -> str:
    """The text between ``"{student_solution}: "`` and the last separator line (all of it without the mark)."""
    i = user_text.find(_SOLUTION_MARK)
    if i < 0:
        return user_text
    start = i + len(_SOLUTION_MARK)
    end = user_text.rfind(_SEPARATOR)
    return user_text[start:end] if end >= start else user_text[start:]


def context_error(context_length: int, prompt_tokens: int, max_tokens: int) -> bytes:
    """vLLM's 400 for a request that does not fit the model's context."""
    return err(f"This model's maximum context length is {context_length} tokens. However, you requested "
               f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the "
               "completion). Please reduce the length of the messages or completion.",
               "BadRequestError", None, None)


def ceil4(n: int) -> int:
    return (n + 3) // 4


def completion_body(
    n: int, created: int, model: str, answer: str, finish: str, prompt_tokens: int, completion_tokens: int
) -> bytes:
    """A non-streaming ``chat.completion`` object (id ``chatcmpl-mock-N``) as JSON bytes."""
    return orjson.dumps({
        "id": f"chatcmpl-mock-{n}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    })
