"""What the deadlines of jobs in flight ask of the database: which are due to be looked up, when the next one is,
rescheduling after a look, and giving up on a job that never reported back.

Every job that leaves for a provider is given a deadline when it is claimed (`lookup_at`). At that time the job is
looked up at its provider (receiver/reconcile.py), or, when it cannot be, simply waited on until its give-up time.
These are due times, like the submission retries: nothing wakes when nothing is due.
"""

from __future__ import annotations

import sqlite3

from storage.database import Database, float_or_none, printable
from storage.lifecycle import IN_FLIGHT, sql_list
from storage.records import EventType, Job, JobStatus
from storage.rows import job_from_row

_IN_FLIGHT = sql_list(IN_FLIGHT)
# The deadline worker's reads name their partial index: without planner statistics (reelhook gathers none) SQLite
# chose the status index instead and read every job in flight's row (bench scale, 1M jobs: 47 ms a read; 0.2 ms so).
# An index the WHERE no longer fits is an error, not a slow plan.


class Deadlines(Database):
    async def due_lookups(self, *, limit: int = 100) -> list[Job]:
        """Jobs in flight whose deadline has come, the most overdue first."""
        rows = await self._read(
            f"""SELECT * FROM jobs INDEXED BY jobs_lookup_due WHERE status IN ({_IN_FLIGHT}) AND lookup_at <= ?
                ORDER BY lookup_at LIMIT ?""",
            (self._clock(), limit),
        )
        return [job_from_row(row, ()) for row in rows]

    async def next_lookup_at(self) -> float | None:
        rows = await self._read(
            f"""SELECT min(lookup_at) FROM jobs INDEXED BY jobs_lookup_due
                WHERE status IN ({_IN_FLIGHT}) AND lookup_at > ?""",
            (self._clock(),),
        )
        return float_or_none(rows[0][0])

    async def overdue_jobs(self, *, sent_before: float) -> list[Job]:
        """Every job in flight sent before `sent_before`, whatever its next deadline (a look asked for by hand)."""
        rows = await self._read(
            f"SELECT * FROM jobs WHERE status IN ({_IN_FLIGHT}) AND sent_at <= ? ORDER BY sent_at",
            (sent_before,),
        )
        return [job_from_row(row, ()) for row in rows]

    async def schedule_lookup(self, job_id: str, *, at: float, looked_up: bool) -> bool:
        """Set a job's next deadline, counting a lookup when `looked_up`; committed before the lookup is made, so
        a crash mid-lookup does not ask again before `at`. False when the job is no longer in flight."""

        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                f"""UPDATE jobs SET lookup_at = ?, lookups = lookups + ?, reconciled_at = CASE WHEN ? THEN ?
                           ELSE reconciled_at END
                    WHERE id = ? AND status IN ({_IN_FLIGHT})""",
                (at, int(looked_up), looked_up, self._clock(), job_id),
            )
            return cursor.rowcount == 1

        return await self._transaction(work)

    async def give_up(self, job_id: str, error: str, *, note: str) -> bool:
        """Fail a job in flight as lost: its slot is freed, a `job.failed` event and a note say so. A result that
        arrives later is still applied (storage.lifecycle.LATE). False when the job had settled meanwhile."""

        def work(db: sqlite3.Connection) -> bool:
            row = self._locked_job(db, job_id)
            if JobStatus(row["status"]) not in IN_FLIGHT:
                return False
            now = self._clock()
            self._set_status(
                db, row, JobStatus.FAILED, error=printable(error), lost_at=now, lookup_at=None, next_attempt_at=None
            )
            self._emit(db, EventType.JOB_FAILED, job_id)
            db.execute(
                "INSERT INTO job_notes (job_id, rule, message, created_at) VALUES (?, NULL, ?, ?)",
                (job_id, printable(note), now),
            )
            return True

        return await self._transaction(work)
