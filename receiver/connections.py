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

Requests in progress are bounded elsewhere: the body deadline ends them, and the hook slots (receiver/overload.py)
cap how many callbacks hold the database at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import cast

from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

from receiver.settings import Settings


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    max_connections: int = 512

    @classmethod
    def of(cls, settings: Settings) -> ConnectionLimits:
        return cls(settings.header_timeout, settings.keep_alive_timeout, settings.max_connections)

    def protocol(self) -> type[GuardedH11Protocol]:
        """The protocol class for `uvicorn.Config(http=...)`, which takes a class, not an instance."""
        return cast(type[GuardedH11Protocol], type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": self}))


class GuardedH11Protocol(H11Protocol):
    limits = ConnectionLimits()

    # Set while the connection waits for a request head: when it began to wait, and the cycle that was current
    # then (a head that arrives creates a new cycle, which is how we notice it without parsing anything ourselves).
    _waiting_since: float | None = None
    _waiting_after: RequestResponseCycle | None = None
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

    def handle_events(self) -> None:
        super().handle_events()
        if self._waiting_since is not None and self.cycle is not self._waiting_after:
            self._stop_waiting()  # a request head arrived

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._wait_for_head()  # before super(): it may find a pipelined head, which ends the wait at once
        super().on_response_complete()

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
        waiting = [c for c in self.connections if isinstance(c, GuardedH11Protocol) and c._waiting_since is not None]
        if not waiting:
            return False
        min(waiting, key=lambda c: c._waiting_since or 0.0)._close()
        return True
