"""Claims on the SQLite engine: each queue's due items handed to one caller only.

SQLite has one writer at a time (`BEGIN IMMEDIATE`), so a claim here is simply a read and a write in one
transaction: no second claimer can read between the two. What the write records:
- a submission becomes SUBMITTED (for good: it may be paid for), after counting the provider's jobs in flight in
  the same transaction, so the per-provider limit is exact;
- a download, a notification or a lookup has its due time pushed `lease` seconds ahead, which hides it from other
  claimers until then; its outcome (`record_download`, `retry_download`, `record_notification`, `schedule_lookup`)
  writes the real next time;
- an event has its `claimed_until` pushed `lease` seconds ahead; completing it marks it processed.

Each claim of a download, a notification or an event also writes a fresh claim id on what it took, and returns it
on the records (`claim_id`). The outcome verbs given that id record only while it is still the item's claim: a
worker whose lease ran out, and whose item another claimer took, changes nothing (`record_download` and the other
outcomes answer False, `complete_event` raises `LeaseLost`). A long download renews its lease (`renew_download`)
under the same id.

The PostgreSQL engine keeps the same promises with row locks (storage/postgres/claims.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace

from storage.database import Database
from storage.lifecycle import IN_FLIGHT, sql_list
from storage.protocol import FollowupGuard
from storage.queues import Queues
from storage.records import Event, EventType, Job, JobStatus, NewJob, NewNotification, Note, Notification, Video
from storage.rows import job_from_row, notification_from_row, video_from_row


class Claims(Queues, Database):
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
            claim = new_claim(self.claimant)
            rows = await db.execute_fetchall(
                """UPDATE videos SET next_attempt_at = ?, claim_id = ?
                   WHERE (job_id, idx) IN (
                       SELECT job_id, idx FROM videos
                       WHERE status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= ?)
                       ORDER BY updated_at, job_id, idx LIMIT ?)
                   RETURNING *""",
                (now + lease, claim, now, limit),
            )
        videos = (replace(video_from_row(row), claim_id=claim) for row in rows)
        return sorted(videos, key=lambda v: (v.updated_at, v.job_id, v.index))

    async def renew_download(self, job_id: str, index: int, *, claim: str, lease: float) -> bool:
        """Extend a claimed download's lease to `lease` seconds from now; False when the claim was taken over (or
        the video settled): its claimer should stop."""
        async with self._transaction() as db:
            cursor = await db.execute(
                """UPDATE videos SET next_attempt_at = ?
                   WHERE job_id = ? AND idx = ? AND status = 'pending' AND claim_id = ?""",
                (self._clock() + lease, job_id, index, claim),
            )
            return cursor.rowcount == 1

    async def claim_notifications(self, *, limit: int, lease: float) -> list[Notification]:
        async with self._transaction() as db:
            now = self._clock()
            claim = new_claim(self.claimant)
            rows = await db.execute_fetchall(
                """UPDATE notifications SET next_attempt_at = ?, claim_id = ?
                   WHERE id IN (
                       SELECT id FROM notifications WHERE delivered_at IS NULL
                         AND (next_attempt_at IS NULL OR next_attempt_at <= ?)
                       ORDER BY id LIMIT ?)
                   RETURNING *""",
                (now + lease, claim, now, limit),
            )
        return sorted((replace(notification_from_row(row), claim_id=claim) for row in rows), key=lambda n: n.id)

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
        async with self._transaction() as db:
            now, claim = self._clock(), new_claim(self.claimant)
            rows = await db.execute_fetchall(
                """UPDATE events SET claimed_until = ?, claim_id = ?
                   WHERE id IN (
                       SELECT id FROM events
                       WHERE processed_at IS NULL AND (claimed_until IS NULL OR claimed_until <= ?)
                       ORDER BY id LIMIT ?)
                   RETURNING *""",
                (now + lease, claim, now, limit),
            )
        return sorted(
            (
                Event(row["id"], EventType(row["type"]), row["job_id"], row["video_index"], row["created_at"], claim)
                for row in rows
            ),
            key=lambda event: event.id,
        )

    async def release_claim(self, claim: str) -> int:
        """Hand back what one claim took and has not finished (a worker that stops early: a pause mid-batch, a
        shutdown), so that it is due again at once rather than when its lease ends. Returns how many."""
        async with self._transaction() as db:
            released = 0
            for sql in _RELEASE:
                cursor = await db.execute(sql + " AND claim_id = ?", (claim,))
                released += max(cursor.rowcount, 0)
        return released

    async def release_claims(self, claimant: str | None = None) -> int:
        """Hand back every download, notification and event claimed and not finished by a process now gone: with
        no `claimant`, every claim (an instance that owns its database alone, at start-up); with one, the claims
        that instance made (it restarted: its old claims are dead, while other instances' are live). Returns how many
        were released."""
        owned, params = ("", ()) if claimant is None else (" AND claim_id LIKE ?", (claimant_name(claimant) + ".%",))
        async with self._transaction() as db:
            released = 0
            for sql in _RELEASE:
                cursor = await db.execute(sql + owned, params)
                released += max(cursor.rowcount, 0)
        return released

    async def complete_event_guarded(
        self,
        event_id: int,
        guard: FollowupGuard,
        followups: Sequence[NewJob],
        notifications: Sequence[NewNotification] = (),
        notes: Sequence[Note] = (),
        *,
        claim: str | None = None,
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
            return await self._record_event(db, event_id, kept, notifications, [*notes, *stopped], claim)


def new_claim(claimant: str = "") -> str:
    """A claim id: names one claim, so that only its holder can record the outcome of what it claimed; prefixed
    with the claimant (`<claimant>.<random>`) when the store was opened with one."""
    return f"{claimant_name(claimant)}.{uuid.uuid4().hex}" if claimant else uuid.uuid4().hex


def claimant_name(name: str) -> str:
    if not name.isalnum() or not name.isascii():  # it goes into a LIKE pattern: no % or _ in it
        raise ValueError(f"a claimant is letters and digits, got {name!r}")
    return name


_RELEASE = (
    """UPDATE videos SET next_attempt_at = NULL, claim_id = NULL WHERE status = 'pending' AND claim_id IS NOT NULL""",
    """UPDATE notifications SET next_attempt_at = NULL, claim_id = NULL
       WHERE delivered_at IS NULL AND claim_id IS NOT NULL""",
    """UPDATE events SET claimed_until = NULL, claim_id = NULL WHERE processed_at IS NULL AND claim_id IS NOT NULL""",
)
