"""Wake-ups across instances: PostgreSQL's LISTEN/NOTIFY, as a hint with a backstop.

In one process a callback wakes the workers directly. With several instances on one database, the instance that
records work is often not the one whose worker is asleep waiting for it: a callback that lands on A frees a slot
that B's submitter waits for. So the PostgreSQL engine sends a notification on the channel `reelhook`, naming the
queue that has news (`submissions`, `downloads`, `events`, `notifications`, `lookups`), inside the transaction that
records the work: PostgreSQL delivers it only on commit, never for a rollback, and folds repeats within a
transaction into one. The payload is a queue name, never a record: a listener goes and claims from the queue.

A notification is a hint and can be lost: a listener's connection dies silently, and what was sent meanwhile went
to nobody. So `Wakeups` treats every (re)connection as "anything may have happened" and hints every queue, and
also hints every queue after `backstop` seconds without a notification (the slow poll that drains what a lost
listener missed, Convoy's "fail open"). It holds one connection of its own, outside the pool: a pooled connection
goes back to the pool and stops listening.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import psycopg
from anyio.abc import TaskStatus

log = logging.getLogger("reelhook.wakeups")

CHANNEL = "reelhook"
QUEUES = ("submissions", "downloads", "events", "notifications", "lookups")


class Wakeups:
    def __init__(
        self, url: str, on_hint: Callable[[str], None], *, backstop: float = 60.0, reconnect_after: float = 1.0
    ) -> None:
        self._url = url
        self._on_hint = on_hint  # called with a queue name; cheap and non-blocking (it sets an event)
        self._backstop = backstop
        self._reconnect_after = reconnect_after

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled, reconnecting as needed; `task_status.started()` once the first LISTEN is in."""
        started = False
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if not started:
                        task_status.started()
                        started = True
                    self._hint_all()  # whatever was sent before this LISTEN went to nobody
                    while True:
                        async for notify in conn.notifies(timeout=self._backstop):
                            if notify.payload in QUEUES:
                                self._on_hint(notify.payload)
                        self._hint_all()  # the backstop: a quiet spell may be a notification lost
            except psycopg.Error as exc:
                log.warning("listening for wake-ups failed (%s); again in %.0f s", exc, self._reconnect_after)
                await anyio.sleep(self._reconnect_after)

    def _hint_all(self) -> None:
        for queue in QUEUES:
            self._on_hint(queue)
