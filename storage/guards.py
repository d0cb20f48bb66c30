"""What the money guards and missed-callback recovery ask of the database: flags, notes, counts, stale jobs."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection

from storage.database import Database, printable
from storage.lifecycle import IN_FLIGHT, sql_list
from storage.records import Note

PUBLIC_URL_FLAG = "public_url"  # the base of the callback URLs paid jobs last left with; updated_at: since when


class Guards(Database):
    # -- flags (the kill switch) ---------------------------------------------------------------------------------

    async def get_flag(self, name: str) -> str | None:
        rows = await self._read("SELECT value FROM flags WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    async def set_flag(self, name: str, value: str | None) -> None:

        def work(db: sqlite3.Connection) -> None:
            if value is None:
                db.execute("DELETE FROM flags WHERE name = ?", (name,))
            else:
                db.execute(
                    """INSERT INTO flags (name, value, updated_at) VALUES (?, ?, ?)
                       ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at""",
                    (name, value, self._clock()),
                )

        await self._transaction(work)

    # -- notes ---------------------------------------------------------------------------------------------------

    async def get_notes(self, job_id: str) -> tuple[Note, ...]:
        rows = await self._read(
            "SELECT job_id, rule, message, created_at FROM job_notes WHERE job_id = ? ORDER BY id", (job_id,)
        )
        return tuple(Note(row[0], row[1], row[2], row[3]) for row in rows)

    async def use_public_url(
        self, url: str, *, providers: Collection[str], note: Callable[[str], str]
    ) -> tuple[str | None, list[str]]:
        """Record `url` as the base of the callback URLs that `providers`' jobs leave with from now on. When another
        was recorded, every one of those jobs still in flight that left since it was (their callbacks go to it) is
        given the note `note(old)`, in the same transaction. Returns the old base (None if there was none, or it is
        the same) and the ids of the jobs noted."""

        def work(db: sqlite3.Connection) -> tuple[str | None, list[str]]:
            row = db.execute("SELECT value, updated_at FROM flags WHERE name = ?", (PUBLIC_URL_FLAG,)).fetchone()
            if row is not None and row[0] == url:
                return None, []
            now = self._clock()
            db.execute(
                """INSERT INTO flags (name, value, updated_at) VALUES (?, ?, ?)
                   ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at""",
                (PUBLIC_URL_FLAG, url, now),
            )
            if row is None or not providers:
                return None, []
            old, since = str(row[0]), float(row[1])
            marks = ",".join("?" * len(providers))
            ids = [
                str(found[0])
                for found in db.execute(
                    f"""SELECT id FROM jobs WHERE status IN ({sql_list(IN_FLIGHT)}) AND provider IN ({marks})
                        AND sent_at >= ? ORDER BY sent_at""",
                    (*providers, since),
                )
            ]
            db.executemany(
                "INSERT INTO job_notes (job_id, rule, message, created_at) VALUES (?, NULL, ?, ?)",
                [(job_id, printable(note(old)), now) for job_id in ids],
            )
            return old, ids

        return await self._transaction(work)

    # -- counts for the limits -----------------------------------------------------------------------------------

    async def count_root_jobs(self, root_id: str) -> int:
        """Jobs in a chain, its root included."""
        rows = await self._read("SELECT count(*) FROM jobs WHERE root_id = ?", (root_id,))
        return int(rows[0][0])

    async def count_followups_since(self, since: float) -> int:
        """Jobs that rules (not people) created since `since`."""
        rows = await self._read("SELECT count(*) FROM jobs WHERE rule IS NOT NULL AND created_at >= ?", (since,))
        return int(rows[0][0])
