"""The download worker: fetches each finished job's videos into the media directory.

The order is download → fsync → rename → sidecar → record, and the videos table, not the disk, is the truth:
a video is downloaded when its row says so, and the row says so only once both files are durably in place.
What a crash at each point leaves behind, and why the next attempt (the row is still pending) is safe:

- while streaming, or before the fsync: `{index}.mp4.part`, which the next attempt truncates and rewrites.
- after the fsync, before the rename: the same, complete, `.part`; it is written again, never trusted.
- after the rename, before the sidecar: a whole `{index}.mp4` (the fsync before the rename means power loss cannot
  leave the new name pointing at unwritten blocks; the directory fsync after it makes the name itself durable).
  The next attempt replaces it atomically, so a reader sees the old file or the new one, never half of each.
- after the sidecar, before the record: both files; the next attempt writes both again and records.
- after the record: done. The row and its `video.downloaded` event commit together, so the rules never see a
  video without its file, and never miss one that has its file.

Recording first would be the unsafe order: a crash would leave a downloaded row, and an event, for a missing file.

Failures split in two. Permanent ones fail the video at once: an unsafe URL, a 4xx such as an expired CDN link, a
body over `max_bytes`, or one that is not media (see `filekinds`; a refused body is never renamed into place).
Transient ones (5xx, 408, 429, a dropped connection, a short body, a full disk) retry with backoff until
`max_attempts`. Redirects are followed by hand so that each hop passes `check_url` before a byte is requested;
`check_url` gives the clear message early, and the client from `guarded_http` checks the address again as it
connects, where DNS cannot answer differently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import anyio
import httpx

from receiver.filekinds import HEAD_BYTES, why_not_kind, why_not_media_type
from receiver.netguard import UnsafeURL, check_url
from storage import Job, Store, Video
from submitter.backoff import next_attempt_at

logger = logging.getLogger("reelhook.downloads")

CHUNK = 64 * 1024
WRITE_BLOCK = 1024 * 1024  # what the writer thread takes at a time (measured: 64 KiB writes halve throughput)
MEDIA_EXTENSIONS = frozenset({"mp4", "mov", "webm", "png", "jpg", "jpeg", "webp", "gif"})
MAX_REDIRECTS = 5
MAX_BYTES = 2 * 1024**3


class _Permanent(Exception):
    """Trying again will not help."""


class _Transient(Exception):
    """Worth another attempt later."""


class Downloader:
    def __init__(
        self,
        store: Store,
        http: httpx.AsyncClient,
        media_dir: Path,
        *,
        allow_private: bool = False,
        allowed_origins: Collection[str] = (),
        concurrency: int = 4,
        max_attempts: int = 8,
        max_bytes: int = MAX_BYTES,
        on_recorded: Callable[[], None] = lambda: None,
        fault: Callable[[str], None] = lambda point: None,
    ) -> None:
        if concurrency < 1 or max_attempts < 1 or max_bytes < 1:
            raise ValueError("Downloader: concurrency, max_attempts and max_bytes must be at least 1")
        self._store = store
        self._http = http
        self._media_dir = media_dir
        self._allow_private = allow_private
        self._allowed_origins = tuple(allowed_origins)
        self._concurrency = concurrency
        self._max_attempts = max_attempts
        self._max_bytes = max_bytes
        self._on_recorded = on_recorded
        self._fault = fault
        self._clock = store.clock
        # Shared by every run_once in flight: they draw from one pool of slots and never pick the same video.
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._claim_lock = anyio.Lock()
        self._in_progress: set[tuple[str, int]] = set()

    async def run_once(self) -> int:
        """Download every video that is due now; return how many were handled (downloaded, retried or failed).

        A video retried during this run waits for a later run, even if its retry time has already come.
        """
        handled: list[tuple[str, int]] = []
        retried: set[tuple[str, int]] = set()
        async with anyio.create_task_group() as tg:
            for _ in range(self._concurrency):
                tg.start_soon(self._work, retried, handled)
        return len(handled)

    async def next_due(self) -> float | None:
        return await self._store.next_download_at()

    async def _work(self, retried: set[tuple[str, int]], handled: list[tuple[str, int]]) -> None:
        while True:
            async with self._limiter:
                async with self._claim_lock:  # due_downloads awaits: claim under a lock, or two workers race
                    due = await self._store.due_downloads(limit=1, exclude=self._in_progress | retried)
                    if not due:
                        return
                    video = due[0]
                    key = (video.job_id, video.index)
                    self._in_progress.add(key)
                try:
                    if not await self._handle(video):
                        retried.add(key)
                finally:
                    self._in_progress.discard(key)
                handled.append(key)

    async def _handle(self, video: Video) -> bool:
        """One attempt at one video; False when it is left pending for a retry."""
        job = await self._store.get_job(video.job_id)
        if job is None:  # the foreign key makes this impossible; fail loudly rather than loop
            await self._fail(video, f"job {video.job_id} does not exist")
            return True
        path = self._media_dir / job.root_id / job.id / f"{video.index}.{media_extension(video.url)}"
        try:
            size, sha256 = await self._fetch(video.url, path)
            await _write_atomically(path.with_suffix(".json"), _sidecar(job, video, size, sha256, self._clock()))
        except (UnsafeURL, _Permanent, httpx.InvalidURL) as exc:
            await self._fail(video, str(exc))
            return True
        except _Transient as exc:
            return await self._retry(video, str(exc))
        except httpx.RequestError as exc:  # connection refused or reset, timeouts, a body cut short
            return await self._retry(video, f"{type(exc).__name__} fetching {exc.request.url}: {exc}")
        except OSError as exc:
            return await self._retry(video, f"cannot write {path}: {exc} (is the disk full?)")
        except Exception as exc:  # a bug, or an httpx error we did not foresee: back off rather than hammer the CDN
            logger.exception("job %s video %d: unexpected error", video.job_id, video.index)
            return await self._retry(video, f"unexpected {type(exc).__name__} fetching {video.url}: {exc}")
        recorded = await self._store.record_download(
            video.job_id, video.index, path=str(path.absolute()), sha256=sha256, size=size
        )
        logger.info("job %s video %d: %d bytes, sha256 %s…", video.job_id, video.index, size, sha256[:12])
        if recorded:
            self._on_recorded()
        return True

    async def _retry(self, video: Video, error: str) -> bool:
        attempt = video.attempts + 1
        if attempt >= self._max_attempts:
            await self._fail(video, f"{error} (gave up after {attempt} attempts)")
            return True
        logger.warning("job %s video %d: attempt %d failed, will retry: %s", video.job_id, video.index, attempt, error)
        retry_at = next_attempt_at(attempt, self._clock())
        await self._store.retry_download(video.job_id, video.index, error=error, retry_at=retry_at)
        return False

    async def _fail(self, video: Video, error: str) -> None:
        logger.warning("job %s video %d: failed: %s", video.job_id, video.index, error)
        await self._store.fail_download(video.job_id, video.index, error=error)

    async def _fetch(self, url: str, path: Path) -> tuple[int, str]:
        """Stream `url` to `path`, following redirects by hand; return its size and sha256."""
        for _ in range(MAX_REDIRECTS + 1):
            await check_url(url, allow_private=self._allow_private, allowed_origins=self._allowed_origins)
            async with self._http.stream("GET", url, follow_redirects=False) as response:
                if response.is_redirect:
                    url = str(response.url.join(response.headers["location"]))
                    continue
                status = response.status_code
                if status == 200:
                    self._check_head(response)
                    return await _save(response, path, self._fault, self._max_bytes)
                if status in (408, 429) or status >= 500:
                    raise _Transient(f"HTTP {status} from {url}")
                raise _Permanent(f"HTTP {status} from {url}")
        raise _Permanent(f"more than {MAX_REDIRECTS} redirects, last to {url}")

    def _check_head(self, response: httpx.Response) -> None:
        """Refuse, before reading the body, a response that says it is too big or not media."""
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > self._max_bytes:
            raise _Permanent(f"refusing {response.url}: its Content-Length, {length}, is {_over(self._max_bytes)}")
        reason = why_not_media_type(response.headers.get("content-type"))
        if reason is not None:
            raise _Permanent(f"refusing {response.url}: {reason}")


async def _save(response: httpx.Response, path: Path, fault: Callable[[str], None], max_bytes: int) -> tuple[int, str]:
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
                            raise _Permanent(f"refusing {response.url}: its body is {_over(max_bytes)}")
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
            except BaseExceptionGroup as group:  # one reader, one writer: report the first failure as itself
                raise group.exceptions[0] from None
            await anyio.to_thread.run_sync(_flush_and_sync, file)
        expected = response.headers.get("content-length")
        # h11 already raises on a short body; this keeps the promise whatever the transport. It compares the bytes
        # on the wire (before any content-decoding), which is what Content-Length counts.
        if expected is not None and expected.isdigit() and response.num_bytes_downloaded != int(expected):
            raise _Transient(f"body cut short: {response.num_bytes_downloaded} of {expected} bytes from {response.url}")
        if size == 0:
            raise _Transient(f"empty body from {response.url}")
        if len(head) < HEAD_BYTES:
            _check_kind(response, path, head)
        await anyio.to_thread.run_sync(_replace, part, path)
    finally:
        # Synchronous on purpose: an await here would not run once the task is cancelled. Unlinking is quick.
        part.unlink(missing_ok=True)
    return size, digest.hexdigest()


def _hash_and_write(digest: Any, file: BinaryIO, block: bytes) -> None:
    digest.update(block)
    file.write(block)


def _flush_and_sync(file: BinaryIO) -> None:
    file.flush()
    os.fsync(file.fileno())


def _check_kind(response: httpx.Response, path: Path, head: bytes) -> None:
    reason = why_not_kind(path.suffix.lstrip("."), head)
    if reason is not None:
        raise _Permanent(f"refusing {response.url}: {reason}")


def _over(max_bytes: int) -> str:
    return f"over the download cap of {max_bytes} bytes (REELHOOK_MAX_DOWNLOAD_BYTES raises it)"


async def _write_atomically(path: Path, data: bytes) -> None:
    def write() -> None:
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            _replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    await anyio.to_thread.run_sync(write)


def _replace(source: Path, target: Path) -> None:
    os.replace(source, target)
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # makes the new name durable, not only the data behind it
    finally:
        os.close(directory)


def _sidecar(job: Job, video: Video, size: int, sha256: str, now: float) -> bytes:
    fields: dict[str, Any] = {
        "provider": job.provider,
        "job_id": job.id,
        "provider_job_id": job.provider_job_id,
        "root_id": job.root_id,
        "parent_id": job.parent_id,
        "rule": job.rule,
        "action": job.action,
        "prompt": job.prompt,
        "index": video.index,
        "source_url": video.url,
        "sha256": sha256,
        "bytes": size,
        "downloaded_at": _iso(now),
        "created_at": _iso(job.created_at),
    }
    return (json.dumps(fields, indent=2, ensure_ascii=False) + "\n").encode()


def media_extension(url: str) -> str:
    """The file's extension, from its URL (TTAPI's image tiles are .png); .mp4 when the URL does not say."""
    suffix = PurePosixPath(urlsplit(url).path).suffix.lower().lstrip(".")
    return suffix if suffix in MEDIA_EXTENSIONS else "mp4"


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
