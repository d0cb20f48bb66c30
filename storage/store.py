"""The Store: reelhook's one SQLite database, through one aiosqlite connection.

Durability rule: every method that changes state runs as one `BEGIN IMMEDIATE … COMMIT` and returns only after the
commit, so a caller that answers a provider or acts on a record after `await store.x()` never acts on something a
crash could take back. State changes and the events they emit are written in the same transaction: the event
outbox can never disagree with the jobs table.

One connection serves the whole process; an asyncio lock keeps one transaction at a time on it (aiosqlite runs
the connection on a single thread, so interleaved statements from two tasks would share a transaction).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

import aiosqlite

from storage.lifecycle import check_transition
from storage.records import (
    CallbackResult,
    Event,
    EventType,
    Job,
    JobStatus,
    NewJob,
    Video,
)
from storage.rows import job_from_row, video_from_row
from storage.schema import migrate


class CallbackOutcome(StrEnum):
    APPLIED = "applied"  # a final result: the job finished now
    PROGRESS = "progress"  # a non-terminal report
    DUPLICATE = "duplicate"  # the job had already finished: stored, nothing else changes


class JobMismatch(Exception):
    """A callback that does not belong to the job its token names."""


class Store:
    def __init__(self, db: aiosqlite.Connection, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        self._lock = _Lock()

    @classmethod
    async def open(
        cls, path: str | Path, *, clock: Callable[[], float] = time.time, busy_timeout_ms: int = 5000
    ) -> Store:
        db = await aiosqlite.connect(str(path), isolation_level=None)
        db.row_factory = aiosqlite.Row
        # WAL lets readers in other processes (the CLI, backups) work during writes; synchronous=FULL makes a
        # COMMIT survive power loss, not only a process crash, since a 200 to a provider depends on it.
        try:
            for pragma in (
                "journal_mode=WAL",
                "synchronous=FULL",
                "foreign_keys=ON",
                f"busy_timeout={busy_timeout_ms}",
            ):
                await db.execute(f"PRAGMA {pragma}")
            await migrate(db)
        except BaseException:
            await db.close()  # else aiosqlite's thread keeps the process alive
            raise
        return cls(db, clock=clock)

    @property
    def clock(self) -> Callable[[], float]:
        """The store's time source; workers schedule retries on it so that 'due' means one thing everywhere."""
        return self._clock

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self._lock:
            return list(await self._db.execute_fetchall(sql, params))

    # -- jobs ---------------------------------------------------------------------------------------------------

    async def create_job(self, new: NewJob) -> tuple[Job, bool]:
        """Record a queued job. With an `origin` already taken, return that job and False instead."""
        async with self._transaction() as db:
            job_id = await self._insert_job(db, new)
        job = await self.get_job(job_id or await self._job_id_for_origin(new.origin))
        assert job is not None
        return job, job_id is not None

    async def get_job(self, job_id: str) -> Job | None:
        rows = await self._read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            return None
        videos = await self.get_videos(job_id)
        return job_from_row(rows[0], videos)

    async def get_videos(self, job_id: str) -> tuple[Video, ...]:
        rows = await self._read("SELECT * FROM videos WHERE job_id = ? ORDER BY idx", (job_id,))
        return tuple(video_from_row(row) for row in rows)

    async def list_jobs(
        self, *, status: JobStatus | None = None, limit: int = 50, before: tuple[float, str] | None = None
    ) -> list[Job]:
        """Newest first; `before` is the (created_at, id) of the last job of the previous page."""
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            where.append("status = ?")
            params.append(status.value)
        if before is not None:
            where.append("(created_at, id) < (?, ?)")
            params.extend(before)
        sql = "SELECT * FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        rows = await self._read(sql, [*params, limit])
        return [job_from_row(row, await self.get_videos(row["id"])) for row in rows]

    async def _insert_job(self, db: aiosqlite.Connection, new: NewJob) -> str | None:
        job_id = uuid.uuid4().hex
        root_id, depth = job_id, 0
        if new.parent_id is not None:
            async with db.execute("SELECT root_id, depth FROM jobs WHERE id = ?", (new.parent_id,)) as cursor:
                parent = await cursor.fetchone()
            if parent is None:
                raise LookupError(f"parent job {new.parent_id} does not exist")
            root_id, depth = parent["root_id"], parent["depth"] + 1
        now = self._clock()
        cursor = await db.execute(
            """INSERT INTO jobs (id, provider, action, status, params, parent_id, root_id, depth, rule, origin,
                                 created_at, updated_at)
               VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (origin) DO NOTHING""",
            (job_id, new.provider, new.action, json.dumps(new.params), new.parent_id, root_id, depth, new.rule,
             new.origin, now, now),
        )  # fmt: skip
        return job_id if cursor.rowcount == 1 else None

    async def _job_id_for_origin(self, origin: str | None) -> str:
        rows = await self._read("SELECT id FROM jobs WHERE origin = ?", (origin,))
        return str(rows[0]["id"])

    async def _set_status(
        self, db: aiosqlite.Connection, job: Job | sqlite3.Row, target: JobStatus, **fields: Any
    ) -> None:
        job_id, current = (job.id, job.status) if isinstance(job, Job) else (job["id"], JobStatus(job["status"]))
        if target != current:
            check_transition(job_id, current, target)
        assignments = ", ".join(f"{name} = ?" for name in fields)
        sql = f"UPDATE jobs SET status = ?, updated_at = ?{', ' if fields else ''}{assignments} WHERE id = ?"
        await db.execute(sql, (target.value, self._clock(), *fields.values(), job_id))

    async def _emit(self, db: aiosqlite.Connection, type: EventType, job_id: str, index: int | None = None) -> None:
        await db.execute(
            "INSERT INTO events (type, job_id, video_index, created_at) VALUES (?, ?, ?, ?)",
            (type.value, job_id, index, self._clock()),
        )

    async def _locked_job(self, db: aiosqlite.Connection, job_id: str) -> sqlite3.Row:
        async with db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)) as cursor:
            row = await cursor.fetchone()
        if row is None:
            raise LookupError(f"job {job_id} does not exist")
        return row

    # -- submissions (the outbox towards providers) --------------------------------------------------------------

    async def in_flight(self, provider: str) -> int:
        rows = await self._read(
            "SELECT count(*) FROM jobs WHERE provider = ? AND status IN ('submitted', 'running')", (provider,)
        )
        return int(rows[0][0])

    async def queued_providers(self) -> list[str]:
        rows = await self._read("SELECT DISTINCT provider FROM jobs WHERE status = 'queued'")
        return [str(row[0]) for row in rows]

    async def due_submissions(self, provider: str, *, limit: int) -> list[Job]:
        rows = await self._read(
            """SELECT * FROM jobs WHERE status = 'queued' AND provider = ?
                 AND (next_attempt_at IS NULL OR next_attempt_at <= ?)
               ORDER BY created_at, id LIMIT ?""",
            (provider, self._clock(), limit),
        )
        return [job_from_row(row, ()) for row in rows]

    async def next_submission_at(self) -> float | None:
        """The next future retry time. Jobs due now but waiting for a slot wake with the callback that frees it."""
        rows = await self._read(
            "SELECT min(next_attempt_at) FROM jobs WHERE status = 'queued' AND next_attempt_at > ?", (self._clock(),)
        )
        return _float_or_none(rows[0][0])

    async def claim_submission(self, job_id: str) -> Job:
        """Mark a queued job as handed to its provider, before the request leaves.

        After this commit a crash leaves the job SUBMITTED with no provider id: it is never sent again, and the
        provider's callback (whose token names this job) still completes it.
        """
        async with self._transaction() as db:
            row = await self._locked_job(db, job_id)
            await self._set_status(db, row, JobStatus.SUBMITTED, attempts=row["attempts"] + 1, next_attempt_at=None)
        job = await self.get_job(job_id)
        assert job is not None
        return job

    async def record_submitted(self, job_id: str, provider_job_id: str) -> None:
        async with self._transaction() as db:
            row = await self._locked_job(db, job_id)
            if row["provider_job_id"] is None:
                await db.execute(
                    "UPDATE jobs SET provider_job_id = ?, error = NULL, updated_at = ? WHERE id = ?",
                    (provider_job_id, self._clock(), job_id),
                )
            await self._emit(db, EventType.JOB_SUBMITTED, job_id)

    async def release_submission(self, job_id: str, *, error: str, retry_at: float) -> None:
        """The provider did not take the job (it was never sent, or refused for now): queue it again."""
        async with self._transaction() as db:
            row = await self._locked_job(db, job_id)
            if JobStatus(row["status"]) is JobStatus.SUBMITTED and row["provider_job_id"] is None:
                await self._set_status(db, row, JobStatus.QUEUED, error=error, next_attempt_at=retry_at)

    async def fail_job(self, job_id: str, error: str) -> None:
        async with self._transaction() as db:
            row = await self._locked_job(db, job_id)
            if JobStatus(row["status"]).terminal:
                return
            await self._set_status(db, row, JobStatus.FAILED, error=error, next_attempt_at=None)
            await self._emit(db, EventType.JOB_FAILED, job_id)

    # -- callbacks (the inbox from providers) --------------------------------------------------------------------

    async def record_callback(
        self,
        job_id: str,
        provider: str,
        *,
        body: bytes,
        headers: Iterable[tuple[str, str]],
        result: CallbackResult,
    ) -> CallbackOutcome:
        """Store a verified callback verbatim and apply it to its job, in one transaction.

        Raises JobMismatch, writing nothing, when the callback is about another provider job than this one.
        """
        async with self._transaction() as db:
            job = await self._locked_job(db, job_id)
            known = job["provider_job_id"]
            if job["provider"] != provider or (result.provider_job_id and known and known != result.provider_job_id):
                raise JobMismatch(f"callback for {provider} job {result.provider_job_id} does not belong to {job_id}")
            outcome = await self._apply_result(db, job, result)
            await db.execute(
                """INSERT INTO callbacks (job_id, provider, received_at, headers, body, status, effect)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                (job_id, provider, self._clock(), json.dumps(list(headers)), body, result.status.value, outcome.value),
            )
        return outcome

    async def _apply_result(
        self, db: aiosqlite.Connection, job: sqlite3.Row, result: CallbackResult
    ) -> CallbackOutcome:
        status = JobStatus(job["status"])
        if status.terminal:
            return CallbackOutcome.DUPLICATE
        provider_job_id = job["provider_job_id"] or result.provider_job_id
        progress = result.progress if result.progress is not None else job["progress"]
        if not result.status.terminal:
            await self._set_status(db, job, JobStatus.RUNNING, progress=progress, provider_job_id=provider_job_id)
            return CallbackOutcome.PROGRESS
        await self._set_status(
            db, job, result.status, progress=progress, provider_job_id=provider_job_id, error=result.error,
            result=json.dumps(result.result), next_attempt_at=None,
        )  # fmt: skip
        if result.status is JobStatus.SUCCEEDED:
            now = self._clock()
            await db.executemany(
                "INSERT OR IGNORE INTO videos (job_id, idx, url, status, updated_at) VALUES (?, ?, ?, 'pending', ?)",
                [(job["id"], index, url, now) for index, url in enumerate(result.media_urls)],
            )
            await self._emit(db, EventType.JOB_SUCCEEDED, job["id"])
        else:
            await self._emit(db, EventType.JOB_FAILED, job["id"])
        return CallbackOutcome.APPLIED

    async def callback_count(self, job_id: str) -> int:
        rows = await self._read("SELECT count(*) FROM callbacks WHERE job_id = ?", (job_id,))
        return int(rows[0][0])

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
        return _float_or_none(rows[0][0])

    async def record_download(self, job_id: str, index: int, *, path: str, sha256: str, size: int) -> bool:
        """Mark a video downloaded; False (and no event) if it already was."""
        async with self._transaction() as db:
            cursor = await db.execute(
                """UPDATE videos SET status = 'downloaded', path = ?, sha256 = ?, bytes = ?, error = NULL,
                          attempts = attempts + 1, next_attempt_at = NULL, updated_at = ?
                   WHERE job_id = ? AND idx = ? AND status = 'pending'""",
                (path, sha256, size, self._clock(), job_id, index),
            )
            if cursor.rowcount != 1:
                return False
            await self._emit(db, EventType.VIDEO_DOWNLOADED, job_id, index)
        return True

    async def retry_download(self, job_id: str, index: int, *, error: str, retry_at: float) -> None:
        async with self._transaction() as db:
            await db.execute(
                """UPDATE videos SET attempts = attempts + 1, error = ?, next_attempt_at = ?, updated_at = ?
                   WHERE job_id = ? AND idx = ? AND status = 'pending'""",
                (error, retry_at, self._clock(), job_id, index),
            )

    async def fail_download(self, job_id: str, index: int, *, error: str) -> None:
        async with self._transaction() as db:
            cursor = await db.execute(
                """UPDATE videos SET status = 'failed', attempts = attempts + 1, error = ?, next_attempt_at = NULL,
                          updated_at = ?
                   WHERE job_id = ? AND idx = ? AND status = 'pending'""",
                (error, self._clock(), job_id, index),
            )
            if cursor.rowcount == 1:
                await self._emit(db, EventType.VIDEO_FAILED, job_id, index)

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

    async def complete_event(self, event_id: int, followups: Sequence[NewJob] = ()) -> list[str]:
        """Record an event's follow-up jobs and mark it processed, atomically; return the ids of new jobs.

        A follow-up whose `origin` exists already is skipped, so replaying an event never doubles a job.
        """
        created: list[str] = []
        async with self._transaction() as db:
            for new in followups:
                job_id = await self._insert_job(db, new)
                if job_id is not None:
                    created.append(job_id)
            await db.execute("UPDATE events SET processed_at = ? WHERE id = ?", (self._clock(), event_id))
        return created


class _Lock:
    """An asyncio.Lock created lazily, so a Store can be built outside a running loop."""

    def __init__(self) -> None:
        import asyncio

        self._lock: asyncio.Lock | None = None

    async def __aenter__(self) -> None:
        import asyncio

        if self._lock is None:
            self._lock = asyncio.Lock()
        await self._lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        assert self._lock is not None
        self._lock.release()


def _float_or_none(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
