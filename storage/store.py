"""The Store: every query reelhook makes. Here jobs and the submission outbox; the callback inbox is in
`storage.inbox`, the deadlines of jobs in flight in `storage.deadlines`, the queues that follow a callback
(downloads, events, notifications) in `storage.queues`; the connection, the transaction discipline and the writes
they share in `storage.database`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from typing import Any

from storage.claims import Claims
from storage.database import float_or_none, printable
from storage.deadlines import Deadlines
from storage.guards import Guards
from storage.inbox import Inbox
from storage.lifecycle import IN_FLIGHT, InvalidTransition, sql_list
from storage.queues import Queues
from storage.records import EventType, Job, JobStatus, NewJob, Note, Video
from storage.reports import Reports
from storage.rows import costs_by_job, job_from_row, job_list_query, video_from_row


class Store(Claims, Inbox, Deadlines, Queues, Guards, Reports):
    # -- jobs ---------------------------------------------------------------------------------------------------

    async def create_job(self, new: NewJob) -> tuple[Job, bool]:
        """Record a queued job. With an `origin` already taken, return that job and False instead."""

        def work(db: sqlite3.Connection) -> tuple[Job, bool]:
            job_id = self._insert_job(db, new)
            fresh = job_id is not None
            if job_id is None:
                (job_id,) = db.execute("SELECT id FROM jobs WHERE origin = ?", (new.origin,)).fetchone()
            job = self._job(db, job_id)
            assert job is not None
            return job, fresh

        return await self._transaction(work)

    async def get_job(self, job_id: str) -> Job | None:
        return await self._query(lambda db: self._job(db, job_id))

    async def get_jobs(self, job_ids: Collection[str]) -> dict[str, Job]:
        """The jobs that exist of `job_ids`, by id: one hop for a worker's whole batch."""

        def work(db: sqlite3.Connection) -> dict[str, Job]:
            jobs = (self._job(db, job_id) for job_id in dict.fromkeys(job_ids))
            return {job.id: job for job in jobs if job is not None}

        return await self._query(work)

    def _job(self, db: sqlite3.Connection, job_id: str) -> Job | None:
        """A job with its videos, notes and costs: four statements, one hop."""
        row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        videos = db.execute("SELECT * FROM videos WHERE job_id = ? ORDER BY idx", (job_id,)).fetchall()
        notes = db.execute(
            "SELECT job_id, rule, message, created_at FROM job_notes WHERE job_id = ? ORDER BY id", (job_id,)
        ).fetchall()
        costs = costs_by_job(
            db.execute(
                "SELECT job_id, unit, amount FROM job_costs WHERE job_id = ? ORDER BY unit", (job_id,)
            ).fetchall()
        )
        return job_from_row(
            row,
            tuple(video_from_row(video) for video in videos),
            tuple(Note(note[0], note[1], note[2], note[3]) for note in notes),
            costs.get(job_id, ()),
        )

    async def get_videos(self, job_id: str) -> tuple[Video, ...]:
        rows = await self._read("SELECT * FROM videos WHERE job_id = ? ORDER BY idx", (job_id,))
        return tuple(video_from_row(row) for row in rows)

    async def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        limit: int = 50,
        before: tuple[float, str] | None = None,
        provider: str | None = None,
        action: str | None = None,
        rule: str | None = None,
        root: str | None = None,
        q: str | None = None,
    ) -> list[Job]:
        """Newest first; `before` is the (created_at, id) of the last job of the previous page. `q` matches a job
        id, the start of one, or a provider's job id."""
        sql, params = job_list_query(
            "?", status=status, before=before, provider=provider, action=action, rule=rule, root=root, q=q
        )
        return await self._query(lambda db: self._page(db, sql, [*params, limit]))

    def _page(self, db: sqlite3.Connection, sql: str, params: list[Any]) -> list[Job]:
        rows = db.execute(sql, params).fetchall()
        if not rows:
            return []
        # One query for the whole page's videos and one for its notes, not one per job.
        marks, ids = ",".join("?" * len(rows)), [row["id"] for row in rows]
        video_rows = db.execute(f"SELECT * FROM videos WHERE job_id IN ({marks}) ORDER BY job_id, idx", ids)
        videos: dict[str, list[Video]] = {}
        for video_row in video_rows:
            videos.setdefault(video_row["job_id"], []).append(video_from_row(video_row))
        note_rows = db.execute(
            f"SELECT job_id, rule, message, created_at FROM job_notes WHERE job_id IN ({marks}) ORDER BY id", ids
        )
        notes: dict[str, list[Note]] = {}
        for note_row in note_rows:
            notes.setdefault(note_row[0], []).append(Note(note_row[0], note_row[1], note_row[2], note_row[3]))
        costs = costs_by_job(
            db.execute(f"SELECT job_id, unit, amount FROM job_costs WHERE job_id IN ({marks}) ORDER BY unit", ids)
        )
        return [
            job_from_row(row, videos.get(row["id"], ()), notes.get(row["id"], ()), costs.get(row["id"], ()))
            for row in rows
        ]

    # -- submissions (the outbox towards providers) --------------------------------------------------------------

    async def in_flight(self, provider: str) -> int:
        rows = await self._read(
            f"SELECT count(*) FROM jobs WHERE provider = ? AND status IN ({sql_list(IN_FLIGHT)})", (provider,)
        )
        return int(rows[0][0])

    async def queued_providers(self) -> list[str]:
        rows = await self._read("SELECT DISTINCT provider FROM jobs WHERE status = 'queued'")
        return [str(row[0]) for row in rows]

    async def due_submissions(self, provider: str, *, limit: int, followups: bool = True) -> list[Job]:
        """Queued jobs due now, oldest first; with `followups=False` only those a person submitted (no rule)."""
        rows = await self._read(
            """SELECT * FROM jobs WHERE status = 'queued' AND provider = ?
                 AND (next_attempt_at IS NULL OR next_attempt_at <= ?) AND (? OR rule IS NULL)
               ORDER BY created_at, id LIMIT ?""",
            (provider, self._clock(), followups, limit),
        )
        return [job_from_row(row, ()) for row in rows]

    async def next_submission_at(self) -> float | None:
        """The next future retry time. Jobs due now but waiting for a slot wake with the callback that frees it."""
        rows = await self._read(
            "SELECT min(next_attempt_at) FROM jobs WHERE status = 'queued' AND next_attempt_at > ?", (self._clock(),)
        )
        return float_or_none(rows[0][0])

    async def claim_submission(self, job_id: str, *, look_up_after: float = 900.0) -> Job:
        """Mark a queued job as handed to its provider, before the request leaves: one compare-and-set.

        After this commit a crash leaves the job SUBMITTED: it is never sent again, and its callback (whose token
        names this job) or its deadline lookup, `look_up_after` seconds from now, settles it. A job that is no
        longer queued (claimed by someone else meanwhile) raises InvalidTransition and nothing is written.
        """

        def work(db: sqlite3.Connection) -> Job:
            row = self._locked_job(db, job_id)
            now = self._clock()
            claimed = self._set_status(
                db, row, JobStatus.SUBMITTED, attempts=row["attempts"] + 1, next_attempt_at=None, sent_at=now,
                lookup_at=now + look_up_after, lookups=0,
            )  # fmt: skip
            if not claimed:
                raise InvalidTransition(job_id, JobStatus(row["status"]), JobStatus.SUBMITTED)
            job = self._job(db, job_id)
            assert job is not None
            return job

        return await self._transaction(work)

    async def record_submitted(self, job_id: str, provider_job_id: str) -> None:
        def work(db: sqlite3.Connection) -> None:
            row = self._locked_job(db, job_id)
            if row["provider_job_id"] is None:
                db.execute(
                    "UPDATE jobs SET provider_job_id = ?, error = NULL, updated_at = ? WHERE id = ?",
                    (provider_job_id, self._clock(), job_id),
                )
            self._emit(db, EventType.JOB_SUBMITTED, job_id)

        await self._transaction(work)

    async def record_unknown_outcome(self, job_id: str, error: str) -> None:
        """The provider may or may not have taken the job: it stays SUBMITTED, never resent; its callback or its
        deadline lookup decides."""
        await self._transaction(
            lambda db: db.execute(
                "UPDATE jobs SET error = ?, updated_at = ? WHERE id = ? AND status = 'submitted'",
                (printable(error), self._clock(), job_id),
            )
        )

    async def release_submission(self, job_id: str, *, error: str, retry_at: float) -> None:
        """The provider did not take the job (it was never sent, or refused for now): queue it again."""

        def work(db: sqlite3.Connection) -> None:
            row = self._locked_job(db, job_id)
            if JobStatus(row["status"]) is JobStatus.SUBMITTED and row["provider_job_id"] is None:
                self._set_status(
                    db, row, JobStatus.QUEUED, error=printable(error), next_attempt_at=retry_at, sent_at=None,
                    lookup_at=None,
                )  # fmt: skip

        await self._transaction(work)

    async def cancel_job(self, job_id: str) -> bool:
        """Fail a queued job before it is sent (a person changed their mind); False if it is no longer queued."""

        def work(db: sqlite3.Connection) -> bool:
            row = self._locked_job(db, job_id)
            if JobStatus(row["status"]) is not JobStatus.QUEUED:
                return False
            self._set_status(db, row, JobStatus.FAILED, error="cancelled before it was sent", next_attempt_at=None)
            self._emit(db, EventType.JOB_FAILED, job_id)
            return True

        return await self._transaction(work)

    async def retry_downloads(self, job_id: str) -> int:
        """Put a job's failed downloads back in the queue, due now, with their tries counted afresh."""

        def work(db: sqlite3.Connection) -> int:
            return db.execute(
                """UPDATE videos SET status = 'pending', attempts = 0, next_attempt_at = NULL, error = NULL,
                          updated_at = ?
                   WHERE job_id = ? AND status = 'failed'""",
                (self._clock(), job_id),
            ).rowcount

        return await self._transaction(work)

    async def fail_job(self, job_id: str, error: str) -> None:
        def work(db: sqlite3.Connection) -> None:
            row = self._locked_job(db, job_id)
            if JobStatus(row["status"]).terminal:
                return
            self._set_status(db, row, JobStatus.FAILED, error=printable(error), next_attempt_at=None)
            self._emit(db, EventType.JOB_FAILED, job_id)

        await self._transaction(work)
