"""The blocking side of a download's HTTP exchange (see `fetching`): http.client held to httpcore's limits, and its
errors told as httpx's, so the downloader judges them as it always has.
"""

from __future__ import annotations

import http.client
import io
import socket
import ssl
from collections.abc import Callable
from typing import Any, Protocol

import httpx

MAX_HEAD = 100 * 1024  # bytes of status line and headers (interim 1xx responses included): httpcore's own limit
POUR = 256 * 1024  # the most one read of a poured body asks for
Connect = Callable[[str, int, "float | None"], socket.socket]  # opens the TCP socket to a checked address


class Writer(Protocol):
    def write(self, data: bytes | memoryview) -> None: ...


class Check(Protocol):
    def take(self, piece: bytes | memoryview) -> None: ...

    def finish(self) -> None: ...


class Kept(Exception):
    """An error of a poured body's check or writer: raised in the event loop as itself, not as a network error."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def pour_body(
    response: http.client.HTTPResponse,
    writer: Writer,
    check: Check,
    *,
    progress: Callable[[int], None],
    stopped: Callable[[], bool],
) -> None:
    """Read the body into `writer`, each piece `check`ed first, telling `progress` each read's size.

    A body with a Content-Length (and not chunked) is read into one buffer, over and over: no allocation per read,
    which for a fresh 256 KiB bytes object costs its pages faulted in. Any other body goes through http.client's
    read1, which undoes the chunked framing."""
    buffer = memoryview(bytearray(POUR))
    left = None if response.chunked else response.length
    while not stopped():
        if left is None:
            piece: bytes | memoryview = response.read1(POUR)
        elif left:
            piece = buffer[: response.fp.readinto1(buffer[: min(POUR, left)])]
            left -= len(piece)
            if not piece:  # the peer closed early
                raise http.client.IncompleteRead(b"", left)
        else:
            piece = b""
        if not piece:
            if response.length and left is None:  # read1 ends quietly where the peer closed
                raise http.client.IncompleteRead(b"", response.length)
            try:
                check.finish()
            except Exception as exc:
                raise Kept(exc) from exc
            return
        try:
            check.take(piece)
            writer.write(piece)
        except Exception as exc:
            raise Kept(exc) from exc
        progress(len(piece))
    raise ConnectionAbortedError("cancelled")


class CappedResponse(http.client.HTTPResponse):
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


def shut(sock: socket.socket) -> None:
    """End the connection now, whoever else holds the socket; a read or write blocked on it returns."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already shut, or never connected
        pass


def as_httpx_error(error: Exception, request: httpx.Request, *, reading: bool) -> httpx.HTTPError:
    """The reader's error as the httpx error the downloader already knows how to judge."""
    where = request.url.netloc.decode("ascii")
    if isinstance(error, http.client.IncompleteRead):
        return httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body", request=request
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
