"""What the money guards and missed-callback recovery ask of the database: flags, notes, counts, stale jobs."""

from __future__ import annotations

from storage.database import Database
from storage.records import Note


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
