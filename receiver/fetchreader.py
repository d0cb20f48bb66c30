"""The reader thread of one download and the event loop's side of it (see `fetching`, which starts it): the thread
connects, sends the request and reads the head, then the body as the event loop decides, handed over a piece at a
time (`take`) or poured into a writer (`pour`); the loop waits on it through an asyncio event, never by blocking.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable

import anyio
import httpx

from receiver.fetchwire import CappedResponse, Check, Connect, Kept, Writer, as_httpx_error, pour_body, shut

READ = 256 * 1024  # the most one read asks for; a read returns what one recv gives
LIMIT = 1024 * 1024  # bytes read but not yet taken before the reader waits
_HAND_OVER = "hand over"  # the plan of a body whose pieces go to the event loop (the other plan: a writer and a check)


class Reader:
    """One request in one thread; the event loop waits on it through `head` and `take`, never by blocking."""

    def __init__(
        self,
        request: httpx.Request,
        port: int,
        targets: list[str],
        *,
        tls: ssl.SSLContext | None,
        connect: Connect,
        connect_timeout: float | None,
        read_timeout: float | None,
    ) -> None:
        self._request = request
        self._port = port
        self._targets = targets
        self._tls = tls
        self._connect = connect
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._lock = threading.Condition()
        # Everything below is guarded by _lock.
        self._waiting = False  # the event loop waits on _changed
        self._status: tuple[int, list[tuple[str, str]]] | None = None
        self._pieces: list[bytes] = []
        self._queued = 0
        self._done = False
        self._plan: tuple[Writer, Check] | str | None = None  # _HAND_OVER, or where and how to pour the body
        self._poured = 0  # bytes poured since the event loop last looked
        self._exited = False  # the thread touches nothing of ours any more
        self._error: Exception | None = None
        self._stopped = False
        self._socket: socket.socket | None = None
        self._reading = False  # connected: a timeout now is a read timeout

    # The thread's side.

    def run(self) -> None:
        response: http.client.HTTPResponse | None = None
        try:
            response = self._open()
            with self._lock:
                self._status = (response.status, response.getheaders())
            self._wake()
            with self._lock:  # the body is read once the event loop says how: handed over, or poured
                while self._plan is None and not self._stopped:
                    self._lock.wait()
                plan = self._plan
            if isinstance(plan, tuple):
                pour_body(response, *plan, progress=self._poured_more, stopped=lambda: self._stopped)
            elif plan == _HAND_OVER:
                self._hand_over(response)
            with self._lock:
                self._done = True
        except Exception as exc:  # handed to the event loop, which raises it as httpx's (or as itself, if Kept)
            with self._lock:
                self._error = exc
        finally:
            with self._lock:
                self._exited = True
            self._wake()
            with self._lock:
                sock, self._socket = self._socket, None
            if sock is not None:  # shut down first: close alone waits for the response's file to let go of it
                shut(sock)
                sock.close()
            if response is not None:
                response.close()  # its file holds the socket open after sock.close(); this lets go of it

    def _hand_over(self, response: http.client.HTTPResponse) -> None:
        while piece := response.read1(READ):
            with self._lock:
                self._pieces.append(piece)
                self._queued += len(piece)
            self._wake()
            with self._lock:
                while self._queued >= LIMIT and not self._stopped:
                    self._lock.wait()
                if self._stopped:
                    raise ConnectionAbortedError("cancelled")
        if response.length:  # read1 ends quietly where the peer closed; read would have said so
            raise http.client.IncompleteRead(b"", response.length)

    def _poured_more(self, size: int) -> None:
        with self._lock:
            self._poured += size
        self._wake()

    def _open(self) -> http.client.HTTPResponse:
        url = self._request.url
        failure: OSError | None = None
        for target in self._targets:
            try:
                sock = self._connect(target, self._port, self._connect_timeout)
            except OSError as exc:  # try the next address, as a resolving connect would
                failure = exc
                continue
            with self._lock:
                if self._stopped:
                    sock.close()
                    raise ConnectionAbortedError("cancelled")
                self._socket = sock
            break
        else:
            raise failure or OSError(f"no addresses for {url.host}")
        if self._tls is not None:
            sock = self._tls.wrap_socket(sock, server_hostname=url.raw_host.decode("ascii"))
            with self._lock:
                self._socket = sock
        sock.settimeout(self._read_timeout)
        with self._lock:
            self._reading = True
        connection = http.client.HTTPConnection(url.raw_host.decode("ascii"), self._port)
        connection.response_class = CappedResponse
        connection.sock = sock  # connected to the checked address; http.client never resolves or connects itself
        target = url.raw_path.decode("ascii")
        connection.request("GET", target, headers=dict(self._request.headers))
        return connection.getresponse()

    def _wake(self) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, False
        if waiting:
            try:
                self._loop.call_soon_threadsafe(self._changed.set)
            except RuntimeError:  # the loop has closed: nobody is waiting any more
                pass

    # The event loop's side.

    async def head(self) -> tuple[int, list[tuple[str, str]]]:
        while True:
            with self._lock:
                if self._status is not None:
                    return self._status
                self._raise_error()
                self._changed.clear()
                self._waiting = True
            await self._changed.wait()

    def _decide(self, plan: tuple[Writer, Check] | str) -> None:
        with self._lock:
            if self._plan is None:
                self._plan = plan
                self._lock.notify()
            elif self._plan is not plan:
                raise RuntimeError("a body is read once: handed over or poured, not both")

    async def pour(self, writer: Writer, check: Check, on_progress: Callable[[int], None]) -> None:
        """Have the thread read the body into `writer`, `check`ing each piece first; `on_progress` is told, in the
        event loop, how many more bytes were poured. Returns when the body is written and checked; raises the
        thread's error (a Kept one as itself). A cancel waits for the thread to let go of `writer`."""
        self._decide((writer, check))
        try:
            while True:
                with self._lock:
                    poured, self._poured = self._poured, 0
                    if not poured and not self._done and self._error is None:
                        self._changed.clear()
                        self._waiting = True
                if poured:
                    on_progress(poured)
                    continue
                self._raise_error()
                if self._done:
                    return
                await self._changed.wait()
        except BaseException:
            self.stop()
            with anyio.CancelScope(shield=True):  # bounded: the socket is shut, a disk write ends on its own
                while True:
                    with self._lock:
                        if self._exited:
                            break
                        self._changed.clear()
                        self._waiting = True
                    await self._changed.wait()
            raise

    async def take(self) -> list[bytes]:
        """The pieces read since the last call, as the reads returned them; [] at the end of the body.

        Not joined into one block: a MiB join costs the event loop about a millisecond (a fresh allocation, its
        pages faulted in), which was a fifth of its CPU per download."""
        self._decide(_HAND_OVER)
        while True:
            with self._lock:
                if self._pieces:
                    pieces, self._pieces, self._queued = self._pieces, [], 0
                    self._lock.notify()
                    return pieces
                self._raise_error()
                if self._done:
                    return []
                self._changed.clear()
                self._waiting = True
            await self._changed.wait()

    def _raise_error(self) -> None:
        error = self._error
        if isinstance(error, Kept):
            raise error.error
        if error is not None:
            raise as_httpx_error(error, self._request, reading=self._reading) from error

    def stop(self) -> None:
        """End the thread's work: wakes it if it waits, and shuts the socket so a blocked read or write returns."""
        with self._lock:
            self._stopped = True
            self._lock.notify()
            sock = self._socket
        if sock is not None:
            shut(sock)


class Body(httpx.AsyncByteStream):
    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while pieces := await self.reader.take():
            for piece in pieces:
                yield piece

    async def aclose(self) -> None:
        self.reader.stop()
