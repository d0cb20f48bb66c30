"""Writing a downloaded file so that it is either whole at its name or not there at all.

The body streams to `{name}.part` while it is received, hashed and checked (size cap, file signature); then fsync,
an atomic rename, and an fsync of the folder make both the bytes and the name durable. Receiving and writing overlap:
the event loop takes the next chunks while a worker thread hashes and writes the previous megabyte, handed over
through a two-block queue, so memory stays flat (a few MiB) whatever the file's size. The sidecar JSON is written the
same way (`write_atomically`).

The two system calls the promise rests on, fsync and rename, go through a `Disk` (os.fsync and os.replace unless a
caller passes another): a test hands in one that records them and checks their order, which no crash test can see.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import anyio
import httpx

from receiver.filekinds import HEAD_BYTES, why_not_kind

CHUNK = 64 * 1024
WRITE_BLOCK = 1024 * 1024  # what the writer thread takes at a time (measured: 64 KiB writes halve throughput)
MEDIA_EXTENSIONS = frozenset({"mp4", "mov", "webm", "png", "jpg", "jpeg", "webp", "gif"})


@dataclass(frozen=True)
class Disk:
    """Where durable writes send their fsync and rename; the operating system's unless a test says otherwise."""

    fsync: Callable[[int], None] = os.fsync
    replace: Callable[[Path, Path], None] = os.replace


OS_DISK = Disk()


class Permanent(Exception):
    """Trying again will not help."""


class Transient(Exception):
    """Worth another attempt later."""


async def save_body(
    response: httpx.Response, path: Path, fault: Callable[[str], None], max_bytes: int, *, disk: Disk = OS_DISK
) -> tuple[int, str]:
    """Stream the body to `{path}.part`, hashing it, then fsync and rename it into place.

    Reading and writing overlap: the event loop receives (and checks) the body while a worker thread hashes and
    writes the previous megabyte, handed over through a two-block queue, so memory stays flat (a few MiB) and
    neither side waits for the other on every chunk.
    """
    part = path.with_name(path.name + ".part")
    digest = hashlib.sha256()
    size = 0
    head = b""
    await anyio.Path(path.parent).mkdir(parents=True, exist_ok=True)
    try:
        with open(part, "wb") as file:
            send, receive = anyio.create_memory_object_stream[bytes](2)

            async def write_blocks() -> None:
                async with receive:
                    async for block in receive:
                        await anyio.to_thread.run_sync(_hash_and_write, digest, file, block)

            async def read_blocks() -> None:
                nonlocal size, head
                async with send:
                    block = bytearray()
                    async for chunk in response.aiter_bytes(CHUNK):
                        size += len(chunk)
                        if size > max_bytes:  # counts decoded bytes: a small gzip body cannot unpack past the cap
                            raise Permanent(f"refusing {response.url}: its body is {over_cap(max_bytes)}")
                        if len(head) < HEAD_BYTES:
                            head += chunk[: HEAD_BYTES - len(head)]
                            if len(head) == HEAD_BYTES:
                                _check_kind(response, path, head)
                        if size == len(chunk):  # the first chunk goes to disk at once: a crash now leaves a .part
                            await anyio.to_thread.run_sync(_hash_and_write, digest, file, chunk)
                            file.flush()
                            fault("download.streaming")
                            continue
                        block += chunk
                        if len(block) >= WRITE_BLOCK:
                            await send.send(bytes(block))
                            block.clear()
                    if block:
                        await send.send(bytes(block))

            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(write_blocks)
                    await read_blocks()
            except BaseExceptionGroup as group:  # one reader, one writer: report the cause as itself
                # When the writer fails (a full disk), the reader may trip over the closed stream first: the
                # writer's error is the one to report, not the reader's BrokenResourceError.
                causes = [e for e in group.exceptions if not isinstance(e, anyio.BrokenResourceError)]
                raise (causes or group.exceptions)[0] from None
            await anyio.to_thread.run_sync(_flush_and_sync, file, disk)
        expected = response.headers.get("content-length")
        # h11 already raises on a short body; this keeps the promise whatever the transport. It compares the bytes
        # on the wire (before any content-decoding), which is what Content-Length counts.
        if expected is not None and expected.isdigit() and response.num_bytes_downloaded != int(expected):
            raise Transient(f"body cut short: {response.num_bytes_downloaded} of {expected} bytes from {response.url}")
        if size == 0:
            raise Transient(f"empty body from {response.url}")
        if len(head) < HEAD_BYTES:
            _check_kind(response, path, head)
        await anyio.to_thread.run_sync(_replace, part, path, disk)
    finally:
        # Synchronous on purpose: an await here would not run once the task is cancelled. Unlinking is quick.
        part.unlink(missing_ok=True)
    return size, digest.hexdigest()


def _hash_and_write(digest: Any, file: BinaryIO, block: bytes) -> None:
    digest.update(block)
    file.write(block)


def _flush_and_sync(file: BinaryIO, disk: Disk) -> None:
    file.flush()
    disk.fsync(file.fileno())


def _check_kind(response: httpx.Response, path: Path, head: bytes) -> None:
    reason = why_not_kind(path.suffix.lstrip("."), head)
    if reason is not None:
        raise Permanent(f"refusing {response.url}: {reason}")


def over_cap(max_bytes: int) -> str:
    return f"over the download cap of {max_bytes} bytes (REELHOOK_MAX_DOWNLOAD_BYTES raises it)"


async def write_atomically(path: Path, data: bytes, *, disk: Disk = OS_DISK) -> None:
    def write() -> None:
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as file:
                file.write(data)
                _flush_and_sync(file, disk)
            _replace(tmp, path, disk)
        finally:
            tmp.unlink(missing_ok=True)

    await anyio.to_thread.run_sync(write)


def _replace(source: Path, target: Path, disk: Disk) -> None:
    disk.replace(source, target)
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        disk.fsync(directory)  # makes the new name durable, not only the data behind it
    finally:
        os.close(directory)


def media_extension(url: str) -> str:
    """The file's extension, from its URL (TTAPI's image tiles are .png); .mp4 when the URL does not say."""
    suffix = PurePosixPath(urlsplit(url).path).suffix.lower().lstrip(".")
    return suffix if suffix in MEDIA_EXTENSIONS else "mp4"
