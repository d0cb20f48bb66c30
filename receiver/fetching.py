"""A download's request and body, read by a blocking reader in a thread of its own, so no Python runs per 64 KiB.

Through httpx, httpcore and h11 a download costs ~6 s of CPU per GiB in the event loop: httpcore reads 64 KiB at a
time whatever chunk size is asked for, and each read is a trip through the loop and h11's state machine, so a
download reached half of curl's speed (issue 13). Measured against it: aiohttp with 1 MiB reads ~0.8 of curl, a
blocking reader per download in a thread 1.4-1.75 (hashing and fsync included), and the standard library needs
no new dependency (pycurl would, and a C build). So here one thread per download connects, sends the request and
reads the body with `http.client` (status line, headers, chunked or Content-Length framing; its head capped as
httpcore capped it, see `fetchwire`), each read taking whatever one `recv` returns, up to `READ` bytes. The
pieces go into a hand-off the event loop drains: when the loop is busy (a fast download) they pile up and are taken
as one block, when it is idle (a slow one) each piece is taken as it arrives, so `wirebody.Pace` counts every byte
as soon as it is read, as before. The reader stops once `LIMIT` bytes wait, so memory stays flat.

What the caller sees is an ordinary `httpx.Response` (status, headers, url, a streamed body), so `downloads`,
`wirebody` and `mediafiles` check it exactly as they checked httpx's: redirects, the size cap on decoded bytes,
the encodings, the kind of file, a short body. Errors arrive as httpx's (`ConnectError`, `ReadTimeout`,
`RemoteProtocolError`...), with the request attached.

The guarantees of `guarded_http` hold the same way, through the same `AddressGuard`: the host is resolved on the
event loop, every address checked, and the thread connects only to a checked address (or, for a trusted origin, by
name); TLS verifies the certificate against the name (SNI) with httpx's own trust store. No proxy and no ~/.netrc
are consulted: `http.client` reads neither. Each request opens its own connection (`Connection: close`), so a
redirect's new host is resolved and checked again.

Cancelling (the attempt's deadline, shutdown) never waits for the thread: the socket is shut down, which ends any
read or write it is blocked in, and the thread, which touches nothing but its socket and the hand-off, ends on its
own. The connect itself is bounded by `connect_timeout`, every read by `read_timeout`.
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import asynccontextmanager

import anyio
import httpx

from receiver.fetchwire import CappedResponse, as_httpx_error, shut
from receiver.guarded_http import AddressGuard, guard_of


def fetcher_for(http: httpx.AsyncClient, *, allow_private: bool, allowed_origins: Collection[str]) -> Fetcher:
    """A Fetcher that connects by `http`'s rules and timeouts when `guarded_client` built it, else by these."""
    guard = guard_of(http) or AddressGuard(allow_private=allow_private, allowed_origins=allowed_origins)
    return Fetcher(guard, timeout=http.timeout)


READ = 256 * 1024
LIMIT = 1024 * 1024  # bytes read but not yet taken before the reader waits
USER_AGENT = "reelhook"
TIMEOUT = httpx.Timeout(30.0, connect=10.0)  # what the service gives its download client
_PORTS = {"http": 80, "https": 443}
Connect = Callable[[str, int, "float | None"], socket.socket]


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's own (certifi's roots, verification on), made once and only when an https URL comes: ~2 MiB."""
    return httpx.create_ssl_context()


def _connect(host: str, port: int, timeout: float | None) -> socket.socket:
    return socket.create_connection((host, port), timeout=timeout)


class Fetcher:
    """Opens guarded GET requests whose bodies a thread reads; `stream` is the one way in."""

    def __init__(self, guard: AddressGuard, *, timeout: httpx.Timeout = TIMEOUT, connect: Connect = _connect) -> None:
        """`connect` opens the TCP socket to a checked address (or a trusted name); a test hands in its own."""
        self._guard = guard
        self._connect = connect
        self._connect_timeout = timeout.connect
        self._read_timeout = timeout.read

    @asynccontextmanager
    async def stream(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[httpx.Response]:
        """GET `url` (never following a redirect); the response's body streams from the reader thread."""
        request = httpx.Request("GET", url, headers={"User-Agent": USER_AGENT, **headers, "Connection": "close"})
        scheme, host = request.url.scheme, request.url.raw_host.decode("ascii")  # IDNA-encoded, as httpcore has it
        if scheme not in _PORTS or not host:
            raise httpx.UnsupportedProtocol(f"cannot fetch {url}: only http and https", request=request)
        port = request.url.port or _PORTS[scheme]
        targets: list[str] = [host]
        if not self._guard.trusts(host, port):
            try:
                with anyio.fail_after(self._connect_timeout):
                    targets = [str(address) for address in await self._guard.addresses(host, port)]
            except OSError as exc:  # TimeoutError included
                raise httpx.ConnectError(f"cannot resolve {host}: {exc}", request=request) from exc
        reader = _Reader(
            request,
            port,
            targets,
            tls=tls_context() if scheme == "https" else None,
            connect=self._connect,
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
        )
        threading.Thread(target=reader.run, name=f"fetch {host}", daemon=True).start()
        try:
            status, fields = await reader.head()
            yield httpx.Response(status, headers=fields, stream=_Body(reader), request=request)
        finally:
            reader.stop()


class _Reader:
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
            while piece := response.read1(READ):
                with self._lock:
                    self._pieces.append(piece)
                    self._queued += len(piece)
                self._wake()
                with self._lock:
                    while self._queued >= LIMIT and not self._stopped:
                        self._lock.wait()
                    if self._stopped:
                        return
            if response.length:  # read1 ends quietly where the peer closed; read would have said so
                raise http.client.IncompleteRead(b"", response.length)
            with self._lock:
                self._done = True
        except Exception as exc:  # handed to the event loop, which raises it as httpx's
            with self._lock:
                self._error = exc
        finally:
            self._wake()
            with self._lock:
                sock, self._socket = self._socket, None
            if sock is not None:  # shut down first: close alone waits for the response's file to let go of it
                shut(sock)
                sock.close()
            if response is not None:
                response.close()  # its file holds the socket open after sock.close(); this lets go of it

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

    async def take(self) -> list[bytes]:
        """The pieces read since the last call, as the reads returned them; [] at the end of the body.

        Not joined into one block: a MiB join costs the event loop about a millisecond (a fresh allocation, its
        pages faulted in), which was a fifth of its CPU per download."""
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


class _Body(httpx.AsyncByteStream):
    def __init__(self, reader: _Reader) -> None:
        self._reader = reader

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while pieces := await self._reader.take():
            for piece in pieces:
                yield piece

    async def aclose(self) -> None:
        self._reader.stop()
