"""Shedding load on the callback routes: past `limit` callbacks in progress, answer 503 at once.

A provider that gets no answer in time counts the delivery as failed anyway and retries it; an immediate 503 with
`Retry-After` says the same thing without tying up a connection, a database slot and the provider's patience while
the request waits its turn. Nothing already accepted is affected: a shed request was never read, so nothing of it
was stored; every callback that got in runs to its commit as usual. Only `/hooks/*` is shed: `/healthz` and the
API stay responsive so an operator can see what is going on.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

HOOKS = "/hooks/"


class HookLoadShedder:
    def __init__(self, app: ASGIApp, *, limit: int, retry_after: int = 5) -> None:
        if limit < 1:
            raise ValueError("HookLoadShedder: limit must be at least 1")
        self.app = app
        self.limit = limit
        self.retry_after = retry_after
        self.in_progress = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(HOOKS):
            await self.app(scope, receive, send)
            return
        if self.in_progress >= self.limit:
            await self._shed(send)
            return
        self.in_progress += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_progress -= 1

    async def _shed(self, send: Send) -> None:
        detail = f"more than {self.limit} callbacks in progress; retry in {self.retry_after}s"
        body = json.dumps({"error": "overloaded", "detail": detail}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(self.retry_after).encode()),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})
