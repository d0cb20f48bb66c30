"""`GET /events`: server-sent events that tell open pages to re-read what they show.

Fed by `Service.changes`, which every worker wake-up sets (a callback stored, a job submitted, a file downloaded).
A burst of changes becomes one message: after the first, the stream waits DEBOUNCE seconds and sends once for
everything that happened meanwhile. The message carries no data; the pages re-fetch their partials, which read
through the same functions as the API. A comment every PING seconds keeps proxies from closing an idle stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from receiver.service import Service

DEBOUNCE = 0.25
PING = 15.0


async def changes(service: Service, *, debounce: float = DEBOUNCE, ping: float = PING) -> AsyncIterator[str]:
    seen = service.changes.count
    yield "retry: 2000\n: connected\n\n"
    while True:
        with anyio.move_on_after(ping) as waited:
            await service.changes.wait(seen)
        if waited.cancelled_caught:
            yield ": ping\n\n"
            continue
        await anyio.sleep(debounce)
        seen = service.changes.count
        yield f"event: change\ndata: {seen}\n\n"


async def events(request: Request) -> Response:
    service: Service = request.app.state.service
    headers = {"cache-control": "no-store", "x-accel-buffering": "no"}
    return StreamingResponse(changes(service), media_type="text/event-stream", headers=headers)
