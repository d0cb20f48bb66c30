"""The loop around a worker's `run_once()`: drain, then sleep until woken or until the next retry is due.

Nothing here polls the database or a provider on a timer. A worker wakes when another part of the process records
work for it (`wake()`, an in-process anyio Event), or at the earliest retry time its own queue reports.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable

import anyio

log = logging.getLogger("reelhook.workers")

ERROR_PAUSE = 1.0  # after an unexpected error, before draining again


class Worker:
    def __init__(
        self,
        name: str,
        run_once: Callable[[], Awaitable[int]],
        next_due: Callable[[], Awaitable[float | None]] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._run_once = run_once
        self._next_due = next_due
        self._clock = clock
        self._wakeup: anyio.Event | None = None
        self._pending = True  # drain once at start-up: work recorded before a restart is picked up
        self._idle: anyio.Event | None = None

    def wake(self) -> None:
        self._pending = True
        if self._wakeup is not None:
            self._wakeup.set()

    async def wait_idle(self) -> None:
        """Until the worker has drained and waits to be woken."""
        await self._idle_event().wait()

    def _idle_event(self) -> anyio.Event:
        if self._idle is None:
            self._idle = anyio.Event()
        return self._idle

    async def run(self) -> None:
        while True:
            self._wakeup = anyio.Event()
            if self._pending:
                self._pending = False
                try:
                    while await self._run_once():
                        pass
                except Exception:
                    log.exception(
                        "%s worker failed; draining again shortly",
                        self.name,
                        extra={"event": "worker.failed", "worker": self.name},
                    )
                    self._pending = True
                    await anyio.sleep(ERROR_PAUSE)
                    continue
            timeout = await self._timeout()
            if not self._pending:
                self._idle_event().set()
            with anyio.move_on_after(timeout):
                await self._wakeup.wait()
            if self._idle is not None and self._idle.is_set():
                self._idle = None  # busy again; an event someone waits on and that was never set stays theirs
            self._pending = True  # woken, or a retry came due

    async def _timeout(self) -> float:
        if self._next_due is None:
            return math.inf
        due = await self._next_due()
        return math.inf if due is None else max(0.0, due - self._clock())


class Changes:
    """A broadcast of "something was recorded": every wake-up of a worker also sets it, and any number of watchers
    (the dashboard's event streams) wait on it. Nothing is queued: a watcher that was busy sees one change, not a
    backlog, which is what a page that re-reads the store wants."""

    def __init__(self) -> None:
        self._event: anyio.Event | None = None  # made in the event loop, on first wait
        self.count = 0

    def notify(self) -> None:
        self.count += 1
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self, seen: int) -> int:
        """Until the count passes `seen` (at once if it already has); return the new count."""
        while self.count == seen:
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()
        return self.count
