"""A downloaded body, checked while it streams, on its way into the media store.

`save_body` hands the store (`storage.media`) an async stream of the body's chunks, and the stream itself refuses
what must not be kept: past the size cap (counting decoded bytes, so a small gzip body cannot unpack past it), not
the kind of file its name says (`filekinds`), cut short of its Content-Length, or empty. A refusal is raised from
inside the stream, so the store never commits it: nothing appears at the key. The store hashes and writes the
chunks as they come, with flat memory whatever the size, and returns the sha256 and size.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import httpx

from receiver.filekinds import HEAD_BYTES, why_not_kind
from storage.media import MediaStore, Written

CHUNK = 64 * 1024  # the most one decoded piece of a gzip or deflate body holds (wirebody)
MEDIA_EXTENSIONS = frozenset({"mp4", "mov", "webm", "png", "jpg", "jpeg", "webp", "gif"})


class Permanent(Exception):
    """Trying again will not help."""


class Transient(Exception):
    """Worth another attempt later."""


async def save_body(
    response: httpx.Response, media: MediaStore, key: str, fault: Callable[[str], None], max_bytes: int
) -> Written:
    """Stream the body into `media` at `key` (create-only), checked as it goes; return its size and sha256."""
    return await media.write(key, checked_body(response, key, fault, max_bytes))


async def checked_body(
    response: httpx.Response, key: str, fault: Callable[[str], None], max_bytes: int
) -> AsyncIterator[bytes]:
    """The body's chunks; raises (so the store keeps nothing) for a body that must not be kept."""
    check = BodyCheck(str(response.url), key, max_bytes)
    # The blocks go on as they come (a reader's block is up to about a MiB; a decoded piece at most CHUNK), never
    # cut again: cutting each MiB into 64 KiB pieces, and the store gluing them back, cost the event loop a fifth
    # of a download's CPU. Memory stays bounded by the reader's hand-off, not by the piece size.
    async for chunk in response.aiter_bytes():
        check.take(chunk)
        yield chunk
        if check.size == len(chunk):  # the store has taken the first chunk: a crash now leaves a partial write
            fault("download.streaming")
    expected = response.headers.get("content-length")
    # h11 already raises on a short body; this keeps the promise whatever the transport. It compares the bytes
    # on the wire (before any content-decoding), which is what Content-Length counts.
    if expected is not None and expected.isdigit() and response.num_bytes_downloaded != int(expected):
        raise Transient(f"body cut short: {response.num_bytes_downloaded} of {expected} bytes from {response.url}")
    check.finish()


class BodyCheck:
    """What a body must pass as it streams, piece by piece, whoever reads it: `checked_body` in the event loop, or
    a reader thread that writes the body into the store itself (`fetching.pour`). `take` raises before the piece
    that breaks a rule is kept, `finish` once the body has ended."""

    def __init__(self, url: str, key: str, max_bytes: int) -> None:
        self._url = url
        self._extension = PurePosixPath(key).suffix.lstrip(".")
        self._max_bytes = max_bytes
        self._head = b""
        self.size = 0

    def take(self, piece: bytes | memoryview) -> None:
        self.size += len(piece)
        if self.size > self._max_bytes:  # counts decoded bytes: a small gzip body cannot unpack past the cap
            raise Permanent(f"refusing {self._url}: its body is {over_cap(self._max_bytes)}")
        if len(self._head) < HEAD_BYTES:
            self._head += bytes(piece[: HEAD_BYTES - len(self._head)])
            if len(self._head) == HEAD_BYTES:
                self._check_kind()

    def finish(self) -> None:
        if self.size == 0:
            raise Transient(f"empty body from {self._url}")
        if len(self._head) < HEAD_BYTES:
            self._check_kind()

    def _check_kind(self) -> None:
        reason = why_not_kind(self._extension, self._head)
        if reason is not None:
            raise Permanent(f"refusing {self._url}: {reason}")


def over_cap(max_bytes: int) -> str:
    return f"over the download cap of {max_bytes} bytes (REELHOOK_MAX_DOWNLOAD_BYTES raises it)"


def media_extension(url: str) -> str:
    """The file's extension, from its URL (TTAPI's image tiles are .png); .mp4 when the URL does not say."""
    suffix = PurePosixPath(urlsplit(url).path).suffix.lower().lstrip(".")
    return suffix if suffix in MEDIA_EXTENSIONS else "mp4"
