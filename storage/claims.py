"""Claims on the SQLite engine: each queue's due items handed to one caller only.

SQLite has one writer at a time (`BEGIN IMMEDIATE`), so a claim here is simply a read and a write in one
transaction: no second claimer can read between the two. What the write records:
- a submission becomes SUBMITTED (for good: it may be paid for), after counting the provider's jobs in flight in
  the same transaction, so the per-provider limit is exact;
- a download, a notification or a lookup has its due time pushed `lease` seconds ahead, which hides it from other
  claimers until then; its outcome (`record_download`, `retry_download`, `record_notification`, `schedule_lookup`)
  writes the real next time;
- an event has its `claimed_until` pushed `lease` seconds ahead; completing it marks it processed.

Each claim of a download, a notification or an event also writes a fresh claim id on what it took, and returns it
on the records (`claim_id`). The outcome verbs given that id record only while it is still the item's claim: a
worker whose lease ran out, and whose item another claimer took, changes nothing (`record_download` and the other
outcomes answer False, `complete_event` raises `LeaseLost`). A long download renews its lease (`renew_download`)
under the same id.

The PostgreSQL engine keeps the same promises with row locks (storage/postgres/claims.py).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from storage.database import Database
from storage.errors import StoreError
from storage.lifecycle import IN_FLIGHT, sql_list
from storage.protocol import EventOutcome, FollowupGuard
from storage.queues import Queues
from storage.records import Event, EventType, Job, JobStatus, Notification, Video
from storage.rows import job_from_row, notification_from_row, video_from_row


class Claims(Queues, Database):
    if TYPE_CHECKING:  # a mixin of Store, whose own `_job` reads a job with its videos, notes and costs

        def _job(self, db: sqlite3.Connection, job_id: str) -> Job | None: ...

    async def claim_submissions(
        self, provider: str, *, slots: int, followups: bool = True, look_up_after: float = 900.0
    ) -> list[Job]:
        """Claim the provider's due queued jobs, oldest first, as many as its `slots` leave free now."""

        def work(db: sqlite3.Connection) -> list[sqlite3.Row]:
            row = db.execute(
                f"SELECT count(*) FROM jobs WHERE provider = ? AND status IN ({sql_list(IN_FLIGHT)})", (provider,)
            ).fetchone()
            free = slots - (int(row[0]) if row else 0)
            if free <= 0:
                return []
            now = self._clock()
            rows = db.execute(
                """SELECT * FROM jobs WHERE status = 'queued' AND provider = ?
                     AND (next_attempt_at IS NULL OR next_attempt_at <= ?) AND (? OR rule IS NULL)
                   ORDER BY created_at, id LIMIT ?""",
                (provider, now, followups, free),
            ).fetchall()
            for job in rows:
                self._set_status(
                    db, job, JobStatus.SUBMITTED, attempts=job["attempts"] + 1, next_attempt_at=None, sent_at=now,
                    lookup_at=now + look_up_after, lookups=0,
                )  # fmt: skip
            ids = [job["id"] for job in rows]
            return db.execute(
                f"SELECT * FROM jobs WHERE id IN ({','.join('?' * len(ids))}) ORDER BY created_at, id", ids
            ).fetchall()

        return [job_from_row(row, ()) for row in await self._transaction(work)]

    async def claim_downloads(self, *, limit: int, lease: float) -> list[Video]:
        claim = new_claim(self.claimant)

        def work(db: sqlite3.Connection) -> list[sqlite3.Row]:
            now = self._clock()
            return db.execute(
                """UPDATE videos SET next_attempt_at = ?, claim_id = ?
                   WHERE (job_id, idx) IN (
                       SELECT job_id, idx FROM videos
                       WHERE status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= ?)
                       ORDER BY updated_at, job_id, idx LIMIT ?)
                   RETURNING *""",
                (now + lease, claim, now, limit),
            ).fetchall()

        videos = (replace(video_from_row(row), claim_id=claim) for row in await self._transaction(work))
        return sorted(videos, key=lambda v: (v.updated_at, v.job_id, v.index))

    async def renew_download(self, job_id: str, index: int, *, claim: str, lease: float) -> bool:
        """Extend a claimed download's lease to `lease` seconds from now; False when the claim was taken over (or
        the video settled): its claimer should stop."""

        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                """UPDATE videos SET next_attempt_at = ?
                   WHERE job_id = ? AND idx = ? AND status = 'pending' AND claim_id = ?""",
                (self._clock() + lease, job_id, index, claim),
            )
            return cursor.rowcount == 1

        return await self._transaction(work)

    async def claim_notifications(self, *, limit: int, lease: float) -> list[Notification]:
        claim = new_claim(self.claimant)

        def work(db: sqlite3.Connection) -> list[sqlite3.Row]:
            now = self._clock()
            return db.execute(
                """UPDATE notifications SET next_attempt_at = ?, claim_id = ?
                   WHERE id IN (
                       SELECT id FROM notifications WHERE delivered_at IS NULL
                         AND (next_attempt_at IS NULL OR next_attempt_at <= ?)
                       ORDER BY id LIMIT ?)
                   RETURNING *""",
                (now + lease, claim, now, limit),
            ).fetchall()

        rows = await self._transaction(work)
        return sorted((replace(notification_from_row(row), claim_id=claim) for row in rows), key=lambda n: n.id)

    async def claim_lookups(self, *, limit: int, lease: float) -> list[Job]:
        def work(db: sqlite3.Connection) -> list[sqlite3.Row]:
            now = self._clock()
            return db.execute(
                f"""UPDATE jobs SET lookup_at = ?
                    WHERE id IN (
                        SELECT id FROM jobs INDEXED BY jobs_lookup_due
                         WHERE status IN ({sql_list(IN_FLIGHT)}) AND lookup_at <= ?
                        ORDER BY lookup_at LIMIT ?)
                    RETURNING *""",
                (now + lease, now, limit),
            ).fetchall()

        rows = await self._transaction(work)
        return sorted((job_from_row(row, ()) for row in rows), key=lambda job: (job.sent_at or 0.0, job.id))

    async def claim_events(self, *, limit: int, lease: float) -> list[Event]:
        claim = new_claim(self.claimant)
        rows = await self._transaction(lambda db: _claim_events(db, claim, self._clock(), lease, limit))
        return _events(rows, claim)

    async def release_claim(self, claim: str) -> int:
        """Hand back what one claim took and has not finished (a worker that stops early: a pause mid-batch, a
        shutdown), so that it is due again at once rather than when its lease ends. Returns how many."""
        return await self._transaction(lambda db: _release(db, " AND claim_id = ?", (claim,)))

    async def release_claims(self, claimant: str | None = None) -> int:
        """Hand back every download, notification and event claimed and not finished by a process now gone: with
        no `claimant`, every claim (an instance that owns its database alone, at start-up); with one, the claims
        that instance made (it restarted: its old claims are dead, while other instances' are live). Returns how many
        were released."""
        owned, params = ("", ()) if claimant is None else (" AND claim_id LIKE ?", (claimant_name(claimant) + ".%",))
        return await self._transaction(lambda db: _release(db, owned, params))

    async def complete_events(
        self, outcomes: Sequence[EventOutcome], *, unless_flag: str | None = None
    ) -> list[list[str] | Exception] | None:
        """A batch of handled events in one transaction, each in a savepoint: see `StoreProtocol.complete_events`."""

        def work(db: sqlite3.Connection) -> list[list[str] | Exception] | None:
            if unless_flag is not None and _flag_set(db, unless_flag):
                return None
            return self._record_outcomes(db, outcomes)

        return await self._transaction(work)

    async def handle_events(
        self,
        decide: Callable[[Sequence[tuple[Event, Job | None]]], Sequence[EventOutcome]],
        *,
        limit: int,
        lease: float,
        unless_flag: str | None = None,
    ) -> list[list[str] | Exception] | None:
        """Claim, read, decide and record a batch of events in one transaction: see `StoreProtocol.handle_events`."""
        claim = new_claim(self.claimant)

        def work(db: sqlite3.Connection) -> list[list[str] | Exception] | None:
            if unless_flag is not None and _flag_set(db, unless_flag):
                return None
            events = _events(_claim_events(db, claim, self._clock(), lease, limit), claim)
            jobs = {job_id: self._job(db, job_id) for job_id in {event.job_id for event in events}}
            outcomes = decide([(event, jobs[event.job_id]) for event in events])
            return self._record_outcomes(db, outcomes)

        return await self._transaction(work)

    def _record_outcomes(self, db: sqlite3.Connection, outcomes: Sequence[EventOutcome]) -> list[list[str] | Exception]:
        """Each outcome in a savepoint of its own: one that fails is rolled back alone and answered with its error."""
        results: list[list[str] | Exception] = []
        for outcome in outcomes:
            db.execute("SAVEPOINT event")
            try:
                results.append(self._record_outcome(db, outcome))
            except Exception as exc:
                if not db.in_transaction:  # SQLite rolled the whole transaction back: the batch failed
                    raise
                db.execute("ROLLBACK TO event")
                results.append(StoreError(f"SQLite: {exc}") if isinstance(exc, sqlite3.Error) else exc)
            db.execute("RELEASE event")
        return results

    def _record_outcome(self, db: sqlite3.Connection, outcome: EventOutcome) -> list[str]:
        followups, notes = outcome.followups, outcome.notes
        if outcome.guard is not None and followups:
            in_chain, in_day = _guard_counts(db, outcome.guard)
            followups, stopped = outcome.guard.decide(in_chain, in_day)
            notes = [*notes, *stopped]
        return self._record_event(db, outcome.event_id, followups, outcome.notifications, notes, outcome.claim)


def _claim_events(db: sqlite3.Connection, claim: str, now: float, lease: float, limit: int) -> list[sqlite3.Row]:
    return db.execute(
        """UPDATE events SET claimed_until = ?, claim_id = ?
           WHERE id IN (
               SELECT id FROM events
               WHERE processed_at IS NULL AND (claimed_until IS NULL OR claimed_until <= ?)
               ORDER BY id LIMIT ?)
           RETURNING *""",
        (now + lease, claim, now, limit),
    ).fetchall()


def _events(rows: list[sqlite3.Row], claim: str) -> list[Event]:
    return sorted(
        (Event(row["id"], EventType(row["type"]), row["job_id"], row["video_index"], row["created_at"], claim)
         for row in rows),
        key=lambda event: event.id,
    )  # fmt: skip


def _flag_set(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM flags WHERE name = ?", (name,)).fetchone() is not None


def _guard_counts(db: sqlite3.Connection, guard: FollowupGuard) -> tuple[int, int]:
    """The chain's jobs and the follow-ups since the guard's window began, counted in the caller's transaction."""
    row = db.execute(
        """SELECT (SELECT count(*) FROM jobs WHERE root_id = ?),
                  (SELECT count(*) FROM jobs WHERE rule IS NOT NULL AND created_at >= ?)""",
        (guard.root_id, guard.since),
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def new_claim(claimant: str = "") -> str:
    """A claim id: names one claim, so that only its holder can record the outcome of what it claimed; prefixed
    with the claimant (`<claimant>.<random>`) when the store was opened with one."""
    return f"{claimant_name(claimant)}.{uuid.uuid4().hex}" if claimant else uuid.uuid4().hex


def claimant_name(name: str) -> str:
    if not name.isalnum() or not name.isascii():  # it goes into a LIKE pattern: no % or _ in it
        raise ValueError(f"a claimant is letters and digits, got {name!r}")
    return name


_RELEASE = (
    """UPDATE videos SET next_attempt_at = NULL, claim_id = NULL WHERE status = 'pending' AND claim_id IS NOT NULL""",
    """UPDATE notifications SET next_attempt_at = NULL, claim_id = NULL
       WHERE delivered_at IS NULL AND claim_id IS NOT NULL""",
    """UPDATE events SET claimed_until = NULL, claim_id = NULL WHERE processed_at IS NULL AND claim_id IS NOT NULL""",
)


def _release(db: sqlite3.Connection, condition: str, params: tuple[str, ...]) -> int:
    return sum(max(db.execute(sql + condition, params).rowcount, 0) for sql in _RELEASE)
