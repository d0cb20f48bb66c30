"""The queues after a callback on PostgreSQL: downloads, the event outbox, notifications, and the flags and counts
of the money guards. The SQL of storage/queues.py and storage/guards.py; claiming from these queues is in `claims`."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Iterable, Sequence

from storage.database import float_or_none
from storage.errors import LeaseLost
from storage.guards import PUBLIC_URL_FLAG
from storage.lifecycle import IN_FLIGHT, sql_list
from storage.postgres.database import Connection, PostgresDatabase, printable
from storage.postgres.rows import event_from_row, notification_from_row, video_from_row
from storage.postgres.wakeups import QUEUES
from storage.records import Event, EventType, NewJob, NewNotification, Note, Notification, Video


class Queues(PostgresDatabase):
    # -- downloads -----------------------------------------------------------------------------------------------

    async def due_downloads(self, *, limit: int, exclude: Iterable[tuple[str, int]] = ()) -> list[Video]:
        skip = set(exclude)
        rows = await self._read(
            """SELECT * FROM videos WHERE status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= %s)
               ORDER BY updated_at, job_id, idx LIMIT %s""",
            (self._clock(), limit + len(skip)),
        )
        videos = [video_from_row(row) for row in rows]
        return [video for video in videos if (video.job_id, video.index) not in skip][:limit]

    async def next_download_at(self) -> float | None:
        rows = await self._read(
            "SELECT min(next_attempt_at) AS at FROM videos WHERE status = 'pending' AND next_attempt_at > %s",
            (self._clock(),),
        )
        return float_or_none(rows[0]["at"])

    async def record_download(
        self, job_id: str, index: int, *, path: str, sha256: str, size: int, claim: str | None = None
    ) -> bool:
        """Mark a video downloaded; False (and no event) if it already was, or if `claim` is no longer its claim."""
        async with self._transaction() as db:
            cursor = await db.execute(
                """UPDATE videos SET status = 'downloaded', path = %s, sha256 = %s, bytes = %s, error = NULL,
                          attempts = attempts + 1, next_attempt_at = NULL, claim_id = NULL,
                          updated_at = %s
                   WHERE job_id = %s AND idx = %s AND status = 'pending'"""
                + _fence(claim),
                (path, sha256, size, self._clock(), job_id, index, *_claimed(claim)),
            )
            if cursor.rowcount != 1:
                return False
            await self._emit(db, EventType.VIDEO_DOWNLOADED, job_id, index)
        return True

    async def retry_download(
        self, job_id: str, index: int, *, error: str, retry_at: float, claim: str | None = None
    ) -> bool:
        """Count a failed attempt and set the next; False when nothing changed (settled, or `claim` taken over)."""
        async with self._transaction() as db:
            cursor = await db.execute(
                """UPDATE videos SET attempts = attempts + 1, error = %s, next_attempt_at = %s, updated_at = %s,
                          claim_id = NULL
                   WHERE job_id = %s AND idx = %s AND status = 'pending'"""
                + _fence(claim),
                (printable(error), retry_at, self._clock(), job_id, index, *_claimed(claim)),
            )
            return cursor.rowcount == 1

    async def fail_download(self, job_id: str, index: int, *, error: str, claim: str | None = None) -> bool:
        """Fail a video for good; False when nothing changed (settled, or `claim` taken over)."""
        async with self._transaction() as db:
            cursor = await db.execute(
                """UPDATE videos SET status = 'failed', attempts = attempts + 1, error = %s, next_attempt_at = NULL,
                          claim_id = NULL, updated_at = %s
                   WHERE job_id = %s AND idx = %s AND status = 'pending'"""
                + _fence(claim),
                (printable(error), self._clock(), job_id, index, *_claimed(claim)),
            )
            if cursor.rowcount != 1:
                return False
            await self._emit(db, EventType.VIDEO_FAILED, job_id, index)
        return True

    # -- events (what the rules act on) --------------------------------------------------------------------------

    async def pending_events(self, *, limit: int = 100) -> list[Event]:
        rows = await self._read("SELECT * FROM events WHERE processed_at IS NULL ORDER BY id LIMIT %s", (limit,))
        return [event_from_row(row) for row in rows]

    async def complete_event(
        self,
        event_id: int,
        followups: Sequence[NewJob] = (),
        notifications: Sequence[NewNotification] = (),
        notes: Sequence[Note] = (),
        *,
        claim: str | None = None,
    ) -> list[str]:
        """Record an event's follow-up jobs, notifications and notes, and mark it processed, atomically; return the
        ids of new jobs. Replaying an event never doubles a job or a notification (storage.Store.complete_event)."""
        async with self._transaction() as db:
            return await self._record_event(db, event_id, followups, notifications, notes, claim)

    async def _record_event(
        self,
        db: Connection,
        event_id: int,
        followups: Sequence[NewJob],
        notifications: Sequence[NewNotification],
        notes: Sequence[Note],
        claim: str | None = None,
    ) -> list[str]:
        if claim is not None:  # fenced: marked first, and nothing written unless the claim is still this event's
            cursor = await db.execute(
                "UPDATE events SET processed_at = %s WHERE id = %s AND processed_at IS NULL AND claim_id = %s",
                (self._clock(), event_id, claim),
            )
            if cursor.rowcount != 1:
                raise LeaseLost(f"event {event_id}: handled already, or its claim was taken over")
        created: list[str] = []
        for new in followups:
            job_id = await self._insert_job(db, new)
            if job_id is not None:
                created.append(job_id)
        now = self._clock()
        async with db.cursor() as cursor:
            await cursor.executemany(
                """INSERT INTO notifications (event_id, rule, url, message_id, body, created_at)
                   VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
                [(event_id, n.rule, n.url, f"msg_{uuid.uuid4().hex}", n.body, now) for n in notifications],
            )
            await cursor.executemany(
                "INSERT INTO job_notes (job_id, rule, message, created_at) VALUES (%s, %s, %s, %s)",
                [(note.job_id, note.rule, printable(note.message), now) for note in notes],
            )
        if claim is None:
            await db.execute("UPDATE events SET processed_at = %s WHERE id = %s", (now, event_id))
        if notifications:
            await self._hint(db, "notifications")
        return created

    # -- notifications -------------------------------------------------------------------------------------------

    async def due_notifications(self, *, limit: int) -> list[Notification]:
        rows = await self._read(
            """SELECT * FROM notifications WHERE delivered_at IS NULL
                 AND (next_attempt_at IS NULL OR next_attempt_at <= %s)
               ORDER BY id LIMIT %s""",
            (self._clock(), limit),
        )
        return [notification_from_row(row) for row in rows]

    async def next_notification_at(self) -> float | None:
        rows = await self._read(
            "SELECT min(next_attempt_at) AS at FROM notifications WHERE delivered_at IS NULL AND next_attempt_at > %s",
            (self._clock(),),
        )
        return float_or_none(rows[0]["at"])

    async def record_notification(
        self, notification_id: int, *, error: str | None, retry_at: float | None, claim: str | None = None
    ) -> bool:
        """An attempt's outcome: delivered (no error), or failed with the time of the next try. A delivery is always
        recorded (the message went out); a failure only under its `claim`: False when nothing changed."""
        async with self._transaction() as db:
            if error is None:
                cursor = await db.execute(
                    """UPDATE notifications SET delivered_at = %s, attempts = attempts + 1, error = NULL,
                           claim_id = NULL
                       WHERE id = %s AND delivered_at IS NULL""",
                    (self._clock(), notification_id),
                )
            else:
                cursor = await db.execute(
                    """UPDATE notifications SET attempts = attempts + 1, error = %s, next_attempt_at = %s,
                           claim_id = NULL
                       WHERE id = %s AND delivered_at IS NULL"""
                    + _fence(claim),
                    (printable(error), retry_at, notification_id, *_claimed(claim)),
                )
            return cursor.rowcount == 1

    # -- flags (the kill switch) and counts for the money guards ------------------------------------------------

    async def get_flag(self, name: str) -> str | None:
        rows = await self._read("SELECT value FROM flags WHERE name = %s", (name,))
        return str(rows[0]["value"]) if rows else None

    async def set_flag(self, name: str, value: str | None) -> None:
        async with self._transaction() as db:
            if value is None:
                await db.execute("DELETE FROM flags WHERE name = %s", (name,))
            else:
                await db.execute(
                    """INSERT INTO flags (name, value, updated_at) VALUES (%s, %s, %s)
                       ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at""",
                    (name, printable(value), self._clock()),
                )
            await self._hint(db, *QUEUES)  # a pause lifted: what it held back goes out, on every instance

    async def use_public_url(
        self, url: str, *, providers: Collection[str], note: Callable[[str], str]
    ) -> tuple[str | None, list[str]]:
        """What storage.Store.use_public_url does; the flag's row is locked, so of instances that see the move at
        once, one notes the jobs and the others find the new URL already recorded."""
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO flags (name, value, updated_at) VALUES (%s, '', 0) ON CONFLICT (name) DO NOTHING",
                (PUBLIC_URL_FLAG,),
            )
            cursor = await db.execute(
                "SELECT value, updated_at FROM flags WHERE name = %s FOR UPDATE", (PUBLIC_URL_FLAG,)
            )
            row = await cursor.fetchone()
            assert row is not None
            if row["value"] == url:
                return None, []
            now = self._clock()
            await db.execute(
                "UPDATE flags SET value = %s, updated_at = %s WHERE name = %s", (url, now, PUBLIC_URL_FLAG)
            )
            if row["value"] == "" or not providers:  # none was recorded before
                return None, []
            old, since = str(row["value"]), float(row["updated_at"])
            cursor = await db.execute(
                f"""SELECT id FROM jobs WHERE status IN ({sql_list(IN_FLIGHT)}) AND provider = ANY(%s)
                    AND sent_at >= %s ORDER BY sent_at""",
                (list(providers), since),
            )
            ids = [str(found["id"]) for found in await cursor.fetchall()]
            async with db.cursor() as notes:
                await notes.executemany(
                    "INSERT INTO job_notes (job_id, rule, message, created_at) VALUES (%s, NULL, %s, %s)",
                    [(job_id, printable(note(old)), now) for job_id in ids],
                )
        return old, ids

    async def count_root_jobs(self, root_id: str) -> int:
        """Jobs in a chain, its root included."""
        rows = await self._read("SELECT count(*) AS n FROM jobs WHERE root_id = %s", (root_id,))
        return int(rows[0]["n"])

    async def count_followups_since(self, since: float) -> int:
        """Jobs that rules (not people) created since `since`."""
        rows = await self._read("SELECT count(*) AS n FROM jobs WHERE rule IS NOT NULL AND created_at >= %s", (since,))
        return int(rows[0]["n"])


def _fence(claim: str | None) -> str:
    """The condition that fences a claimed item's outcome: recorded only while `claim` is still its claim. No claim
    (a caller that claimed nothing, such as a test or a person's retry) records unfenced, as before claims."""
    return "" if claim is None else " AND claim_id = %s"


def _claimed(claim: str | None) -> tuple[str, ...]:
    return () if claim is None else (claim,)
