"""The deadlines of jobs in flight on PostgreSQL: the SQL of storage/deadlines.py."""

from __future__ import annotations

from storage.database import float_or_none
from storage.lifecycle import IN_FLIGHT, sql_list
from storage.postgres.database import PostgresDatabase, printable
from storage.postgres.rows import job_from_row
from storage.records import EventType, Job, JobStatus

_IN_FLIGHT = sql_list(IN_FLIGHT)


class Deadlines(PostgresDatabase):
    async def due_lookups(self, *, limit: int = 100) -> list[Job]:
        """Jobs in flight whose deadline has come, the most overdue first."""
        rows = await self._read(
            f"""SELECT * FROM jobs WHERE status IN ({_IN_FLIGHT}) AND lookup_at <= %s
                ORDER BY lookup_at LIMIT %s""",
            (self._clock(), limit),
        )
        return [job_from_row(row, ()) for row in rows]

    async def next_lookup_at(self) -> float | None:
        rows = await self._read(
            f"SELECT min(lookup_at) AS at FROM jobs WHERE status IN ({_IN_FLIGHT}) AND lookup_at > %s",
            (self._clock(),),
        )
        return float_or_none(rows[0]["at"])

    async def overdue_jobs(self, *, sent_before: float) -> list[Job]:
        """Every job in flight sent before `sent_before`, whatever its next deadline (a look asked for by hand)."""
        rows = await self._read(
            f"SELECT * FROM jobs WHERE status IN ({_IN_FLIGHT}) AND sent_at <= %s ORDER BY sent_at",
            (sent_before,),
        )
        return [job_from_row(row, ()) for row in rows]

    async def schedule_lookup(self, job_id: str, *, at: float, looked_up: bool) -> bool:
        """Set a job's next deadline, counting a lookup when `looked_up`; False when the job is no longer in
        flight (storage.Store.schedule_lookup)."""
        async with self._transaction() as db:
            cursor = await db.execute(
                f"""UPDATE jobs SET lookup_at = %s, lookups = lookups + %s,
                           reconciled_at = CASE WHEN %s THEN %s ELSE reconciled_at END
                    WHERE id = %s AND status IN ({_IN_FLIGHT})""",
                (at, int(looked_up), looked_up, self._clock(), job_id),
            )
            return cursor.rowcount == 1

    async def give_up(self, job_id: str, error: str, *, note: str) -> bool:
        """Fail a job in flight as lost (storage.Store.give_up). False when the job had settled meanwhile."""
        async with self._transaction() as db:
            row = await self._locked_job(db, job_id)
            if JobStatus(row["status"]) not in IN_FLIGHT:
                return False
            now = self._clock()
            await self._set_status(
                db, row, JobStatus.FAILED, error=printable(error), lost_at=now, lookup_at=None, next_attempt_at=None
            )
            await self._emit(db, EventType.JOB_FAILED, job_id)
            await db.execute(
                "INSERT INTO job_notes (job_id, rule, message, created_at) VALUES (%s, NULL, %s, %s)",
                (job_id, printable(note), now),
            )
        return True
