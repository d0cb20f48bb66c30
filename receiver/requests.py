"""Small helpers the routes share: the error shape, and reading a body with a size cap."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse


class BodyTooLarge(Exception):
    pass


def error(status_code: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status_code)


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
