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

import json
import logging
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx

from receiver.filekinds import why_not_media_type
from receiver.mediafiles import Permanent, Transient, media_extension, over_cap, save_body, write_atomically
from receiver.netguard import UnsafeURL, check_url
from storage import Job, Store, Video
from submitter.backoff import next_attempt_at

logger = logging.getLogger("reelhook.downloads")

MAX_REDIRECTS = 5
MAX_BYTES = 2 * 1024**3


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
            await write_atomically(path.with_suffix(".json"), _sidecar(job, video, size, sha256, self._clock()))
        except (UnsafeURL, Permanent, httpx.InvalidURL) as exc:
            await self._fail(video, str(exc))
            return True
        except Transient as exc:
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
                    return await save_body(response, path, self._fault, self._max_bytes)
                if status in (408, 429) or status >= 500:
                    raise Transient(f"HTTP {status} from {url}")
                raise Permanent(f"HTTP {status} from {url}")
        raise Permanent(f"more than {MAX_REDIRECTS} redirects, last to {url}")

    def _check_head(self, response: httpx.Response) -> None:
        """Refuse, before reading the body, a response that says it is too big or not media."""
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > self._max_bytes:
            raise Permanent(f"refusing {response.url}: its Content-Length, {length}, is {over_cap(self._max_bytes)}")
        reason = why_not_media_type(response.headers.get("content-type"))
        if reason is not None:
            raise Permanent(f"refusing {response.url}: {reason}")


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


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
