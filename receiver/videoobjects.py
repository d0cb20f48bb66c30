"""One video URL into one object of the media store: fetched within its attempt's deadline, redirects followed by
hand and each hop checked, the head refused before the body when it says too big or not media, the body decoded
within bounds and written create-only; or, when an earlier attempt (or another instance) already committed the
object, adopted as it is. `receiver/downloads.py` claims the videos, retries and records; this fetches and stores.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

import anyio
import httpx

from receiver.fetching import Fetcher, pour
from receiver.filekinds import why_not_media_type
from receiver.mediafiles import BodyCheck, Permanent, Transient, over_cap, save_body
from receiver.netguard import check_url
from receiver.wirebody import ASK_FOR_IDENTITY, Pace, plain_response
from storage.media import AlreadyExists, MediaStore, Written, digest
from storage.media.local import LocalMediaStore

logger = logging.getLogger("reelhook.downloads")

MAX_REDIRECTS = 5


class VideoObjects:
    def __init__(
        self,
        media: MediaStore,
        fetcher: Fetcher,
        *,
        allow_private: bool,
        allowed_origins: Collection[str],
        max_bytes: int,
        min_rate: int,
        deadline: float,
        head_start: float,
        fault: Callable[[str], None],
    ) -> None:
        self._media = media
        self._fetcher = fetcher
        self._allow_private = allow_private
        self._allowed_origins = tuple(allowed_origins)
        self._max_bytes = max_bytes
        self._min_rate = min_rate
        self._deadline = deadline
        self._head_start = head_start
        self._fault = fault

    async def store(self, url: str, key: str) -> Written:
        """The object at `key`: fetched from `url` into the store, or, when one is there already, adopted.

        An object at the key was committed whole by an earlier attempt that crashed before recording it, or by
        another instance that fetched the same video at the same time; either way its body passed every check.
        """
        if not await self._media.exists(key):
            try:
                return await self._fetch(url, key)
            except AlreadyExists:
                pass  # another writer won the race; its object stays as it is
        logger.info("%s is already stored: adopting it", self._media.describe(key))
        await self._media.discard_partial(key)  # what a crash between its commit and its tidying left
        return await digest(self._media, key)

    async def _fetch(self, url: str, key: str) -> Written:
        """Stream `url` into the store at `key` within the attempt's deadline; return its size and sha256."""
        with anyio.CancelScope() as scope:
            pace = Pace(scope, min_rate=self._min_rate, ceiling=self._deadline, head_start=self._head_start)
            return await self._follow(url, key, pace)
        raise Transient(pace.overdue(url))

    async def _follow(self, url: str, key: str, pace: Pace) -> Written:
        """Stream `url` into the store at `key`, following redirects by hand; return its size and sha256."""
        for _ in range(MAX_REDIRECTS + 1):
            await check_url(url, allow_private=self._allow_private, allowed_origins=self._allowed_origins)
            async with self._fetcher.stream(url, ASK_FOR_IDENTITY) as response:
                if response.is_redirect:
                    url = str(response.url.join(response.headers["location"]))
                    continue
                status = response.status_code
                if status == 200:
                    self._check_head(response)
                    if isinstance(self._media, LocalMediaStore) and not _encoded(response):
                        return await self._pour(response, self._media, key, pace)
                    body = plain_response(response, max_bytes=self._max_bytes, on_wire=pace.received)
                    return await save_body(body, self._media, key, self._fault, self._max_bytes)
                if status in (408, 429) or status >= 500:
                    raise Transient(f"HTTP {status} from {url}")
                raise Permanent(f"HTTP {status} from {url}")
        raise Permanent(f"more than {MAX_REDIRECTS} redirects, last to {url}")

    async def _pour(self, response: httpx.Response, media: LocalMediaStore, key: str, pace: Pace) -> Written:
        """The body straight from the reader thread into the `.part` (see `fetching.pour`), checked as
        `checked_body` checks it; what the event loop hears is how many bytes came, for the pace."""
        started = False

        def progress(size: int) -> None:
            nonlocal started
            pace.received(size)
            if not started:  # the first piece is in the .part: a crash now leaves a partial write
                started = True
                self._fault("download.streaming")

        async with media.sink(key) as sink:
            await pour(response, sink, BodyCheck(str(response.url), key, self._max_bytes), progress)
        return sink.written()

    def _check_head(self, response: httpx.Response) -> None:
        """Refuse, before reading the body, a response that says it is too big or not media."""
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > self._max_bytes:
            raise Permanent(f"refusing {response.url}: its Content-Length, {length}, is {over_cap(self._max_bytes)}")
        reason = why_not_media_type(response.headers.get("content-type"))
        if reason is not None:
            raise Permanent(f"refusing {response.url}: {reason}")


def _encoded(response: httpx.Response) -> bool:
    """Sent with a Content-Encoding other than identity: `wirebody` decodes it, or refuses it."""
    codings = response.headers.get_list("content-encoding", split_commas=True)
    return any(coding.strip().lower() not in ("", "identity") for coding in codings)
