"""Where downloaded media live: a folder on this machine, or an S3-compatible bucket.

A `MediaStore` holds objects under keys such as `root/job/0.mp4` (the videos table records the key, never where
the store happens to keep it). Its promises, the same on both engines:

- `write` takes a stream and is create-only: an object appears at its key whole or not at all, and never replaces
  one that is there (a second write raises `AlreadyExists` and the first object is left as it was). The stream is
  hashed as it passes, so the sha256 and size come back without reading the object again, and memory stays flat
  whatever the size. A stream that raises midway leaves nothing at the key.
- `put_bytes` writes a small object (a sidecar's JSON, a poster) atomically, replacing what was there: a retry
  writes a newer sidecar over the last attempt's.
- `read` yields a byte range in bounded pieces; `stat` and `exists` ask without reading.

`LocalMediaStore` is the durable-file dance (`.part`, fsync, create-only link, folder fsync); `S3MediaStore` is a
multipart upload to a staging key and a create-only server-side copy (see its module for why).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

SIDECAR_SUFFIX = ".json"


class MediaError(Exception):
    """The media store failed (a full disk, a bucket that answers 5xx): worth another attempt later."""


class AlreadyExists(MediaError):
    """A create-only write found an object at its key; that object is left as it was."""


@dataclass(frozen=True)
class Written:
    size: int
    sha256: str


@dataclass(frozen=True)
class ObjectInfo:
    size: int


class MediaStore(Protocol):
    async def write(self, key: str, chunks: AsyncIterable[bytes]) -> Written:
        """Store the stream at `key`, create-only; raises AlreadyExists (and keeps the old object) if one is there."""
        ...

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes `start` up to `end` (exclusive; None for the end of the object), in bounded pieces."""
        ...

    async def stat(self, key: str) -> ObjectInfo | None: ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None: ...

    async def discard_partial(self, key: str) -> None:
        """Remove what an interrupted write of `key` left behind and nobody is still writing (a local `.part`)."""
        ...

    async def put_bytes(self, key: str, data: bytes) -> None:
        """Write a small object atomically, replacing any object at `key`."""
        ...

    async def get_bytes(self, key: str) -> bytes | None: ...

    def local_file(self, key: str) -> AbstractAsyncContextManager[Path]:
        """A file on this machine holding the object, for tools that want a path (PyAV); removed after if a copy."""
        ...

    def describe(self, key: str) -> str:
        """Where `key` is, for a person reading an error: a path or an s3:// URL."""
        ...


def check_key(key: str) -> str:
    """`key` if it is a relative path of plain segments; ValueError otherwise (no `..`, `.`, empty, NUL or `\\`)."""
    parts = key.split("/")
    if any(part in ("", ".", "..") or "\x00" in part or "\\" in part for part in parts):
        raise ValueError(f"not a media key: {key!r}")
    return key


def sidecar_key(key: str) -> str:
    """`root/job/0.mp4` → `root/job/0.json`: the sidecar JSON stored beside each object."""
    return str(PurePosixPath(key).with_suffix(SIDECAR_SUFFIX))


async def digest(media: MediaStore, key: str) -> Written:
    """The size and sha256 of what is stored at `key`, read a piece at a time."""
    hashed = hashlib.sha256()
    size = 0
    async for piece in media.read(key):
        hashed.update(piece)
        size += len(piece)
    return Written(size=size, sha256=hashed.hexdigest())


async def put_sidecar(media: MediaStore, key: str, data: bytes) -> None:
    await media.put_bytes(sidecar_key(key), data)


async def get_sidecar(media: MediaStore, key: str) -> bytes | None:
    return await media.get_bytes(sidecar_key(key))


__all__ = [
    "AlreadyExists",
    "MediaError",
    "MediaStore",
    "ObjectInfo",
    "Written",
    "check_key",
    "digest",
    "get_sidecar",
    "put_sidecar",
    "sidecar_key",
]
