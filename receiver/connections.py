"""The HTTP connection itself: how long a client may take to send a request's head, and how many may be open.

uvicorn's h11 protocol waits for a request head as long as the client likes: its keep-alive timer runs only after
a response, and `limit_concurrency` answers 503 to the *next request* once enough connections are open, which is
the opposite of what we want when the open connections are someone's idle sockets. So this subclass adds two
things, both decided per connection in the event loop's thread with no locks:

- A head deadline. From the moment a connection opens, and again from the end of each response, the client has
  `header_timeout` seconds to complete the next request head; otherwise the connection is closed (there is no
  request to answer, so no 408). Every HTTP client sends a head in one write; only a client that means to hold
  the socket misses this. The body's deadline is the app's business (receiver/deadlines.py), since only there can
  it be answered with a 408.
- A cap on open connections. At `max_connections`, a new connection closes the one that has waited longest for a
  head (idle keep-alive, or a head that is dribbling in) and takes its place; only when every open connection has
  a request in progress is the new one refused. A legitimate client completes its head at once, so it is never
  the one waiting longest, and a flood of idle sockets cannot keep it out.

Both of uvicorn's HTTP parsers get the same guards: h11 (pure Python) and httptools (llhttp, in C, about a fifth
less CPU per request), which uvicorn's "auto" prefers when it is installed. Two things differ. A head arrives in
h11's `handle_events` but in httptools' `on_headers_complete`; and h11 refuses a request head past 16 KiB (its
`max_incomplete_event_size`) where llhttp buffers one of any size, so the httptools protocol counts the bytes of a
head that spans several reads and answers 400 past the same 16 KiB, as h11 does. Both parse a pipelined head only
once the previous response is complete (httptools queues it), so the wait for a head starts only when nothing is.

Requests in progress are bounded elsewhere: the body deadline ends them, and the hook slots (receiver/overload.py)
cap how many callbacks hold the database at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal, cast

from uvicorn.protocols.http.h11_impl import H11Protocol

from receiver.settings import Settings

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed: h11 only
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

Parser = Literal["auto", "h11", "httptools"]
HEAD_LIMIT = 16 * 1024  # bytes: h11's default max_incomplete_event_size, which uvicorn keeps


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    max_connections: int = 512

    @classmethod
    def of(cls, settings: Settings) -> ConnectionLimits:
        return cls(settings.header_timeout, settings.keep_alive_timeout, settings.max_connections)

    def protocol(self, parser: Parser = "auto") -> type[asyncio.Protocol]:
        """The protocol class for `uvicorn.Config(http=...)`, which takes a class, not an instance: httptools when
        it is installed and `parser` is "auto", as uvicorn's own "auto" would pick."""
        base = protocol_class(parser)
        return cast(type[asyncio.Protocol], type(base.__name__, (base,), {"limits": self}))


def protocol_class(parser: Parser = "auto") -> type[HeadGuard]:
    if parser == "h11" or (parser == "auto" and HttpToolsProtocol is None):
        return GuardedH11Protocol
    if HttpToolsProtocol is None:
        raise RuntimeError("http parser 'httptools' asked for but not installed: pip install httptools")
    return GuardedHttpToolsProtocol


def parser_of(protocol: object) -> str:
    """ "httptools" or "h11": which parser a `uvicorn.Config(http=...)` value uses."""
    uses_httptools = (
        isinstance(protocol, type) and HttpToolsProtocol is not None and issubclass(protocol, HttpToolsProtocol)
    )
    return "httptools" if uses_httptools or protocol == "httptools" else "h11"


class HeadGuard(asyncio.Protocol):
    """The guards, over either of uvicorn's protocols (a mixin: it comes first in the bases, and its `super()` is
    uvicorn's protocol)."""

    limits = ConnectionLimits()
    # uvicorn's protocols set these
    connections: set[Any]
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    flow: Any
    cycle: Any

    # Set while the connection waits for a request head: when it began to wait, and the cycle that was current
    # then (a head that arrives creates a new cycle, which is how we notice it without parsing anything ourselves).
    _waiting_since: float | None = None
    _waiting_after: Any = None
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections and not self._evict_one():
            transport.close()  # every open connection has a request in progress; this client may try again
            return
        super().connection_made(transport)
        self._wait_for_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        if self.flow is not None:  # refused in connection_made: uvicorn never saw it
            super().connection_lost(exc)

    def _notice_head(self) -> None:
        if self._waiting_since is not None and self.cycle is not self._waiting_after:
            self._stop_waiting()  # a request head arrived

    def on_response_complete(self) -> None:
        # Unless a pipelined head is already queued (httptools parses ahead): then no wait begins.
        if not self.transport.is_closing() and self.cycle.response_complete:
            self._wait_for_head()  # before super(): h11 may find a pipelined head there, which ends the wait at once
        super().on_response_complete()  # type: ignore[misc]  # both of uvicorn's protocols have it

    def _wait_for_head(self) -> None:
        self._stop_waiting()
        self._waiting_since = self.loop.time()
        self._waiting_after = self.cycle
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._close)

    def _stop_waiting(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._waiting_since = self._waiting_after = self._head_timer = None

    def _close(self) -> None:
        self._stop_waiting()
        if not self.transport.is_closing():
            self.transport.close()

    def _evict_one(self) -> bool:
        waiting = [c for c in self.connections if isinstance(c, HeadGuard) and c._waiting_since is not None]
        if not waiting:
            return False
        min(waiting, key=lambda c: c._waiting_since or 0.0)._close()
        return True


class GuardedH11Protocol(HeadGuard, H11Protocol):
    def handle_events(self) -> None:
        super().handle_events()
        self._notice_head()


if HttpToolsProtocol is not None:

    class GuardedHttpToolsProtocol(HeadGuard, HttpToolsProtocol):
        _in_head = False  # between llhttp's on_message_begin and on_headers_complete
        _head_bytes = 0  # bytes read since the head began
        _completed_in_read = False  # a message ended in the read being parsed: the rest may start a pipelined head

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head, self._head_bytes = True, 0

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()
            self._notice_head()

        def on_message_complete(self) -> None:
            self._completed_in_read = True
            super().on_message_complete()

        def data_received(self, data: bytes) -> None:
            self._completed_in_read = False
            super().data_received(data)
            if not self._in_head or self.transport.is_closing():
                return
            # A read in which a message also ended holds that message's tail too, and is not counted: a pipelined
            # head may so exceed the limit by at most one read (64-256 KiB). Every other read is all head.
            self._head_bytes += 0 if self._completed_in_read else len(data)
            if self._head_bytes > HEAD_LIMIT:
                self._stop_waiting()
                self.send_400_response("Request head too large.")  # writes, then closes
