"""A request's body must arrive within `timeout` seconds of its head; a client that is slower gets 408 and the
connection is closed.

A provider posts a callback of a few KiB in one go; a client that dribbles a byte a second is holding a callback
slot (and a socket) rather than sending anything. The clock starts when the app is called, which is when uvicorn
has the whole head, and stops once the last body chunk is in; reading the body after that, or waiting for a
disconnect while streaming a response, is not timed. The handler that was reading sees `BodyTimeout` raised from
`receive()`, so whatever it was doing stops there and nothing of the request is stored.

The same wrapper also closes the connection after any response sent before the body was read in full (a 403 for
a bad token, a 429 past a job's share): the unread rest would otherwise have to be received and thrown away on a
connection that a client who sends that way means to keep busy.
"""

from __future__ import annotations

import json

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CLOSE = (b"connection", b"close")


class BodyTimeout(Exception):
    """The request's body did not arrive in time (raised from `receive()`)."""


class BodyDeadline:
    def __init__(self, app: ASGIApp, *, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = anyio.current_time() + self.timeout
        body_read = not _has_body(scope)
        response_started = False

        async def timed_receive() -> Message:
            nonlocal body_read
            if body_read:
                return await receive()
            with anyio.move_on_after(deadline - anyio.current_time()):
                message = await receive()
                body_read = message["type"] != "http.request" or not message.get("more_body", False)
                return message
            raise BodyTimeout(f"the request's body did not arrive within {self.timeout:g} s")

        async def closing_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                if not body_read:
                    message = {**message, "headers": [*message.get("headers", []), CLOSE]}
            await send(message)

        try:
            await self.app(scope, timed_receive, closing_send)
        except BodyTimeout as exc:
            if response_started:
                raise
            body = json.dumps({"error": "timeout", "detail": str(exc)}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), CLOSE]
            await send({"type": "http.response.start", "status": 408, "headers": headers})
            await send({"type": "http.response.body", "body": body})


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False
