"""Reads for people rather than workers: the dashboard's overview, a job's timeline and its chain.

Nothing here writes. Each query reads what one page shows in one or two statements; the pages decide how to show
it (receiver/web), the API how to spell it (receiver/views.py).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

from storage.database import Database
from storage.lifecycle import IN_FLIGHT, sql_list
from storage.records import JobStatus


@dataclass(frozen=True)
class ProviderCounts:
    provider: str
    in_flight: int = 0
    queued: int = 0
    succeeded_since: int = 0
    failed_since: int = 0
    downloads_pending: int = 0
    downloads_failed: int = 0
    last_callback_at: float | None = None
    overdue: int = 0  # in flight past the callback grace: looked up at least once, or its first lookup is due
    lost_since: int = 0  # given up on (failed as `lost:`) since `since`, whatever arrived after


@dataclass(frozen=True)
class Spend:
    """What one provider's jobs cost in one unit: on one UTC day (`day`, as YYYY-MM-DD), or ever (`day` None)."""

    provider: str
    unit: str
    amount: float
    jobs: int
    day: str | None = None


@dataclass(frozen=True)
class CallbackRecord:
    """One row of the callback inbox: a body and the re-deliveries of the same bytes."""

    received_at: float
    last_received_at: float | None
    status: str
    effect: str
    body: bytes
    deliveries: int
    pruned_at: float | None


@dataclass(frozen=True)
class EventRecord:
    type: str
    created_at: float
    video_index: int | None


@dataclass(frozen=True)
class ChainNode:
    id: str
    parent_id: str | None
    action: str
    status: JobStatus
    depth: int
    created_at: float
    rule: str | None = None
    pending_events: int = 0  # events of the job the rules have not handled yet: a follow-up may still come


@dataclass(frozen=True)
class NotificationRecord:
    """One notification a rule sent about one of a job's events, and how its delivery went."""

    rule: str
    url: str
    attempts: int
    created_at: float
    delivered_at: float | None
    error: str | None


class Reports(Database):
    async def provider_counts(
        self, providers: list[str], *, since: float, now: float | None = None
    ) -> dict[str, ProviderCounts]:
        """Per provider: jobs in flight (and of those, overdue at `now`) and queued, finished and lost since `since`,
        downloads waiting or failed, and the last callback received."""
        now = self.clock() if now is None else now
        counts: dict[str, dict[str, object]] = {name: {} for name in providers}
        in_flight = f"status IN ({sql_list(IN_FLIGHT)})"
        jobs_sql = f"""SELECT provider,
                  sum({in_flight}), sum(status = 'queued'),
                  sum(status = 'succeeded' AND updated_at >= ?), sum(status = 'failed' AND updated_at >= ?),
                  sum({in_flight} AND (lookups > 0 OR lookup_at <= ?)),
                  sum(lost_at >= ?)
                FROM jobs GROUP BY provider"""

        def read(db: sqlite3.Connection) -> tuple[list[sqlite3.Row], ...]:  # three statements, one hop
            return (
                db.execute(jobs_sql, (since, since, now, since)).fetchall(),
                db.execute(
                    """SELECT jobs.provider, sum(videos.status = 'pending'), sum(videos.status = 'failed')
                       FROM videos JOIN jobs ON jobs.id = videos.job_id GROUP BY jobs.provider"""
                ).fetchall(),
                db.execute(
                    "SELECT provider, max(coalesce(last_received_at, received_at)) FROM callbacks GROUP BY provider"
                ).fetchall(),
            )

        rows, video_rows, callback_rows = await self._query(read)
        for row in rows:
            counts.setdefault(row[0], {}).update(
                in_flight=int(row[1] or 0), queued=int(row[2] or 0), succeeded_since=int(row[3] or 0),
                failed_since=int(row[4] or 0), overdue=int(row[5] or 0), lost_since=int(row[6] or 0),
            )  # fmt: skip
        for row in video_rows:
            counts.setdefault(row[0], {}).update(downloads_pending=int(row[1] or 0), downloads_failed=int(row[2] or 0))
        for row in callback_rows:
            counts.setdefault(row[0], {}).update(last_callback_at=row[1])
        return {name: ProviderCounts(name, **values) for name, values in counts.items()}  # type: ignore[arg-type]

    async def spend_by_day(self, *, since: float) -> list[Spend]:
        """Costs recorded since `since`, summed per UTC day, provider and unit (units are never added together),
        newest day first. A job whose provider reported no cost is in none of the sums."""
        rows = await self._read(
            """SELECT CAST(recorded_at / 86400 AS INTEGER) AS day, provider, unit, sum(amount), count(*)
               FROM job_costs WHERE recorded_at >= ?
               GROUP BY day, provider, unit ORDER BY day DESC, provider, unit""",
            (since,),
        )
        return [Spend(r[1], r[2], float(r[3]), int(r[4]), utc_day(r[0])) for r in rows]

    async def spend_totals(self) -> list[Spend]:
        """Every cost ever recorded, summed per provider and unit: a total that only grows (`/metrics`' counter)."""
        rows = await self._read(
            "SELECT provider, unit, sum(amount), count(*) FROM job_costs GROUP BY provider, unit ORDER BY 1, 2"
        )
        return [Spend(r[0], r[1], float(r[2]), int(r[3])) for r in rows]

    async def waiting_counts(self) -> tuple[int, int]:
        """Notifications not yet delivered, and queued jobs that rules created (what a pause holds back)."""
        rows = await self._read(
            """SELECT (SELECT count(*) FROM notifications WHERE delivered_at IS NULL),
                      (SELECT count(*) FROM jobs WHERE status = 'queued' AND rule IS NOT NULL)"""
        )
        return int(rows[0][0]), int(rows[0][1])

    async def oldest_waiting(self) -> dict[str, float | None]:
        """When the oldest item still waiting in each queue was recorded (None: the queue is empty). A pending video
        counts from its last attempt, since videos keep no creation time."""
        rows = await self._read(
            """SELECT (SELECT min(created_at) FROM jobs WHERE status = 'queued'),
                      (SELECT min(updated_at) FROM videos WHERE status = 'pending'),
                      (SELECT min(created_at) FROM events WHERE processed_at IS NULL),
                      (SELECT min(created_at) FROM notifications WHERE delivered_at IS NULL)"""
        )
        return dict(zip(("submissions", "downloads", "events", "notifications"), rows[0], strict=True))

    async def job_callbacks(self, job_id: str) -> list[CallbackRecord]:
        rows = await self._read(
            """SELECT received_at, last_received_at, status, effect, body, deliveries, pruned_at
               FROM callbacks WHERE job_id = ? ORDER BY received_at, id""",
            (job_id,),
        )
        return [CallbackRecord(r[0], r[1], r[2], r[3], bytes(r[4]), int(r[5]), r[6]) for r in rows]

    async def job_events(self, job_id: str) -> list[EventRecord]:
        rows = await self._read(
            "SELECT type, created_at, video_index FROM events WHERE job_id = ? ORDER BY id", (job_id,)
        )
        return [EventRecord(r[0], r[1], r[2]) for r in rows]

    async def chain(self, root_id: str, *, limit: int = 500) -> list[ChainNode]:
        """The jobs of one chain, root first, then by depth and age (at most `limit`), each with its count of
        unprocessed events."""
        rows = await self._read(
            """SELECT id, parent_id, action, status, depth, created_at, rule,
                      (SELECT count(*) FROM events WHERE events.job_id = jobs.id AND processed_at IS NULL)
               FROM jobs WHERE root_id = ? ORDER BY depth, created_at, id LIMIT ?""",
            (root_id, limit),
        )
        return [ChainNode(r[0], r[1], r[2], JobStatus(r[3]), r[4], r[5], r[6], int(r[7])) for r in rows]

    async def job_notifications(self, job_id: str) -> list[NotificationRecord]:
        rows = await self._read(
            """SELECT n.rule, n.url, n.attempts, n.created_at, n.delivered_at, n.error FROM notifications n
               JOIN events e ON e.id = n.event_id WHERE e.job_id = ? ORDER BY n.id""",
            (job_id,),
        )
        return [NotificationRecord(*row) for row in rows]


def utc_day(day_number: int) -> str:
    return datetime.fromtimestamp(day_number * 86400, UTC).date().isoformat()
