"""The work queues after a callback: downloads, the event outbox the rules read, and notifications to send.

Each queue is a table with a due time; a worker takes what is due, and each outcome (done, retry at, failed) is
one transaction, the event it causes included, run whole on the database thread (storage/database.py).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable, Sequence

from storage.database import Database, float_or_none
from storage.errors import LeaseLost
from storage.records import Event, EventType, NewJob, NewNotification, Note, Notification, Video
from storage.rows import notification_from_row, video_from_row


class Queues(Database):
    # -- downloads -----------------------------------------------------------------------------------------------

    async def due_downloads(self, *, limit: int, exclude: Iterable[tuple[str, int]] = ()) -> list[Video]:
        skip = set(exclude)
        rows = await self._read(
            """SELECT * FROM videos WHERE status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= ?)
               ORDER BY updated_at, job_id, idx LIMIT ?""",
            (self._clock(), limit + len(skip)),
        )
        videos = [video_from_row(row) for row in rows]
        return [video for video in videos if (video.job_id, video.index) not in skip][:limit]

    async def next_download_at(self) -> float | None:
        rows = await self._read(
            "SELECT min(next_attempt_at) FROM videos WHERE status = 'pending' AND next_attempt_at > ?", (self._clock(),)
        )
        return float_or_none(rows[0][0])

    async def record_download(
        self, job_id: str, index: int, *, path: str, sha256: str, size: int, claim: str | None = None
    ) -> bool:
        """Mark a video downloaded; False (and no event) if it already was, or if `claim` is no longer its claim."""

        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                """UPDATE videos SET status = 'downloaded', path = ?, sha256 = ?, bytes = ?, error = NULL,
                          attempts = attempts + 1, next_attempt_at = NULL, claim_id = NULL,
                          updated_at = ?
                   WHERE job_id = ? AND idx = ? AND status = 'pending'"""
                + _fence(claim),
                (path, sha256, size, self._clock(), job_id, index, *_claimed(claim)),
            )
            if cursor.rowcount != 1:
                return False
            self._emit(db, EventType.VIDEO_DOWNLOADED, job_id, index)
            return True

        return await self._transaction(work)

    async def retry_download(
        self, job_id: str, index: int, *, error: str, retry_at: float, claim: str | None = None
    ) -> bool:
        """Count a failed attempt and set the next; False when nothing changed (settled, or `claim` taken over)."""

        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                """UPDATE videos SET attempts = attempts + 1, error = ?, next_attempt_at = ?, updated_at = ?,
                          claim_id = NULL
                   WHERE job_id = ? AND idx = ? AND status = 'pending'"""
                + _fence(claim),
                (error, retry_at, self._clock(), job_id, index, *_claimed(claim)),
            )
            return cursor.rowcount == 1

        return await self._transaction(work)

    async def fail_download(self, job_id: str, index: int, *, error: str, claim: str | None = None) -> bool:
        """Fail a video for good; False when nothing changed (settled, or `claim` taken over)."""

        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                """UPDATE videos SET status = 'failed', attempts = attempts + 1, error = ?, next_attempt_at = NULL,
                          claim_id = NULL, updated_at = ?
                   WHERE job_id = ? AND idx = ? AND status = 'pending'"""
                + _fence(claim),
                (error, self._clock(), job_id, index, *_claimed(claim)),
            )
            if cursor.rowcount != 1:
                return False
            self._emit(db, EventType.VIDEO_FAILED, job_id, index)
            return True

        return await self._transaction(work)

    # -- events (what the rules act on) --------------------------------------------------------------------------

    async def pending_events(self, *, limit: int = 100) -> list[Event]:
        rows = await self._read(
            "SELECT * FROM events WHERE processed_at IS NULL ORDER BY id LIMIT ?",
            (limit,),
        )
        return [
            Event(row["id"], EventType(row["type"]), row["job_id"], row["video_index"], row["created_at"])
            for row in rows
        ]

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
        ids of new jobs.

        A follow-up whose `origin` exists already is skipped, and so is a second notification of the same event by
        the same rule, so replaying an event never doubles anything.
        """
        return await self._transaction(
            lambda db: self._record_event(db, event_id, followups, notifications, notes, claim)
        )

    def _record_event(
        self,
        db: sqlite3.Connection,
        event_id: int,
        followups: Sequence[NewJob],
        notifications: Sequence[NewNotification],
        notes: Sequence[Note],
        claim: str | None = None,
    ) -> list[str]:
        if claim is not None:  # fenced: marked first, and nothing written unless the claim is still this event's
            cursor = db.execute(
                "UPDATE events SET processed_at = ? WHERE id = ? AND processed_at IS NULL AND claim_id = ?",
                (self._clock(), event_id, claim),
            )
            if cursor.rowcount != 1:
                raise LeaseLost(f"event {event_id}: handled already, or its claim was taken over")
        created: list[str] = []
        for new in followups:
            job_id = self._insert_job(db, new)
            if job_id is not None:
                created.append(job_id)
        db.executemany(
            """INSERT OR IGNORE INTO notifications (event_id, rule, url, message_id, body, created_at)
               VALUES (?, ?, ?, ?, ?, ?)""",
            [(event_id, n.rule, n.url, f"msg_{uuid.uuid4().hex}", n.body, self._clock()) for n in notifications],
        )
        db.executemany(
            "INSERT INTO job_notes (job_id, rule, message, created_at) VALUES (?, ?, ?, ?)",
            [(note.job_id, note.rule, note.message, self._clock()) for note in notes],
        )
        if claim is None:
            db.execute("UPDATE events SET processed_at = ? WHERE id = ?", (self._clock(), event_id))
        return created

    # -- notifications -------------------------------------------------------------------------------------------

    async def due_notifications(self, *, limit: int) -> list[Notification]:
        rows = await self._read(
            """SELECT * FROM notifications WHERE delivered_at IS NULL
                 AND (next_attempt_at IS NULL OR next_attempt_at <= ?)
               ORDER BY id LIMIT ?""",
            (self._clock(), limit),
        )
        return [notification_from_row(row) for row in rows]

    async def next_notification_at(self) -> float | None:
        rows = await self._read(
            "SELECT min(next_attempt_at) FROM notifications WHERE delivered_at IS NULL AND next_attempt_at > ?",
            (self._clock(),),
        )
        return float_or_none(rows[0][0])

    async def record_notification(
        self, notification_id: int, *, error: str | None, retry_at: float | None, claim: str | None = None
    ) -> bool:
        """An attempt's outcome: delivered (no error), or failed with the time of the next try. A delivery is always
        recorded (the message went out); a failure only under its `claim`: False when nothing changed."""

        def work(db: sqlite3.Connection) -> bool:
            if error is None:
                cursor = db.execute(
                    """UPDATE notifications SET delivered_at = ?, attempts = attempts + 1, error = NULL,
                           claim_id = NULL
                       WHERE id = ? AND delivered_at IS NULL""",
                    (self._clock(), notification_id),
                )
            else:
                cursor = db.execute(
                    """UPDATE notifications SET attempts = attempts + 1, error = ?, next_attempt_at = ?,
                           claim_id = NULL
                       WHERE id = ? AND delivered_at IS NULL"""
                    + _fence(claim),
                    (error, retry_at, notification_id, *_claimed(claim)),
                )
            return cursor.rowcount == 1

        return await self._transaction(work)


def _fence(claim: str | None) -> str:
    """The condition that fences a claimed item's outcome: recorded only while `claim` is still its claim. No claim
    (a caller that claimed nothing, such as a test or a person's retry) records unfenced, as before claims."""
    return "" if claim is None else " AND claim_id = ?"


def _claimed(claim: str | None) -> tuple[str, ...]:
    return () if claim is None else (claim,)
