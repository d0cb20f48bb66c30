"""What the money guards and missed-callback recovery ask of the database: flags, notes, counts, stale jobs."""

from __future__ import annotations

from collections.abc import Mapping

from storage.database import Database
from storage.records import Job, Note
from storage.rows import job_from_row


class Guards(Database):
    # -- flags (the kill switch) ---------------------------------------------------------------------------------

    async def get_flag(self, name: str) -> str | None:
        rows = await self._read("SELECT value FROM flags WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    async def set_flag(self, name: str, value: str | None) -> None:
        async with self._transaction() as db:
            if value is None:
                await db.execute("DELETE FROM flags WHERE name = ?", (name,))
            else:
                await db.execute(
                    """INSERT INTO flags (name, value, updated_at) VALUES (?, ?, ?)
                       ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at""",
                    (name, value, self._clock()),
                )

    # -- notes ---------------------------------------------------------------------------------------------------

    async def get_notes(self, job_id: str) -> tuple[Note, ...]:
        rows = await self._read(
            "SELECT job_id, rule, message, created_at FROM job_notes WHERE job_id = ? ORDER BY id", (job_id,)
        )
        return tuple(Note(row[0], row[1], row[2], row[3]) for row in rows)

    # -- counts for the limits -----------------------------------------------------------------------------------

    async def count_root_jobs(self, root_id: str) -> int:
        """Jobs in a chain, its root included."""
        rows = await self._read("SELECT count(*) FROM jobs WHERE root_id = ?", (root_id,))
        return int(rows[0][0])

    async def count_followups_since(self, since: float) -> int:
        """Jobs that rules (not people) created since `since`."""
        rows = await self._read("SELECT count(*) FROM jobs WHERE rule IS NOT NULL AND created_at >= ?", (since,))
        return int(rows[0][0])

    # -- missed callbacks ----------------------------------------------------------------------------------------

    async def jobs_awaiting_callback(self, grace: Mapping[str, float]) -> list[Job]:
        """Jobs a provider took (it gave an id) whose callback is later than `grace[provider]` seconds and that
        were never looked up: each is asked about once."""
        now = self._clock()
        found: list[Job] = []
        for provider, seconds in grace.items():
            rows = await self._read(
                # The unary + keeps SQLite off the (provider, provider_job_id) index, which it would otherwise
                # pick for "IS NOT NULL" and then scan every job the provider ever had (bench/scale.py: 0.5 s).
                """SELECT * FROM jobs WHERE status IN ('submitted', 'running') AND provider = ?
                     AND +provider_job_id IS NOT NULL AND reconciled_at IS NULL AND updated_at <= ?
                   ORDER BY updated_at""",
                (provider, now - seconds),
            )
            found.extend(job_from_row(row, ()) for row in rows)
        return found

    async def mark_reconciled(self, job_id: str) -> None:
        async with self._transaction() as db:
            await db.execute("UPDATE jobs SET reconciled_at = ? WHERE id = ?", (self._clock(), job_id))
