"""Media in a folder on this machine: each object either whole at its name or not there at all.

A stream goes to `{name}.part` while it is received and hashed; then fsync, a hard link to the final name (which,
unlike a rename, fails when the name is taken: this is what makes a write create-only), the `.part` unlinked, and an
fsync of the folder make both the bytes and the name durable. Receiving and writing overlap: the event loop takes
the next chunks while a worker thread hashes and writes the previous megabyte, handed over through a two-block
queue, so memory stays flat (a few MiB) whatever the file's size. `sink` is the same `.part` and the same commit for
a writer in a thread of its own (a download's reader thread writes its body there directly: `fetching.pour`). The
first chunk is written at once, so a crash during a download leaves a `.part` to find. Two writers of one key cannot
share a `.part`: each holds an exclusive `flock` on it while writing, and the second is refused (a crashed writer's
lock goes with its process). Small objects (sidecars, posters) are written to `{name}.tmp`, fsynced and renamed over
the old one.

The system calls the promise rests on (fsync, link, rename) go through a `Disk`, the operating system's unless a
caller passes another: a test hands in one that records them and checks their order, which no crash test can see.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import anyio

from storage.media import AlreadyExists, MediaError, ObjectInfo, Written, check_key

WRITE_BLOCK = 1024 * 1024  # what the writer thread takes at a time (measured: 64 KiB writes halve throughput)
READ_PIECE = 1024 * 1024


@dataclass(frozen=True)
class Disk:
    """Where durable writes send their fsync, link and rename; the operating system's unless a test says otherwise."""

    fsync: Callable[[int], None] = os.fsync
    replace: Callable[[Path, Path], None] = os.replace
    link: Callable[[Path, Path], None] = os.link


OS_DISK = Disk()


class LocalMediaStore:
    def __init__(self, root: Path, *, disk: Disk = OS_DISK) -> None:
        self.root = root
        self._disk = disk
        self._real_root: str | None = None  # the folder's path with its symlinks resolved, once it exists

    def path(self, key: str) -> Path:
        """Where `key` is written (not resolved: reads resolve it and check it stays inside the folder)."""
        return self.root.joinpath(*check_key(key).split("/"))

    def describe(self, key: str) -> str:
        return str(self.path(key))

    async def write(self, key: str, chunks: AsyncIterable[bytes]) -> Written:
        async with self.sink(key) as sink:
            await _stream_to(sink, chunks)
        return sink.written()

    @asynccontextmanager
    async def sink(self, key: str) -> AsyncIterator[Sink]:
        """A `.part` for `key` that one thread at a time writes (`Sink.write`), committed when the block ends
        without an error: fsync, create-only link, folder fsync. An error, or a cancel, leaves nothing at `key`;
        whoever writes from a thread of its own must have stopped writing before the block ends."""
        path = self.path(key)
        part = path.with_name(path.name + ".part")
        # One hop to the worker thread for the folder, the exists check, the open and the lock, and one for the
        # fsync, link and folder fsync: each hop costs the event loop about as much CPU as a 64 KiB block did.
        with anyio.CancelScope(shield=True):  # a cancel mid-hop must not lose the descriptor (and its lock)
            fd = await anyio.to_thread.run_sync(_open_part, path, part)
        try:
            sink = Sink(fd)
            yield sink
            await anyio.to_thread.run_sync(self._finish, fd, part, path)
        finally:
            # Synchronous on purpose (an await here would not run once the task is cancelled), and before the lock
            # goes with the descriptor, so the .part removed is this writer's.
            part.unlink(missing_ok=True)
            os.close(fd)

    def _finish(self, fd: int, part: Path, path: Path) -> None:
        self._disk.fsync(fd)
        try:
            self._disk.link(part, path)
        except FileExistsError:
            raise AlreadyExists(f"{path} already exists") from None
        part.unlink()  # at once: a crash between the link and this leaves a .part beside a whole file
        _sync_folder(path, self._disk)  # makes the new name durable, not only the data behind it

    async def discard_partial(self, key: str) -> None:
        """Remove a `.part` of `key` that no writer holds: left by a crash mid-write, or between link and unlink."""
        part = self.path(key).with_name(self.path(key).name + ".part")
        try:
            fd = os.open(part, os.O_WRONLY)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            part.unlink(missing_ok=True)
        except BlockingIOError:
            pass  # a writer is at work on it
        finally:
            os.close(fd)

    def resolved(self, key: str) -> Path | None:
        """The regular file `key` names, symlinks resolved, if it lies inside the folder and has the suffix the key
        has (a symlink must not lead out of the folder, nor turn `x.mp4` into a sidecar); None otherwise."""
        # Resolving the whole path asks the disk about every folder above the media folder too, twice (~16 lstat
        # calls, a quarter of a millisecond, for each download and each poster); the folder's own real path is
        # kept, and the key's few segments are looked at one by one. Any symlink among them: resolved in full.
        try:
            parts = check_key(key).split("/")
            if self._real_root is None:
                self._real_root = os.path.realpath(self.root, strict=True)
            path = self._real_root
            for part in parts:
                path = os.path.join(path, part)
                mode = os.lstat(path).st_mode
                if stat.S_ISLNK(mode):
                    return self._resolved_through_links(key)
        except (OSError, ValueError):  # missing, a name too long, a bad key
            return None
        return Path(path) if stat.S_ISREG(mode) else None

    def _resolved_through_links(self, key: str) -> Path | None:
        try:
            root = self.root.resolve(strict=True)
            path = self.path(key).resolve(strict=True)
        except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, a name too long, a bad key
            return None
        same_kind = path.suffix.lower() == PurePosixPath(key).suffix.lower()
        return path if path.is_relative_to(root) and same_kind and path.is_file() else None

    async def stat(self, key: str) -> ObjectInfo | None:
        path = self.resolved(key)
        if path is None:
            return None
        try:
            return ObjectInfo(size=path.stat().st_size)
        except OSError:
            return None

    async def exists(self, key: str) -> bool:
        return self.resolved(key) is not None

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self.resolved(key)
        if path is None:
            raise FileNotFoundError(self.describe(key))
        async with await anyio.open_file(path, "rb") as file:
            await file.seek(start)
            left = None if end is None else max(0, end - start)
            while left is None or left > 0:
                piece = await file.read(READ_PIECE if left is None else min(READ_PIECE, left))
                if not piece:
                    return
                if left is not None:
                    left -= len(piece)
                yield piece

    async def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    async def put_bytes(self, key: str, data: bytes) -> None:
        path = self.path(key)
        await anyio.to_thread.run_sync(_write_atomically, path, data, self._disk, True)

    async def get_bytes(self, key: str) -> bytes | None:
        path = self.resolved(key)
        return None if path is None else await anyio.Path(path).read_bytes()

    @asynccontextmanager
    async def local_file(self, key: str) -> AsyncIterator[Path]:
        path = self.resolved(key)
        if path is None:
            raise FileNotFoundError(self.describe(key))
        yield path


class Sink:
    """The bytes of one object on their way to its `.part`: hashed and written as given, with no copy and no
    buffer (what is written is in the file at once), by one thread at a time."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        self._digest.update(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self.size += len(data)

    def written(self) -> Written:
        return Written(size=self.size, sha256=self._digest.hexdigest())


async def _stream_to(sink: Sink, chunks: AsyncIterable[bytes]) -> None:
    # Blocks travel as lists of the chunks received, not glued into one: the event loop copies no byte on the way.
    send, receive = anyio.create_memory_object_stream[list[bytes]](2)

    async def write_blocks() -> None:
        async with receive:
            async for block in receive:
                await anyio.to_thread.run_sync(_write_all, sink, block)

    async def read_blocks() -> None:
        first = True
        async with send:
            block: list[bytes] = []
            queued = 0
            async for chunk in chunks:
                if first:  # the first chunk goes to disk before the next is asked for
                    first = False
                    await anyio.to_thread.run_sync(_write_all, sink, [chunk])
                    continue
                block.append(chunk)
                queued += len(chunk)
                if queued >= WRITE_BLOCK:
                    await send.send(block)
                    block, queued = [], 0
            if block:
                await send.send(block)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(write_blocks)
            await read_blocks()
    except BaseExceptionGroup as group:  # one reader, one writer: report the cause as itself
        # When the writer fails (a full disk), the reader may trip over the closed stream first: the writer's
        # error is the one to report, not the reader's BrokenResourceError.
        causes = [e for e in group.exceptions if not isinstance(e, anyio.BrokenResourceError)]
        raise (causes or group.exceptions)[0] from None


def _write_all(sink: Sink, block: list[bytes]) -> None:
    for chunk in block:
        sink.write(chunk)


def _open_part(path: Path, part: Path) -> int:
    """The descriptor of `part`, locked by this writer and emptied; AlreadyExists if `path` is taken already."""
    if path.exists():
        raise AlreadyExists(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Opened without truncating: the lock decides who may write, and only its holder empties the file.
    fd = os.open(part, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise MediaError(f"{part} is being written by another download") from None
    os.ftruncate(fd, 0)
    return fd


def _flush_and_sync(file: BinaryIO, disk: Disk) -> None:
    file.flush()
    disk.fsync(file.fileno())


async def write_atomically(path: Path, data: bytes, *, disk: Disk = OS_DISK) -> None:
    """`data` at `path`, whole: written to `{name}.tmp`, fsynced, renamed over `path`, the folder fsynced."""
    await anyio.to_thread.run_sync(_write_atomically, path, data, disk)


def _write_atomically(path: Path, data: bytes, disk: Disk, make_folder: bool = False) -> None:
    if make_folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as file:
            file.write(data)
            _flush_and_sync(file, disk)
        disk.replace(tmp, path)
        _sync_folder(path, disk)
    finally:
        tmp.unlink(missing_ok=True)


def _sync_folder(path: Path, disk: Disk) -> None:
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        disk.fsync(directory)
    finally:
        os.close(directory)
