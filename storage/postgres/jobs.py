"""Jobs and the submission outbox on PostgreSQL: the SQL of storage/store.py, with row locks where SQLite had
its single writer. Claiming many submissions at once, under the provider's limit, is in `claims`."""

from __future__ import annotations

from collections.abc import Collection

from psycopg.rows import DictRow

from storage.database import float_or_none
from storage.lifecycle import IN_FLIGHT, InvalidTransition, sql_list
from storage.postgres.database import PostgresDatabase, printable
from storage.postgres.rows import job_from_row, video_from_row
from storage.records import Cost, EventType, Job, JobStatus, NewJob, Note, Video
from storage.rows import costs_by_job, job_list_query


class Jobs(PostgresDatabase):
    async def create_job(self, new: NewJob) -> tuple[Job, bool]:
        """Record a queued job. With an `origin` already taken, return that job and False instead."""
        async with self._transaction() as db:
            job_id = await self._insert_job(db, new)
        job = await self.get_job(job_id or await self._job_id_for_origin(new.origin))
        assert job is not None
        return job, job_id is not None

    async def get_job(self, job_id: str) -> Job | None:
        rows = await self._read("SELECT * FROM jobs WHERE id = %s", (job_id,))
        if not rows:
            return None
        costs = await self._costs([job_id])
        return job_from_row(rows[0], await self.get_videos(job_id), await self.get_notes(job_id), costs.get(job_id, ()))

    async def get_videos(self, job_id: str) -> tuple[Video, ...]:
        rows = await self._read("SELECT * FROM videos WHERE job_id = %s ORDER BY idx", (job_id,))
        return tuple(video_from_row(row) for row in rows)

    async def get_notes(self, job_id: str) -> tuple[Note, ...]:
        rows = await self._read(
            "SELECT job_id, rule, message, created_at FROM job_notes WHERE job_id = %s ORDER BY id", (job_id,)
        )
        return tuple(Note(row["job_id"], row["rule"], row["message"], row["created_at"]) for row in rows)

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
            "%s", status=status, before=before, provider=provider, action=action, rule=rule, root=root, q=q
        )
        return await self._whole_jobs(await self._read(sql, [*params, limit]))

    async def get_jobs(self, job_ids: Collection[str]) -> dict[str, Job]:
        """The jobs that exist of `job_ids`, by id: four queries for a worker's whole batch."""
        rows = await self._read("SELECT * FROM jobs WHERE id = ANY(%s)", (list(set(job_ids)),))
        return {job.id: job for job in await self._whole_jobs(rows)}

    async def _whole_jobs(self, rows: list[DictRow]) -> list[Job]:
        """The jobs of `rows` with their videos, notes and costs: one query for all the videos, one for the notes
        and one for the costs, not one each per job."""
        if not rows:
            return []
        ids = [row["id"] for row in rows]
        videos: dict[str, list[Video]] = {}
        for video_row in await self._read("SELECT * FROM videos WHERE job_id = ANY(%s) ORDER BY job_id, idx", (ids,)):
            videos.setdefault(video_row["job_id"], []).append(video_from_row(video_row))
        notes: dict[str, list[Note]] = {}
        for note in await self._read(
            "SELECT job_id, rule, message, created_at FROM job_notes WHERE job_id = ANY(%s) ORDER BY id", (ids,)
        ):
            notes.setdefault(note["job_id"], []).append(
                Note(note["job_id"], note["rule"], note["message"], note["created_at"])
            )
        costs = await self._costs(ids)
        return [
            job_from_row(row, videos.get(row["id"], ()), notes.get(row["id"], ()), costs.get(row["id"], ()))
            for row in rows
        ]

    async def _costs(self, ids: list[str]) -> dict[str, list[Cost]]:
        rows = await self._read(
            "SELECT job_id, unit, amount FROM job_costs WHERE job_id = ANY(%s) ORDER BY job_id, unit", (ids,)
        )
        return costs_by_job((row["job_id"], row["unit"], row["amount"]) for row in rows)

    # -- submissions (the outbox towards providers) --------------------------------------------------------------

    async def in_flight(self, provider: str) -> int:
        rows = await self._read(
            f"SELECT count(*) AS n FROM jobs WHERE provider = %s AND status IN ({sql_list(IN_FLIGHT)})", (provider,)
        )
        return int(rows[0]["n"])

    async def queued_providers(self) -> list[str]:
        rows = await self._read("SELECT DISTINCT provider FROM jobs WHERE status = 'queued'")
        return [str(row["provider"]) for row in rows]

    async def due_submissions(self, provider: str, *, limit: int, followups: bool = True) -> list[Job]:
        """Queued jobs due now, oldest first; with `followups=False` only those a person submitted (no rule)."""
        rows = await self._read(
            """SELECT * FROM jobs WHERE status = 'queued' AND provider = %s
                 AND (next_attempt_at IS NULL OR next_attempt_at <= %s) AND (%s OR rule IS NULL)
               ORDER BY created_at, id LIMIT %s""",
            (provider, self._clock(), followups, limit),
        )
        return [job_from_row(row, ()) for row in rows]

    async def next_submission_at(self) -> float | None:
        """The next future retry time. Jobs due now but waiting for a slot wake with the callback that frees it."""
        rows = await self._read(
            "SELECT min(next_attempt_at) AS at FROM jobs WHERE status = 'queued' AND next_attempt_at > %s",
            (self._clock(),),
        )
        return float_or_none(rows[0]["at"])

    async def claim_submission(self, job_id: str, *, look_up_after: float = 900.0) -> Job:
        """Mark a queued job as handed to its provider, before the request leaves: one compare-and-set. A job that
        is no longer queued raises InvalidTransition and nothing is written (storage.Store.claim_submission)."""
        async with self._transaction() as db:
            row = await self._locked_job(db, job_id)
            now = self._clock()
            claimed = await self._set_status(
                db, row, JobStatus.SUBMITTED, attempts=row["attempts"] + 1, next_attempt_at=None, sent_at=now,
                lookup_at=now + look_up_after, lookups=0,
            )  # fmt: skip
            if not claimed:
                raise InvalidTransition(job_id, JobStatus(row["status"]), JobStatus.SUBMITTED)
        job = await self.get_job(job_id)
        assert job is not None
        return job

    async def record_submitted(self, job_id: str, provider_job_id: str) -> None:
        async with self._transaction() as db:
            row = await self._locked_job(db, job_id)
            if row["provider_job_id"] is None:
                await db.execute(
                    "UPDATE jobs SET provider_job_id = %s, error = NULL, updated_at = %s WHERE id = %s",
                    (provider_job_id, self._clock(), job_id),
                )
            await self._emit(db, EventType.JOB_SUBMITTED, job_id)

    async def record_unknown_outcome(self, job_id: str, error: str) -> None:
        """The provider may or may not have taken the job: it stays SUBMITTED, never resent."""
        async with self._transaction() as db:
            await db.execute(
                "UPDATE jobs SET error = %s, updated_at = %s WHERE id = %s AND status = 'submitted'",
                (printable(error), self._clock(), job_id),
            )

    async def release_submission(self, job_id: str, *, error: str, retry_at: float) -> None:
        """The provider did not take the job (it was never sent, or refused for now): queue it again."""
        async with self._transaction() as db:
            row = await self._locked_job(db, job_id)
            if JobStatus(row["status"]) is JobStatus.SUBMITTED and row["provider_job_id"] is None:
                await self._set_status(
                    db, row, JobStatus.QUEUED, error=printable(error), next_attempt_at=retry_at, sent_at=None,
                    lookup_at=None,
                )  # fmt: skip

    async def cancel_job(self, job_id: str) -> bool:
        """Fail a queued job before it is sent; False if it is no longer queued."""
        async with self._transaction() as db:
            row = await self._locked_job(db, job_id)
            if JobStatus(row["status"]) is not JobStatus.QUEUED:
                return False
            await self._set_status(
                db, row, JobStatus.FAILED, error="cancelled before it was sent", next_attempt_at=None
            )
            await self._emit(db, EventType.JOB_FAILED, job_id)
        return True

    async def retry_downloads(self, job_id: str) -> int:
        """Put a job's failed downloads back in the queue, due now, with their tries counted afresh."""
        async with self._transaction() as db:
            cursor = await db.execute(
                """UPDATE videos SET status = 'pending', attempts = 0, next_attempt_at = NULL, error = NULL,
                          updated_at = %s
                   WHERE job_id = %s AND status = 'failed'""",
                (self._clock(), job_id),
            )
            await self._hint(db, "downloads")
            return cursor.rowcount

    async def fail_job(self, job_id: str, error: str) -> None:
        async with self._transaction() as db:
            row = await self._locked_job(db, job_id)
            if JobStatus(row["status"]).terminal:
                return
            await self._set_status(db, row, JobStatus.FAILED, error=printable(error), next_attempt_at=None)
            await self._emit(db, EventType.JOB_FAILED, job_id)
