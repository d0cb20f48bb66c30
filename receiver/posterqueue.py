"""Posters are made beside the downloads, never in their way.

A download used to make its own poster once it was recorded, before it gave back its slot: PyAV's decode of the
first keyframe (and, for a bucket, a copy of the whole object to a temporary file) held a download slot, so the next
download waited on FFmpeg. Now the downloader hands the key to `PosterQueue.offer`, which only notes it, and the
`posters` worker (`receiver.workers.Worker` around `run_once`, as for every queue) makes the posters one at a time,
on its own time: a burst of downloads is never slowed by its posters, only the posters wait.

The queue is in memory and bounded (`LIMIT` keys, a few hundred KiB; an offer past it is dropped, logged). Losing
it, to a crash, a shutdown or a burst past the bound, is harmless, because a missing poster is made again on the
next start: the worker's first drain looks through a local media folder for stored files (each with its sidecar, so
stored whole) that have no poster, and makes theirs. A poster is a nicety (the dashboard shows a placeholder
until it exists), so no database row records it, and a file FFmpeg cannot read is simply tried again at the next
start. A bucket is not listed at start (that is a request per thousand keys, each time): a poster lost there stays
missing, which the dashboard shows as no poster.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path, PurePosixPath

import anyio

from receiver.mediafiles import MEDIA_EXTENSIONS
from receiver.posters import SUFFIX, make_poster, poster_key
from storage.media import SIDECAR_SUFFIX, MediaStore
from storage.media.local import LocalMediaStore

logger = logging.getLogger("reelhook.posters")

LIMIT = 4096  # keys waiting at once; one is ~60 bytes
MakePoster = Callable[[MediaStore, str], Awaitable[str | None]]


class PosterQueue:
    def __init__(
        self,
        media: MediaStore,
        *,
        limit: int = LIMIT,
        on_offered: Callable[[], None] = lambda: None,
        on_made: Callable[[], None] = lambda: None,
        make: MakePoster = make_poster,
    ) -> None:
        """`on_offered` wakes whoever runs `run_once` (the service's posters worker); `on_made` tells whoever shows
        files (the dashboard's live pages) that a poster now exists. `make` is `posters.make_poster` but in tests."""
        if limit < 1:
            raise ValueError("PosterQueue: limit must be at least 1")
        self._media = media
        self._limit = limit
        self._on_offered = on_offered
        self._on_made = on_made
        self._make = make
        self._waiting: dict[str, None] = {}  # keys in the order offered, each once
        self._looked = False  # the media folder has been looked through for files without a poster

    def offer(self, key: str) -> None:
        """Note that the file at `key` wants a poster; never waits."""
        if key not in self._waiting:
            if len(self._waiting) >= self._limit:
                logger.warning(
                    "no poster for %s yet: %d posters already wait; it is made at the next start",
                    self._media.describe(key),
                    len(self._waiting),
                    extra={"event": "poster.dropped"},
                )
                return
            self._waiting[key] = None
        self._on_offered()

    async def run_once(self) -> int:
        """Make the posters waiting now; return how many files were tried (made or not, as logged).

        The first run also makes those a previous run never made (see the module's docstring)."""
        if not self._looked:
            self._looked = True
            for key in await self._missing():
                self.offer(key)
        tried = 0
        while self._waiting:
            key = next(iter(self._waiting))
            if await self._make(self._media, key) is not None:
                self._on_made()
            del self._waiting[key]  # after: an offer of the same key meanwhile is this one
            tried += 1
        return tried

    async def _missing(self) -> list[str]:
        if not isinstance(self._media, LocalMediaStore):
            return []
        root = self._media.root
        keys = await anyio.to_thread.run_sync(lambda: list(_without_posters(root)))
        if keys:
            logger.info(
                "%d stored files have no poster (a crash or a shutdown came first): making them",
                len(keys),
                extra={"event": "poster.missing", "count": len(keys)},
            )
        return keys[: self._limit]


def _without_posters(root: Path) -> Iterator[str]:
    """The keys of the media files under `root` that have their sidecar (stored whole) and no poster."""
    for folder, _, names in os.walk(root):
        present = set(names)
        for name in names:
            path = PurePosixPath(name)
            if name.endswith(SUFFIX) or path.suffix.lower().lstrip(".") not in MEDIA_EXTENSIONS:
                continue  # a poster, a sidecar, a .part or .tmp, anything else
            key = Path(folder, name).relative_to(root).as_posix()
            if path.with_suffix(SIDECAR_SUFFIX).name in present and PurePosixPath(poster_key(key)).name not in present:
                yield key
