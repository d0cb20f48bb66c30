"""Claims on PostgreSQL: each queue's due items handed to one caller only, with any number of instances asking.

Read-then-write is not a claim when several connections write: two of them read the same due row and both act
on it. So each claim is one statement that picks and marks in the same breath, the way river, Oban and
procrastinate do:

    WITH due AS (SELECT … ORDER BY … LIMIT n FOR UPDATE SKIP LOCKED)
    UPDATE … FROM due WHERE … RETURNING …

`FOR UPDATE` locks the rows picked, `SKIP LOCKED` makes a concurrent claimer pass over them to the next due rows
instead of queueing behind them (and then getting rows that are no longer due), and the CTE keeps the planner from
locking more than the LIMIT. What the UPDATE marks is the item's lease: a download's or a notification's due time,
a lookup's deadline, an event's `claimed_until`, each pushed `lease` seconds ahead, so a claimer that dies releases
its items when the lease ends. Its outcome (`record_download`, `record_notification`, `schedule_lookup`,
`complete_event`) writes the real next time. A claimed download, notification or event also gets a fresh claim id,
which fences its outcome as on SQLite (storage/claims.py says how).

Submissions carry money, and a cap: at most `slots` of a provider's jobs in flight. Counting and then claiming is
a race even with SKIP LOCKED (twenty claimers all count 0 and each claims the whole limit: tests/storage saw
all 30 queued jobs go in flight against a limit of 10). So the claim first takes a transaction-scoped advisory
lock named after the provider: claims for one provider take turns, each counts what the previous one committed,
and other providers are not held up. A claimed submission is SUBMITTED for good; it is never handed out again.

The money guards that count jobs (`max_jobs_per_root`, `max_jobs_per_day`) take one advisory lock for every guarded
follow-up: the count and the follow-ups it allows commit together, and the next event's count sees them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import psycopg
from psycopg.rows import DictRow

from storage.claims import claimant_name, new_claim
from storage.errors import StoreError
from storage.lifecycle import IN_FLIGHT, check_transition, sql_list
from storage.postgres.database import Connection
from storage.postgres.queues import Queues
from storage.postgres.rows import event_from_row, job_from_row, notification_from_row, video_from_row
from storage.protocol import EventOutcome, FollowupGuard
from storage.records import Event, Job, JobStatus, Notification, Video

_IN_FLIGHT = sql_list(IN_FLIGHT)


class Claims(Queues):
    if TYPE_CHECKING:  # a mixin of PostgresStore, whose `Jobs.get_jobs` reads jobs with their videos, notes, costs

        async def get_jobs(self, job_ids: Collection[str]) -> dict[str, Job]: ...

    async def claim_submissions(
        self, provider: str, *, slots: int, followups: bool = True, look_up_after: float = 900.0
    ) -> list[Job]:
        """Claim the provider's due queued jobs, oldest first, as many as its `slots` leave free now."""
        check_transition("*", JobStatus.QUEUED, JobStatus.SUBMITTED)
        async with self._transaction() as db:
            await db.execute("SELECT pg_advisory_xact_lock(hashtextextended('reelhook:cap:' || %s, 0))", (provider,))
            cursor = await db.execute(
                f"SELECT count(*) AS n FROM jobs WHERE provider = %s AND status IN ({_IN_FLIGHT})", (provider,)
            )
            row = await cursor.fetchone()
            free = slots - (int(row["n"]) if row else 0)
            if free <= 0:
                return []
            now = self._clock()
            cursor = await db.execute(
                """WITH due AS (
                       SELECT id FROM jobs WHERE status = 'queued' AND provider = %s
                         AND (next_attempt_at IS NULL OR next_attempt_at <= %s) AND (%s OR rule IS NULL)
                       ORDER BY created_at, id LIMIT %s FOR UPDATE SKIP LOCKED)
                   UPDATE jobs SET status = 'submitted', updated_at = %s, attempts = attempts + 1,
                          next_attempt_at = NULL, sent_at = %s, lookup_at = %s, lookups = 0
                   FROM due WHERE jobs.id = due.id AND jobs.status = 'queued'
                   RETURNING jobs.*""",
                (provider, now, followups, free, now, now, now + look_up_after),
            )
            rows = await cursor.fetchall()
            if rows:
                await self._hint(db, "lookups")  # their deadlines start now
        return sorted((job_from_row(row, ()) for row in rows), key=lambda job: (job.created_at, job.id))

    async def claim_downloads(self, *, limit: int, lease: float) -> list[Video]:
        now, claim = self._clock(), new_claim(self.claimant)
        rows = await self._claim(
            """WITH due AS (
                   SELECT job_id, idx FROM videos
                   WHERE status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= %s)
                   ORDER BY updated_at, job_id, idx LIMIT %s FOR UPDATE SKIP LOCKED)
               UPDATE videos SET next_attempt_at = %s, claim_id = %s FROM due
               WHERE videos.job_id = due.job_id AND videos.idx = due.idx
               RETURNING videos.*""",
            (now, limit, now + lease, claim),
        )
        videos = (replace(video_from_row(row), claim_id=claim) for row in rows)
        return sorted(videos, key=lambda v: (v.updated_at, v.job_id, v.index))

    async def renew_download(self, job_id: str, index: int, *, claim: str, lease: float) -> bool:
        """Extend a claimed download's lease to `lease` seconds from now; False when the claim was taken over (or
        the video settled): its claimer should stop."""
        async with self._transaction() as db:
            cursor = await db.execute(
                """UPDATE videos SET next_attempt_at = %s
                   WHERE job_id = %s AND idx = %s AND status = 'pending' AND claim_id = %s""",
                (self._clock() + lease, job_id, index, claim),
            )
            return cursor.rowcount == 1

    async def claim_notifications(self, *, limit: int, lease: float) -> list[Notification]:
        now, claim = self._clock(), new_claim(self.claimant)
        rows = await self._claim(
            """WITH due AS (
                   SELECT id FROM notifications
                   WHERE delivered_at IS NULL AND (next_attempt_at IS NULL OR next_attempt_at <= %s)
                   ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)
               UPDATE notifications SET next_attempt_at = %s, claim_id = %s FROM due WHERE notifications.id = due.id
               RETURNING notifications.*""",
            (now, limit, now + lease, claim),
        )
        return sorted((replace(notification_from_row(row), claim_id=claim) for row in rows), key=lambda n: n.id)

    async def claim_lookups(self, *, limit: int, lease: float) -> list[Job]:
        now = self._clock()
        rows = await self._claim(
            f"""WITH due AS (
                    SELECT id FROM jobs WHERE status IN ({_IN_FLIGHT}) AND lookup_at <= %s
                    ORDER BY lookup_at LIMIT %s FOR UPDATE SKIP LOCKED)
                UPDATE jobs SET lookup_at = %s FROM due WHERE jobs.id = due.id
                RETURNING jobs.*""",
            (now, limit, now + lease),
        )
        return sorted((job_from_row(row, ()) for row in rows), key=lambda job: (job.sent_at or 0.0, job.id))

    async def claim_events(self, *, limit: int, lease: float) -> list[Event]:
        now, claim = self._clock(), new_claim(self.claimant)
        rows = await self._claim(CLAIM_EVENTS, (now, limit, now + lease, claim))
        return sorted((replace(event_from_row(row), claim_id=claim) for row in rows), key=lambda event: event.id)

    async def _claim(self, sql: str, params: tuple[object, ...]) -> list[DictRow]:
        async with self._transaction() as db:
            cursor = await db.execute(sql, params)
            return await cursor.fetchall()

    async def release_claim(self, claim: str) -> int:
        """Hand back what one claim took and has not finished (a worker that stops early: a pause mid-batch, a
        shutdown), so that it is due again at once rather than when its lease ends. Returns how many."""
        async with self._transaction() as db:
            released = 0
            for sql in _RELEASE:
                cursor = await db.execute(sql + " AND claim_id = %s", (claim,))
                released += max(cursor.rowcount, 0)
            if released:
                await self._hint(db, "downloads", "notifications", "events")  # due now: any instance may take them
        return released

    async def release_claims(self, claimant: str | None = None) -> int:
        """Hand back every download, notification and event claimed and not finished by a process now gone: with
        no `claimant`, every claim (an instance that owns its database alone, at start-up); with one, the claims
        that instance made (it restarted: its old claims are dead, while other instances' are live). Returns how many
        were released."""
        owned, params = ("", ()) if claimant is None else (" AND claim_id LIKE %s", (claimant_name(claimant) + ".%",))
        async with self._transaction() as db:
            released = 0
            for sql in _RELEASE:
                cursor = await db.execute(sql + owned, params)
                released += max(cursor.rowcount, 0)
            if released:
                await self._hint(db, "downloads", "notifications", "events")  # due now: any instance may take them
        return released

    async def complete_events(
        self, outcomes: Sequence[EventOutcome], *, unless_flag: str | None = None
    ) -> list[list[str] | Exception] | None:
        """A batch of handled events in one transaction, each in a savepoint: see `StoreProtocol.complete_events`.
        When any of them is guarded, every other guarded follow-up waits for this transaction (the counts' lock)."""
        async with self._transaction() as db:
            if unless_flag is not None and await _flag_set(db, unless_flag):
                return None
            return await self._record_outcomes(db, outcomes)

    async def handle_events(
        self,
        decide: Callable[[Sequence[tuple[Event, Job | None]]], Sequence[EventOutcome]],
        *,
        limit: int,
        lease: float,
        unless_flag: str | None = None,
    ) -> list[list[str] | Exception] | None:
        """Claim, read, decide and record a batch of events in one transaction: see `StoreProtocol.handle_events`.
        The claimed rows stay locked until it commits, so no other instance's claim can take them meanwhile."""
        now, claim = self._clock(), new_claim(self.claimant)
        async with self._transaction() as db:
            if unless_flag is not None and await _flag_set(db, unless_flag):
                return None
            cursor = await db.execute(CLAIM_EVENTS, (now, limit, now + lease, claim))
            events = sorted((replace(event_from_row(row), claim_id=claim) for row in await cursor.fetchall()),
                            key=lambda event: event.id)  # fmt: skip
            jobs = await self.get_jobs({event.job_id for event in events}) if events else {}
            outcomes = decide([(event, jobs.get(event.job_id)) for event in events])
            return await self._record_outcomes(db, outcomes)

    async def _record_outcomes(self, db: Connection, outcomes: Sequence[EventOutcome]) -> list[list[str] | Exception]:
        """Each outcome in a savepoint of its own: one that fails is rolled back alone and answered with its error.
        When any of them is guarded, every other guarded follow-up waits for this transaction (the counts' lock)."""
        if any(outcome.guard is not None and outcome.followups for outcome in outcomes):
            await db.execute(FOLLOWUPS_LOCK)
        results: list[list[str] | Exception] = []
        for outcome in outcomes:
            try:
                async with db.transaction():  # a savepoint: this event alone is rolled back if it fails
                    results.append(await self._record_outcome(db, outcome))
            except psycopg.Error as exc:
                results.append(StoreError(f"PostgreSQL: {exc}"))
            except Exception as exc:
                results.append(exc)
        return results

    async def _record_outcome(self, db: Connection, outcome: EventOutcome) -> list[str]:
        followups, notes = outcome.followups, outcome.notes
        if outcome.guard is not None and followups:
            followups, stopped = outcome.guard.decide(*await _guard_counts(db, outcome.guard))
            notes = [*notes, *stopped]
        return await self._record_event(db, outcome.event_id, followups, outcome.notifications, notes, outcome.claim)


CLAIM_EVENTS = """WITH due AS (
                      SELECT id FROM events
                      WHERE processed_at IS NULL AND (claimed_until IS NULL OR claimed_until <= %s)
                      ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)
                  UPDATE events SET claimed_until = %s, claim_id = %s FROM due WHERE events.id = due.id
                  RETURNING events.*"""


async def _flag_set(db: Connection, name: str) -> bool:
    cursor = await db.execute("SELECT 1 FROM flags WHERE name = %s", (name,))
    return await cursor.fetchone() is not None


# Held by every transaction that counts follow-ups for the money guards, until it commits: the counts it takes are
# then true until its own follow-ups are in.
FOLLOWUPS_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('reelhook:followups', 0))"


async def _guard_counts(db: Connection, guard: FollowupGuard) -> tuple[int, int]:
    """The chain's jobs and the follow-ups since the guard's window began, counted in the caller's transaction."""
    cursor = await db.execute(
        """SELECT (SELECT count(*) FROM jobs WHERE root_id = %s) AS in_chain,
                  (SELECT count(*) FROM jobs WHERE rule IS NOT NULL AND created_at >= %s) AS in_day""",
        (guard.root_id, guard.since),
    )
    row = await cursor.fetchone()
    return (int(row["in_chain"]), int(row["in_day"])) if row else (0, 0)


_RELEASE = (
    """UPDATE videos SET next_attempt_at = NULL, claim_id = NULL WHERE status = 'pending' AND claim_id IS NOT NULL""",
    """UPDATE notifications SET next_attempt_at = NULL, claim_id = NULL
       WHERE delivered_at IS NULL AND claim_id IS NOT NULL""",
    """UPDATE events SET claimed_until = NULL, claim_id = NULL WHERE processed_at IS NULL AND claim_id IS NOT NULL""",
)
