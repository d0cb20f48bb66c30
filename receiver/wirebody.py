"""A download's body as it comes off the wire: paced against a deadline, and decoded here, a bounded piece at a
time, never by httpx.

httpx decodes a `Content-Encoding` whole chunk by whole chunk: one 64 KiB read of a gzip bomb becomes ~64 MiB in
memory before anyone can count it, and `gzip, gzip` squares that (1,846 bytes on the wire, 1 GiB decoded, all of
it at once). So reelhook asks for `Accept-Encoding: identity`, and a server that encodes anyway gets this instead:

- more than one coding (`gzip, gzip`, `deflate, gzip`): refused before a byte of the body is read. Nothing honest
  stacks them, and each layer multiplies what the next one can produce.
- one `gzip` or `deflate`: decoded from `response.aiter_raw()` by `zlib.decompressobj` with a `max_length`, so no
  piece is larger than `CHUNK` whatever the ratio, and the size cap counts the decoded bytes as they are produced.
- any other coding (br, zstd, compress): refused; reelhook did not ask for it and has no bounded decoder for it.

Every raw chunk is reported to `on_wire` before it is decoded: `Pace` moves the attempt's deadline with it.
The result is a plain `httpx.Response` with no `Content-Encoding`, so whatever reads it (`mediafiles.save_body`)
sees decoded bytes and httpx has nothing left to decode.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import NoReturn

import anyio
import httpx

from receiver.mediafiles import CHUNK, Permanent, Transient, over_cap

ASK_FOR_IDENTITY = {"Accept-Encoding": "identity"}
_GZIP = 16 + zlib.MAX_WBITS  # zlib's way of saying "a gzip header and trailer around the deflate stream"
_WBITS = {"gzip": _GZIP, "x-gzip": _GZIP, "deflate": zlib.MAX_WBITS}


def plain_response(response: httpx.Response, *, max_bytes: int, on_wire: Callable[[int], None]) -> httpx.Response:
    """`response` with its body decoded here (at most one gzip or deflate layer) and never past `max_bytes`."""
    codings = [
        coding.strip().lower()
        for coding in response.headers.get_list("content-encoding", split_commas=True)
        if coding.strip().lower() not in ("", "identity")
    ]
    if len(codings) > 1:
        raise Permanent(
            f"refusing {response.url}: its body is encoded {len(codings)} times ({', '.join(codings)}); reelhook"
            " asks for identity and decodes at most one gzip or deflate layer"
        )
    headers = response.headers.copy()
    decoder: _Identity | _Inflater = _Identity()
    if codings:
        if codings[0] not in _WBITS:
            raise Permanent(
                f"refusing {response.url}: its Content-Encoding is {codings[0]}, which reelhook did not ask for"
                " (it asks for identity) and does not decode"
            )
        decoder = _Inflater(codings[0])
        del headers["content-encoding"]
        headers.pop("content-length", None)  # it counts the encoded bytes; WireBody checks it against those
    body = WireBody(response, decoder, max_bytes=max_bytes, on_wire=on_wire)
    return httpx.Response(response.status_code, headers=headers, stream=body, request=response.request)


class Pace:
    """An attempt's deadline: `head_start` seconds, plus one second for every `min_rate` bytes received, and never
    more than `ceiling` seconds in all. A per-read timeout alone lets a server that sends a byte now and then hold a
    download slot forever; this ends the attempt as soon as its average falls behind."""

    def __init__(self, scope: anyio.CancelScope, *, min_rate: int, ceiling: float, head_start: float) -> None:
        self._scope = scope
        self._min_rate = min_rate
        self._ceiling = ceiling
        self._head_start = head_start
        self._started = anyio.current_time()
        self._bytes = 0
        scope.deadline = self._started + min(ceiling, head_start)

    def received(self, size: int) -> None:
        self._bytes += size
        allowed = min(self._ceiling, self._head_start + self._bytes / self._min_rate)
        self._scope.deadline = self._started + allowed

    def overdue(self, url: str) -> str:
        elapsed = anyio.current_time() - self._started
        if elapsed >= self._ceiling:
            return (
                f"{url} took longer than {self._ceiling:g} s, the most a download may take (REELHOOK_DOWNLOAD_DEADLINE)"
            )
        return (
            f"{url} sent {self._bytes} bytes in {elapsed:.1f} s, slower than the minimum average of {self._min_rate}"
            " bytes/s (REELHOOK_DOWNLOAD_MIN_RATE)"
        )


class WireBody(httpx.AsyncByteStream):
    def __init__(
        self,
        response: httpx.Response,
        decoder: _Identity | _Inflater,
        *,
        max_bytes: int,
        on_wire: Callable[[int], None],
    ) -> None:
        self._response = response
        self._decoder = decoder
        self._max_bytes = max_bytes
        self._on_wire = on_wire
        self._decoded = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        response = self._response
        try:
            async for raw in response.aiter_raw():
                self._on_wire(len(raw))
                for piece in self._decoder.decode(raw):
                    yield self._counted(piece)
                    if self._decoded > self._max_bytes:
                        self._refuse()
            for piece in self._decoder.finish():
                yield self._counted(piece)
                if self._decoded > self._max_bytes:
                    self._refuse()
        except zlib.error as exc:
            raise Permanent(f"refusing {response.url}: its {self._decoder.name} body is corrupt: {exc}") from None
        expected = response.headers.get("content-length", "")
        # h11 already raises on a short body; this keeps the promise whatever the transport. It compares the bytes
        # on the wire (before any decoding), which is what Content-Length counts.
        if expected.isdigit() and response.num_bytes_downloaded != int(expected):
            raise Transient(f"body cut short: {response.num_bytes_downloaded} of {expected} bytes from {response.url}")

    def _counted(self, piece: bytes) -> bytes:
        """`piece`, or as much of it as the cap leaves room for: a block from the reader may be a MiB or more, and
        the bytes below the cap go on (to the store's `.part`) before the body is refused, as they always did."""
        room = self._max_bytes - self._decoded
        self._decoded += len(piece)
        if self._decoded > self._max_bytes:
            if room <= 0:
                self._refuse()
            return piece[:room]
        return piece

    def _refuse(self) -> NoReturn:
        sent = "" if self._decoder.name == "identity" else f" (sent as {self._decoder.name})"
        raise Permanent(f"refusing {self._response.url}{sent}: its body is {over_cap(self._max_bytes)}")

    async def aclose(self) -> None:
        await self._response.aclose()


class _Identity:
    name = "identity"

    def decode(self, data: bytes) -> Iterator[bytes]:
        if data:
            yield data

    def finish(self) -> Iterator[bytes]:
        return iter(())


class _Inflater:
    """zlib, asked for at most `CHUNK` bytes at a time: memory stays a window and a chunk, whatever the ratio."""

    def __init__(self, coding: str) -> None:
        self.name = coding
        self._wbits = _WBITS[coding]
        self._zlib = zlib.decompressobj(self._wbits)
        self._started = False

    def decode(self, data: bytes) -> Iterator[bytes]:
        while data and not self._zlib.eof:  # after the end, the rest is ignored, as httpx does (some servers pad)
            try:
                piece = self._zlib.decompress(data, CHUNK)
            except zlib.error:
                # "deflate" should be zlib-wrapped, and some servers send it raw; httpx accepts both, and so do we.
                if self._started or self._wbits != zlib.MAX_WBITS:
                    raise
                self._wbits = -zlib.MAX_WBITS
                self._zlib = zlib.decompressobj(self._wbits)
                continue
            self._started = True
            data = self._zlib.unconsumed_tail
            if piece:
                yield piece
        # zlib may hold back output of input it has already consumed (a match cut by max_length); drain it now, a
        # piece at a time, so the pieces stay in order and none is larger than CHUNK.
        while not self._zlib.eof:
            piece = self._zlib.decompress(b"", CHUNK)
            if not piece:
                break
            yield piece

    def finish(self) -> Iterator[bytes]:
        if not self._zlib.eof:
            raise Transient(f"the {self.name} stream ends early: the body was cut short")
        return iter(())
