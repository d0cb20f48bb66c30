"""A download's request and body, read by a blocking reader in a thread of its own, so no Python runs per 64 KiB.

Through httpx, httpcore and h11 a download costs ~6 s of CPU per GiB in the event loop: httpcore reads 64 KiB at a
time whatever chunk size is asked for, and each read is a trip through the loop and h11's state machine, so a
download reached half of curl's speed (docs in /work/shared/notes/performance.md; issue 13). Here one thread per
download connects, sends the request and reads the body with the standard library's `http.client` (status line,
headers, chunked or Content-Length framing), each read taking whatever one `recv` returns, up to `READ` bytes. The
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
import io
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx

from receiver.guarded_http import AddressGuard, guard_of


def fetcher_for(http: httpx.AsyncClient, *, allow_private: bool, allowed_origins: Collection[str]) -> Fetcher:
    """A Fetcher that connects by `http`'s rules and timeouts when `guarded_client` built it, else by these."""
    guard = guard_of(http) or AddressGuard(allow_private=allow_private, allowed_origins=allowed_origins)
    return Fetcher(guard, timeout=http.timeout)


MAX_HEAD = 100 * 1024  # bytes of status line and headers (interim 1xx responses included): httpcore's own limit
READ = 256 * 1024  # the most one read asks for; a read returns what one recv gives
LIMIT = 1024 * 1024  # bytes read but not yet taken before the reader waits
USER_AGENT = "reelhook"
TIMEOUT = httpx.Timeout(30.0, connect=10.0)  # what the service gives its download client
_PORTS = {"http": 80, "https": 443}
Connect = Callable[[str, int, "float | None"], socket.socket]


@functools.cache
def _tls_context() -> ssl.SSLContext:
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
        scheme, host = request.url.scheme, request.url.host
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
            tls=_tls_context() if scheme == "https" else None,
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
                _shut(sock)
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
            sock = self._tls.wrap_socket(sock, server_hostname=url.host)
            with self._lock:
                self._socket = sock
        sock.settimeout(self._read_timeout)
        with self._lock:
            self._reading = True
        connection = http.client.HTTPConnection(url.host, self._port)
        connection.response_class = _Response
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

    async def take(self) -> bytes:
        """What has been read since the last call, as one block; b"" at the end of the body."""
        while True:
            with self._lock:
                if self._pieces:
                    pieces, self._pieces, self._queued = self._pieces, [], 0
                    self._lock.notify()
                    return pieces[0] if len(pieces) == 1 else b"".join(pieces)
                self._raise_error()
                if self._done:
                    return b""
                self._changed.clear()
                self._waiting = True
            await self._changed.wait()

    def _raise_error(self) -> None:
        error = self._error
        if error is not None:
            raise _as_httpx(error, self._request, reading=self._reading) from error

    def stop(self) -> None:
        """End the thread's work: wakes it if it waits, and shuts the socket so a blocked read or write returns."""
        with self._lock:
            self._stopped = True
            self._lock.notify()
            sock = self._socket
        if sock is not None:
            _shut(sock)


class _Response(http.client.HTTPResponse):
    """http.client's response with the whole head capped at MAX_HEAD, as httpcore capped it: http.client alone
    allows 100 header lines of 64 KiB each, and any number of `100 Continue` heads before the real one."""

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp = _CappedHead(self.fp)  # type: ignore[assignment]  # http.client reads a head by readline only

    def begin(self) -> None:
        super().begin()
        if isinstance(self.fp, _CappedHead):  # the head is read: the body is read from the file itself
            self.fp = self.fp.file


class _CappedHead:
    """The response's file while its head is read (by lines): RemoteProtocolError's cause past MAX_HEAD bytes."""

    def __init__(self, file: io.BufferedReader) -> None:
        self.file = file
        self._left = MAX_HEAD

    def readline(self, limit: int = -1) -> bytes:
        cap = self._left + 1  # enough to see the head is too large, never more
        line = self.file.readline(cap if limit < 0 else min(limit, cap))
        self._left -= len(line)
        if self._left < 0:
            raise http.client.HTTPException(f"the response's head is larger than {MAX_HEAD} bytes")
        return line

    def __getattr__(self, name: str) -> Any:  # flush, close, fileno...: the file's own
        return getattr(self.file, name)


class _Body(httpx.AsyncByteStream):
    def __init__(self, reader: _Reader) -> None:
        self._reader = reader

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while block := await self._reader.take():
            yield block

    async def aclose(self) -> None:
        self._reader.stop()


def _shut(sock: socket.socket) -> None:
    """End the connection now, whoever else holds the socket; a read or write blocked on it returns."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already shut, or never connected
        pass


def _as_httpx(error: Exception, request: httpx.Request, *, reading: bool) -> httpx.HTTPError:
    """The reader's error as the httpx error the downloader already knows how to judge."""
    where = f"{request.url.host}:{request.url.port or _PORTS.get(request.url.scheme, 0)}"
    if isinstance(error, http.client.IncompleteRead):
        return httpx.RemoteProtocolError(
            f"peer closed connection without sending complete message body ({len(error.partial)} bytes read)",
            request=request,
        )
    if isinstance(error, http.client.HTTPException):  # a malformed status line or header, too many headers
        return httpx.RemoteProtocolError(f"{type(error).__name__} from {where}: {error}", request=request)
    if isinstance(error, TimeoutError):
        if reading:
            return httpx.ReadTimeout(f"{where} sent nothing for a read timeout", request=request)
        return httpx.ConnectTimeout(f"connecting to {where} timed out", request=request)
    if reading and not isinstance(error, ssl.SSLCertVerificationError):
        return httpx.ReadError(f"reading from {where}: {error}", request=request)
    return httpx.ConnectError(f"connecting to {where}: {error}", request=request)
