"""Claims on the SQLite engine: each queue's due items handed to one caller only.

SQLite has one writer at a time (`BEGIN IMMEDIATE`), so a claim here is simply a read and a write in one
transaction: no second claimer can read between the two. What the write records:
- a submission becomes SUBMITTED (for good: it may be paid for), after counting the provider's jobs in flight in
  the same transaction, so the per-provider limit is exact;
- a download, a notification or a lookup has its due time pushed `lease` seconds ahead, which hides it from other
  claimers until then; its outcome (`record_download`, `retry_download`, `record_notification`, `schedule_lookup`)
  writes the real next time;
- an event has no due time in the SQLite schema, and SQLite serves one process, so its lease is held in memory:
  a process that dies takes its leases with it, which is when they should end.

The PostgreSQL engine keeps the same promises with row locks (storage/postgres/claims.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from storage.database import Database
from storage.lifecycle import IN_FLIGHT, sql_list
from storage.protocol import FollowupGuard
from storage.queues import Queues
from storage.records import Event, EventType, Job, JobStatus, NewJob, NewNotification, Note, Notification, Video
from storage.rows import job_from_row, notification_from_row, video_from_row


class Claims(Queues, Database):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._event_leases: dict[int, float] = {}  # event id -> until when it is claimed

    async def claim_submissions(
        self, provider: str, *, slots: int, followups: bool = True, look_up_after: float = 900.0
    ) -> list[Job]:
        """Claim the provider's due queued jobs, oldest first, as many as its `slots` leave free now."""
        async with self._transaction() as db:
            async with db.execute(
                f"SELECT count(*) FROM jobs WHERE provider = ? AND status IN ({sql_list(IN_FLIGHT)})", (provider,)
            ) as cursor:
                row = await cursor.fetchone()
            free = slots - (int(row[0]) if row else 0)
            if free <= 0:
                return []
            now = self._clock()
            rows = await db.execute_fetchall(
                """SELECT * FROM jobs WHERE status = 'queued' AND provider = ?
                     AND (next_attempt_at IS NULL OR next_attempt_at <= ?) AND (? OR rule IS NULL)
                   ORDER BY created_at, id LIMIT ?""",
                (provider, now, followups, free),
            )
            for job in rows:
                await self._set_status(
                    db, job, JobStatus.SUBMITTED, attempts=job["attempts"] + 1, next_attempt_at=None, sent_at=now,
                    lookup_at=now + look_up_after, lookups=0,
                )  # fmt: skip
            ids = [job["id"] for job in rows]
            claimed = await db.execute_fetchall(
                f"SELECT * FROM jobs WHERE id IN ({','.join('?' * len(ids))}) ORDER BY created_at, id", ids
            )
        return [job_from_row(row, ()) for row in claimed]

    async def claim_downloads(self, *, limit: int, lease: float) -> list[Video]:
        async with self._transaction() as db:
            now = self._clock()
            rows = await db.execute_fetchall(
                """UPDATE videos SET next_attempt_at = ?
                   WHERE (job_id, idx) IN (
                       SELECT job_id, idx FROM videos
                       WHERE status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= ?)
                       ORDER BY updated_at, job_id, idx LIMIT ?)
                   RETURNING *""",
                (now + lease, now, limit),
            )
        return sorted((video_from_row(row) for row in rows), key=lambda v: (v.updated_at, v.job_id, v.index))

    async def claim_notifications(self, *, limit: int, lease: float) -> list[Notification]:
        async with self._transaction() as db:
            now = self._clock()
            rows = await db.execute_fetchall(
                """UPDATE notifications SET next_attempt_at = ?
                   WHERE id IN (
                       SELECT id FROM notifications WHERE delivered_at IS NULL
                         AND (next_attempt_at IS NULL OR next_attempt_at <= ?)
                       ORDER BY id LIMIT ?)
                   RETURNING *""",
                (now + lease, now, limit),
            )
        return sorted((notification_from_row(row) for row in rows), key=lambda n: n.id)

    async def claim_lookups(self, *, limit: int, lease: float) -> list[Job]:
        async with self._transaction() as db:
            now = self._clock()
            rows = await db.execute_fetchall(
                f"""UPDATE jobs SET lookup_at = ?
                    WHERE id IN (
                        SELECT id FROM jobs WHERE status IN ({sql_list(IN_FLIGHT)}) AND lookup_at <= ?
                        ORDER BY lookup_at LIMIT ?)
                    RETURNING *""",
                (now + lease, now, limit),
            )
        return sorted((job_from_row(row, ()) for row in rows), key=lambda job: (job.sent_at or 0.0, job.id))

    async def claim_events(self, *, limit: int, lease: float) -> list[Event]:
        async with self._transaction() as db:  # the writer lock also orders claims made by tasks of this process
            now = self._clock()
            held = [event_id for event_id, until in self._event_leases.items() if until > now]
            self._event_leases = {event_id: self._event_leases[event_id] for event_id in held}
            marks = ",".join("?" * len(held))
            rows = await db.execute_fetchall(
                f"""SELECT * FROM events WHERE processed_at IS NULL AND id NOT IN ({marks})
                    ORDER BY id LIMIT ?""",
                (*held, limit),
            )
            for row in rows:
                self._event_leases[row["id"]] = now + lease
        return [
            Event(row["id"], EventType(row["type"]), row["job_id"], row["video_index"], row["created_at"])
            for row in rows
        ]

    async def complete_event_guarded(
        self,
        event_id: int,
        guard: FollowupGuard,
        followups: Sequence[NewJob],
        notifications: Sequence[NewNotification] = (),
        notes: Sequence[Note] = (),
    ) -> list[str]:
        """`complete_event`, with the follow-ups cut by `guard` on counts taken in the same transaction."""
        async with self._transaction() as db:
            async with db.execute(
                """SELECT (SELECT count(*) FROM jobs WHERE root_id = ?),
                          (SELECT count(*) FROM jobs WHERE rule IS NOT NULL AND created_at >= ?)""",
                (guard.root_id, guard.since),
            ) as cursor:
                row = await cursor.fetchone()
            in_chain, in_day = (int(row[0]), int(row[1])) if row else (0, 0)
            kept, stopped = guard.decide(in_chain, in_day) if followups else ((), ())
            created = await self._record_event(db, event_id, kept, notifications, [*notes, *stopped])
        self._event_leases.pop(event_id, None)
        return created
