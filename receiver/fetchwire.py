"""The blocking side of a download's HTTP exchange (see `fetching`): http.client held to httpcore's limits, and its
errors told as httpx's, so the downloader judges them as it always has.
"""

from __future__ import annotations

import http.client
import io
import socket
import ssl
from typing import Any

import httpx

MAX_HEAD = 100 * 1024  # bytes of status line and headers (interim 1xx responses included): httpcore's own limit


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
