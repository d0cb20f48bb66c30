"""Small helpers the routes share: the error shape, a JSON response that renders any text, and reading a body with a
size cap."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse


class BodyTooLarge(Exception):
    pass


class TextSafeJSONResponse(JSONResponse):
    """A JSONResponse that renders any str, including a lone surrogate (which UTF-8 cannot encode).

    Text that reaches an answer may come from outside: a path segment, an old row stored before bodies were
    checked. Starlette encodes strictly, so one such character turned an answer, even an error's, into a 500.
    json.dumps only leaves a surrogate inside a string, where `backslashreplace` writes it as the JSON escape
    `\\udXXX`: the same value a reader gets from `ensure_ascii=True`, while every other character stays UTF-8.
    """

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
        return text.encode("utf-8", "backslashreplace")


def error(status_code: int, error: str, detail: str) -> JSONResponse:
    return TextSafeJSONResponse({"error": error, "detail": detail}, status_code=status_code)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (BodyTooLarge) as soon as it is known to pass `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)
