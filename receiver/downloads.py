"""The download worker: fetches each finished job's videos into the media store (a folder or a bucket).

Each video has a key, `{root}/{job}/{index}.{ext}`, which is what the videos table records. The order is stream
into the store (create-only) → sidecar → record, and the videos table, not the store, is the truth: a video is
downloaded when its row says so, and the row says so only once the object and its sidecar are in place. What a
crash at each point leaves behind, and why the next attempt (the row is still pending) is safe:

- while streaming: nothing at the key (a local `{index}.mp4.part`, which the next attempt truncates and rewrites;
  an unfinished multipart upload on S3, which never becomes an object).
- after the object is in place, before the sidecar: a whole object. A write is create-only (a re-delivered
  callback, or a second instance, cannot overwrite what is there), and the store only ever commits a whole,
  checked body, so the next attempt adopts it: it hashes what is there instead of fetching it again.
- after the sidecar, before the record: both; the next attempt adopts the object, writes the sidecar again and
  records.
- after the record: done. The row and its `video.downloaded` event commit together, so the rules never see a
  video without its file, and never miss one that has its file.

Recording first would be the unsafe order: a crash would leave a downloaded row, and an event, for a missing file.

Videos are claimed in the store (`claim_downloads`), so one worker of one instance fetches each: a claim is a
lease of `lease` seconds under a claim id, renewed every third of it while the video waits for a slot or is
being fetched, however long the file takes. An instance that dies stops renewing, and its videos go to the others
when their leases end. The outcome (`record_download`, `retry_download`, `fail_download`) is recorded only under the
claim id: a worker that stalled past its lease and whose video was claimed again records nothing, and a renewal
that finds its claim taken over cancels the attempt.

Failures split in two. Permanent ones fail the video at once: an unsafe URL, a 4xx such as an expired CDN link, a
body over `max_bytes` (counted decoded), one encoded twice or in a coding reelhook does not decode, or one that is not
media (see `filekinds`; a refused body is never renamed into place). Transient ones (5xx, 408, 429, a dropped
connection, a short body, an attempt past its deadline, a full disk) retry with backoff until `max_attempts`.
Redirects are followed by hand so that each hop passes `check_url` before a byte is requested; `check_url` gives the
clear message early, and the reader from `fetching` (a thread per download, by `guarded_http`'s rules) checks the
address again as it connects, where DNS cannot answer differently.

Anyone with a valid hook token can name the URL, so an origin may be hostile, and three things keep one from hurting
the rest. The body is decoded by `wirebody`, a bounded piece at a time, so memory stays flat under a decompression
bomb. Each attempt has a deadline (`wirebody.Pace`: a head start, then one second per `min_rate` bytes received,
never past `deadline`), so a server that sends a byte now and then loses its slot and is retried later. And at most
`per_origin` of the `concurrency` slots fetch from one scheme://host:port at once: the videos of a full origin are
held (claimed) while slots take others rather than wait on them, and a run whose other slots sit idle beside a slow
download takes the videos that `wake()` announces, so other jobs' files keep arriving while one origin drips.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx

from receiver.fetching import fetcher_for
from receiver.mediafiles import Permanent, Transient, media_extension
from receiver.metrics import Metrics
from receiver.netguard import UnsafeURL, origin
from receiver.posterqueue import PosterQueue
from receiver.sidecars import sidecar_json
from receiver.videoobjects import VideoObjects
from storage import Job, StoreProtocol, Video
from storage.media import MediaError, MediaStore, put_sidecar
from storage.media.local import LocalMediaStore
from submitter.backoff import next_attempt_at

logger = logging.getLogger("reelhook.downloads")

MAX_BYTES = 2 * 1024**3
MIN_RATE = 32 * 1024  # bytes/s, averaged over an attempt (REELHOOK_DOWNLOAD_MIN_RATE)
DEADLINE = 600.0  # seconds, the most any attempt may take (REELHOOK_DOWNLOAD_DEADLINE)
HEAD_START = 15.0  # seconds before MIN_RATE counts: resolving, connecting, TLS, redirects, the first byte
PER_ORIGIN = 2  # downloads at once from one scheme://host:port (REELHOOK_DOWNLOAD_PER_ORIGIN)
LEASE = 60.0  # seconds a claimed video stays ours without a renewal; renewed every third of it while held


class Downloader:
    def __init__(
        self,
        store: StoreProtocol,
        http: httpx.AsyncClient,
        media: MediaStore | Path,
        *,
        allow_private: bool = False,
        allowed_origins: Collection[str] = (),
        concurrency: int = 4,
        max_attempts: int = 8,
        max_bytes: int = MAX_BYTES,
        min_rate: int = MIN_RATE,
        deadline: float = DEADLINE,
        head_start: float = HEAD_START,
        per_origin: int = PER_ORIGIN,
        lease: float = LEASE,
        on_recorded: Callable[[], None] = lambda: None,
        posters: PosterQueue | None = None,
        fault: Callable[[str], None] = lambda point: None,
        metrics: Metrics | None = None,
    ) -> None:
        if min(concurrency, max_attempts, max_bytes, min_rate, per_origin) < 1 or deadline <= 0 or head_start < 0:
            raise ValueError(
                "Downloader: concurrency, max_attempts, max_bytes, min_rate and per_origin must be at least 1,"
                " deadline above 0 and head_start not negative"
            )
        self._store = store
        self._media = LocalMediaStore(media) if isinstance(media, Path) else media
        self._allowed_origins = tuple(allowed_origins)
        # Bodies are read by a thread per download (receiver/fetching.py), not through `http`: httpx's per-64 KiB
        # path held downloads to half of curl's speed. Both connect only to addresses guarded_http's rules allow.
        fetcher = fetcher_for(http, allow_private=allow_private, allowed_origins=self._allowed_origins)
        self._objects = VideoObjects(
            self._media, fetcher, allow_private=allow_private, allowed_origins=self._allowed_origins,
            max_bytes=max_bytes, min_rate=min_rate, deadline=deadline, head_start=head_start, fault=fault,
        )  # fmt: skip
        self._concurrency = concurrency
        self._max_attempts = max_attempts
        self._per_origin = per_origin
        self._lease = lease
        self._on_recorded = on_recorded
        self._posters = posters
        self._metrics = metrics or Metrics()
        self._clock = store.clock
        # Shared by every run_once in flight: they draw from one pool of slots and never pick the same video.
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._claim_lock = anyio.Lock()
        self._in_progress: dict[tuple[str, int], str] = {}  # video -> the origin it is fetched from
        self._held: dict[tuple[str, int], _Held] = {}  # claimed, waiting for a slot of its origin (or a later run)
        self._claims: dict[tuple[str, int], tuple[str, anyio.CancelScope | None]] = {}  # claim id, attempt's scope
        self._busy: Counter[str] = Counter()  # origin -> downloads from it in progress
        self._changed: anyio.Event | None = None  # set when a slot frees up or new work is announced
        # After a claim that found nothing, idle slots claim again only when woken (new work) or when the next retry
        # comes due (`_due`, read once then), not each time a slot frees up: that took a transaction per video.
        self._exhausted = False
        self._due: float | None = None
        self._news = 0  # wakes so far: a claim that found nothing counts only if no news came while it looked

    async def run_once(self) -> int:
        """Download every video that is due now; return how many were handled (downloaded, retried or failed).

        A video retried during this run waits for a later run, even if its retry time has already come. While this
        run still has downloads in progress, its idle slots wait for news (`wake()`, a slot freeing up, a retry
        coming due) rather than return, so one slow origin cannot hold back videos announced after the run began.
        """
        run = _Run()
        self._exhausted = False  # a new run always looks
        try:
            async with anyio.create_task_group() as renewing:
                renewing.start_soon(self._renew_leases)
                async with anyio.create_task_group() as tg:
                    for _ in range(self._concurrency):
                        tg.start_soon(self._work, run)
                renewing.cancel_scope.cancel()
        except anyio.get_cancelled_exc_class():
            await self._give_back(run)  # a shutdown: what this instance held is due again now, for the others
            raise
        return len(run.handled)

    async def _give_back(self, run: _Run) -> None:
        claims = ({claim for claim, _ in self._claims.values()} | run.claims) - {""}
        self._held.clear()
        with anyio.CancelScope(shield=True):
            for claim in claims:
                try:
                    await self._store.release_claim(claim)
                except Exception:
                    logger.exception("cannot give back claimed downloads; they are due again when their lease ends")

    def wake(self) -> None:
        """New videos may be due: idle slots of a run still in progress look again."""
        self._news += 1
        self._exhausted = False
        self._slot_freed()

    def _slot_freed(self) -> None:
        """A download ended: slots waiting for its origin may start one of the videos held."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def next_due(self) -> float | None:
        return await self._store.next_download_at()

    async def _work(self, run: _Run) -> None:
        while True:
            if self._changed is None:
                self._changed = anyio.Event()
            changed = self._changed  # taken before looking, so news that comes while we look is not missed
            async with self._limiter:
                held = await self._claim(run.retried)
                if held is not None:
                    run.claims.add(held.video.claim_id or "")
                    await self._attempt(held, run)
                    continue
            if not run.active:
                return
            due = self._due
            with anyio.move_on_after(float("inf") if due is None else max(0.0, due - self._clock())) as waited:
                await changed.wait()
            if waited.cancelled_caught:  # a retry came due: look again
                self._exhausted, self._due = False, None

    async def _claim(self, retried: set[tuple[str, int]]) -> _Held | None:
        """The first claimed video whose origin has a free slot; videos of a full origin are held, not awaited.

        Videos are claimed in the store (`claim_downloads`, a lease under a claim id), so no other worker of any
        instance takes them; those whose origin is full wait here, their leases renewed, until a slot frees up.
        """
        async with self._claim_lock:  # claims await the store: one at a time, or two slots race for one video
            key = self._startable(retried)
            if key is None and not self._exhausted and len(self._held) < 4 * self._concurrency:
                news = self._news
                claimed = await self._store.claim_downloads(limit=self._concurrency, lease=self._lease)
                if not claimed:
                    due = await self._store.next_download_at()
                    if self._news == news:  # else what woke us meanwhile may have found nothing yet
                        self._exhausted, self._due = True, due
                jobs = await self._store.get_jobs({video.job_id for video in claimed}) if claimed else {}
                for video in claimed:
                    key = (video.job_id, video.index)
                    self._held[key] = _Held(video, jobs.get(video.job_id), _origin_of(video.url))
                    self._claims[key] = (video.claim_id or "", None)
                key = self._startable(retried)
            if key is None:
                return None
            held = self._held.pop(key)
            self._in_progress[key] = held.origin
            self._busy[held.origin] += 1
            return held

    def _startable(self, retried: set[tuple[str, int]]) -> tuple[str, int] | None:
        for key, held in self._held.items():
            # A video claimed again while its last attempt here still winds down (its lease ran out and was taken
            # over, and came back to us) waits until that attempt has finished: one attempt per video at a time.
            if key in retried or key in self._in_progress:
                continue
            if self._busy[held.origin] < self._per_origin:
                return key
        return None

    async def _renew_leases(self) -> None:
        """While a run lasts, keep the leases of what it holds and fetches; stop an attempt whose claim was lost."""
        while True:
            await anyio.sleep(self._lease / 3)
            for key, (claim, scope) in list(self._claims.items()):
                if await self._store.renew_download(*key, claim=claim, lease=self._lease):
                    continue
                logger.warning(
                    "job %s video %d: its claim was taken over (the lease ran out); left to whoever holds it",
                    *key,
                    extra={"event": "download.lease_lost", "job": key[0], "video": key[1]},
                )
                self._held.pop(key, None)
                self._claims.pop(key, None)
                if scope is not None:
                    scope.cancel()

    async def _attempt(self, held: _Held, run: _Run) -> None:
        video = held.video
        key = (video.job_id, video.index)
        run.active += 1
        try:
            with anyio.CancelScope() as scope:
                self._claims[key] = (video.claim_id or "", scope)
                if not await self._handle(video, held.job):
                    run.retried.add(key)
        finally:
            run.active -= 1
            self._claims.pop(key, None)
            where = self._in_progress.pop(key)
            self._busy[where] -= 1
            if not self._busy[where]:
                del self._busy[where]
            self._slot_freed()
        run.handled.append(key)

    async def _handle(self, video: Video, job: Job | None) -> bool:
        """One attempt at one video (`job`: read with its claim, one read for the batch); False when it is left
        pending for a retry."""
        if job is None:  # the foreign key makes this impossible; fail loudly rather than loop
            await self._fail(video, f"job {video.job_id} does not exist")
            return True
        key = f"{job.root_id}/{job.id}/{video.index}.{media_extension(video.url)}"
        started = time.monotonic()
        try:
            written = await self._objects.store(video.url, key)
            await put_sidecar(self._media, key, sidecar_json(job, video, written, self._clock()))
        except (UnsafeURL, Permanent, httpx.InvalidURL) as exc:
            await self._fail(video, str(exc))
            return True
        except Transient as exc:
            return await self._retry(video, str(exc))
        except httpx.RequestError as exc:  # connection refused or reset, timeouts, a body cut short
            return await self._retry(video, f"{type(exc).__name__} fetching {exc.request.url}: {exc}")
        except OSError as exc:
            return await self._retry(video, f"cannot write {self._media.describe(key)}: {exc} (is the disk full?)")
        except MediaError as exc:  # the bucket refused or failed (AlreadyExists is handled in VideoObjects.store)
            return await self._retry(video, f"cannot write {self._media.describe(key)}: {exc}")
        except Exception as exc:  # a bug, or an httpx error we did not foresee: back off rather than hammer the CDN
            logger.exception(
                "job %s video %d: unexpected error",
                video.job_id,
                video.index,
                extra={"event": "download.error", "job": job, "video": video.index},
            )
            return await self._retry(video, f"unexpected {type(exc).__name__} fetching {video.url}: {exc}")
        size, sha256 = written.size, written.sha256
        recorded = await self._store.record_download(
            video.job_id, video.index, path=key, sha256=sha256, size=size, claim=video.claim_id
        )
        logger.info(
            "job %s video %d: %d bytes, sha256 %s…",
            video.job_id,
            video.index,
            size,
            sha256[:12],
            extra={"event": "download.done", "job": job, "video": video.index, "bytes": size, "sha256": sha256},
        )
        self._metrics.downloads.labels("downloaded").inc()
        self._metrics.download_bytes.inc(size)
        self._metrics.download_seconds.observe(time.monotonic() - started)
        if recorded:
            self._on_recorded()
            if self._posters is not None:  # made by the posters worker, never in this download's slot
                self._posters.offer(key)
        return True

    async def _retry(self, video: Video, error: str) -> bool:
        attempt = video.attempts + 1
        if attempt >= self._max_attempts:
            await self._fail(video, f"{error} (gave up after {attempt} attempts)")
            return True
        logger.warning(
            "job %s video %d: attempt %d failed, will retry: %s",
            video.job_id,
            video.index,
            attempt,
            error,
            extra={"event": "download.retried", "job": video, "video": video.index, "attempt": attempt},
        )
        retry_at = next_attempt_at(attempt, self._clock())
        await self._store.retry_download(
            video.job_id, video.index, error=error, retry_at=retry_at, claim=video.claim_id
        )
        self._metrics.downloads.labels("retried").inc()
        return False

    async def _fail(self, video: Video, error: str) -> None:
        logger.warning(
            "job %s video %d: failed: %s",
            video.job_id,
            video.index,
            error,
            extra={"event": "download.failed", "job": video, "video": video.index},
        )
        if await self._store.fail_download(video.job_id, video.index, error=error, claim=video.claim_id):
            self._on_recorded()  # its video.failed event is for the rules, as a download's video.downloaded is
        self._metrics.downloads.labels("failed").inc()


@dataclass(frozen=True)
class _Held:
    """A claimed video waiting for a slot: its job (read with the claim's batch) and its origin (parsed once)."""

    video: Video
    job: Job | None
    origin: str


@dataclass
class _Run:
    handled: list[tuple[str, int]] = field(default_factory=list)
    retried: set[tuple[str, int]] = field(default_factory=set)
    active: int = 0  # downloads of this run in progress
    claims: set[str] = field(default_factory=set)  # the claims of the videos this run started


def _origin_of(url: str) -> str:
    try:
        return origin(url)
    except (
        UnsafeURL,
        ValueError,
    ):  # a URL that cannot be parsed fails when fetched; until then it is an origin of its own
        return url
