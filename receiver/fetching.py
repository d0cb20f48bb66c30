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

A body that goes to a local media folder need not pass through the event loop at all: `pour` has the thread write it
into the `.part` itself (`LocalMediaStore.sink`), reading into one buffer over and over, checking each piece first
with the checks `mediafiles.checked_body` makes (`BodyCheck`: the size cap, the kind of file, an empty body), hashing
it and writing it; the loop only hears how many bytes came, for `wirebody.Pace`. Measured on 40 x 5 MiB: the loop's
CPU per download no longer grows with the body, and peak RSS fell from ~80 to ~64 MiB. A body sent encoded (gzip,
deflate) is still handed over, for `wirebody` to decode within bounds; so is one on its way to a bucket.

What the caller sees is an ordinary `httpx.Response` (status, headers, url, a streamed body), so `downloads`,
`wirebody` and `mediafiles` check it exactly as they checked httpx's: redirects, the size cap on decoded bytes,
the encodings, the kind of file, a short body. Errors arrive as httpx's (`ConnectError`, `ReadTimeout`,
`RemoteProtocolError`...), with the request attached.

The guarantees of `guarded_http` hold the same way, through the same `AddressGuard`: the host is resolved on the
event loop, every address checked, and the thread connects only to a checked address (or, for a trusted origin, by
name); TLS verifies the certificate against the name (SNI) with httpx's own trust store. No proxy and no ~/.netrc
are consulted: `http.client` reads neither. Each request opens its own connection (`Connection: close`), so a
redirect's new host is resolved and checked again.

Cancelling (the attempt's deadline, shutdown) shuts the socket down, which ends any read or write it is blocked
in. A handed-over body's thread touches nothing but its socket and the hand-off, so nothing waits for it to end; a
poured body's thread also writes the `.part`, which its caller unlinks and closes once `pour` returns, so `pour`
returns only once the thread has let go of it (at most the one disk write in progress). The connect itself is
bounded by `connect_timeout`, every read by `read_timeout`.
"""

from __future__ import annotations

import functools
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import asynccontextmanager

import anyio
import httpx

from receiver.fetchreader import Body, Reader
from receiver.fetchwire import Check, Connect, Writer
from receiver.guarded_http import AddressGuard, guard_of
from receiver.readerthreads import run_reader


def fetcher_for(http: httpx.AsyncClient, *, allow_private: bool, allowed_origins: Collection[str]) -> Fetcher:
    """A Fetcher that connects by `http`'s rules and timeouts when `guarded_client` built it, else by these."""
    guard = guard_of(http) or AddressGuard(allow_private=allow_private, allowed_origins=allowed_origins)
    return Fetcher(guard, timeout=http.timeout)


USER_AGENT = "reelhook"
TIMEOUT = httpx.Timeout(30.0, connect=10.0)  # what the service gives its download client
_PORTS = {"http": 80, "https": 443}


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
        reader = Reader(
            request,
            port,
            targets,
            tls=tls_context() if scheme == "https" else None,
            connect=self._connect,
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
        )
        run_reader(reader.run, f"fetch {host}")
        try:
            status, fields = await reader.head()
            yield httpx.Response(status, headers=fields, stream=Body(reader), request=request)
        finally:
            reader.stop()


async def pour(response: httpx.Response, writer: Writer, check: Check, on_progress: Callable[[int], None]) -> None:
    """Have the thread of a `Fetcher.stream` response write its body into `writer` itself: no piece passes through
    the event loop, which only hears how many bytes came (for the attempt's pace). Each piece is `check`ed before
    it is written, and `check.finish()` is called at the end; their errors, and the writer's, are raised as they
    are, the connection's as httpx's. Only for a body sent as it is (no Content-Encoding): nothing decodes it."""
    stream = response.stream
    if not isinstance(stream, Body):
        raise TypeError("pour: the response does not come from Fetcher.stream")
    await stream.reader.pour(writer, check, on_progress)
