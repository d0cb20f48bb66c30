"""Reads for people on PostgreSQL: the SQL of storage/reports.py, counting with `FILTER` where SQLite sums
booleans."""

from __future__ import annotations

from storage.lifecycle import IN_FLIGHT, sql_list
from storage.postgres.database import PostgresDatabase
from storage.records import JobStatus
from storage.reports import CallbackRecord, ChainNode, EventRecord, NotificationRecord, ProviderCounts, Spend, utc_day


class Reports(PostgresDatabase):
    async def provider_counts(
        self, providers: list[str], *, since: float, now: float | None = None
    ) -> dict[str, ProviderCounts]:
        """Per provider: what storage.Store.provider_counts reports."""
        now = self.clock() if now is None else now
        counts: dict[str, dict[str, object]] = {name: {} for name in providers}
        in_flight = f"status IN ({sql_list(IN_FLIGHT)})"
        rows = await self._read(
            f"""SELECT provider,
                  count(*) FILTER (WHERE {in_flight}) AS in_flight,
                  count(*) FILTER (WHERE status = 'queued') AS queued,
                  count(*) FILTER (WHERE status = 'succeeded' AND updated_at >= %s) AS succeeded_since,
                  count(*) FILTER (WHERE status = 'failed' AND updated_at >= %s) AS failed_since,
                  count(*) FILTER (WHERE {in_flight} AND (lookups > 0 OR lookup_at <= %s)) AS overdue,
                  count(*) FILTER (WHERE lost_at >= %s) AS lost_since
                FROM jobs GROUP BY provider""",
            (since, since, now, since),
        )
        for row in rows:
            counts.setdefault(row.pop("provider"), {}).update({key: int(value) for key, value in row.items()})
        rows = await self._read(
            """SELECT jobs.provider, count(*) FILTER (WHERE videos.status = 'pending') AS pending,
                      count(*) FILTER (WHERE videos.status = 'failed') AS failed
               FROM videos JOIN jobs ON jobs.id = videos.job_id GROUP BY jobs.provider"""
        )
        for row in rows:
            counts.setdefault(row["provider"], {}).update(
                downloads_pending=int(row["pending"]), downloads_failed=int(row["failed"])
            )
        rows = await self._read(
            "SELECT provider, max(coalesce(last_received_at, received_at)) AS at FROM callbacks GROUP BY provider"
        )
        for row in rows:
            counts.setdefault(row["provider"], {}).update(last_callback_at=row["at"])
        return {name: ProviderCounts(name, **values) for name, values in counts.items()}  # type: ignore[arg-type]

    async def waiting_counts(self) -> tuple[int, int]:
        """Notifications not yet delivered, and queued jobs that rules created (what a pause holds back)."""
        rows = await self._read(
            """SELECT (SELECT count(*) FROM notifications WHERE delivered_at IS NULL) AS notifications,
                      (SELECT count(*) FROM jobs WHERE status = 'queued' AND rule IS NOT NULL) AS followups"""
        )
        return int(rows[0]["notifications"]), int(rows[0]["followups"])

    async def oldest_waiting(self) -> dict[str, float | None]:
        """When the oldest item still waiting in each queue was recorded (None: the queue is empty)."""
        rows = await self._read(
            """SELECT (SELECT min(created_at) FROM jobs WHERE status = 'queued') AS submissions,
                      (SELECT min(updated_at) FROM videos WHERE status = 'pending') AS downloads,
                      (SELECT min(created_at) FROM events WHERE processed_at IS NULL) AS events,
                      (SELECT min(created_at) FROM notifications WHERE delivered_at IS NULL) AS notifications"""
        )
        return dict(rows[0])

    async def job_callbacks(self, job_id: str) -> list[CallbackRecord]:
        rows = await self._read(
            """SELECT received_at, last_received_at, status, effect, body, deliveries, pruned_at
               FROM callbacks WHERE job_id = %s ORDER BY received_at, id""",
            (job_id,),
        )
        return [
            CallbackRecord(r["received_at"], r["last_received_at"], r["status"], r["effect"], bytes(r["body"]),
                           int(r["deliveries"]), r["pruned_at"])
            for r in rows
        ]  # fmt: skip

    async def job_events(self, job_id: str) -> list[EventRecord]:
        rows = await self._read(
            "SELECT type, created_at, video_index FROM events WHERE job_id = %s ORDER BY id", (job_id,)
        )
        return [EventRecord(r["type"], r["created_at"], r["video_index"]) for r in rows]

    async def chain(self, root_id: str, *, limit: int = 500) -> list[ChainNode]:
        """The jobs of one chain, root first, then by depth and age (at most `limit`), each with its count of
        unprocessed events."""
        rows = await self._read(
            """SELECT id, parent_id, action, status, depth, created_at, rule,
                      (SELECT count(*) FROM events WHERE events.job_id = jobs.id AND processed_at IS NULL) AS pending
               FROM jobs WHERE root_id = %s ORDER BY depth, created_at, id LIMIT %s""",
            (root_id, limit),
        )
        return [
            ChainNode(r["id"], r["parent_id"], r["action"], JobStatus(r["status"]), r["depth"], r["created_at"],
                      r["rule"], int(r["pending"]))
            for r in rows
        ]  # fmt: skip

    async def job_notifications(self, job_id: str) -> list[NotificationRecord]:
        rows = await self._read(
            """SELECT n.rule, n.url, n.attempts, n.created_at, n.delivered_at, n.error FROM notifications n
               JOIN events e ON e.id = n.event_id WHERE e.job_id = %s ORDER BY n.id""",
            (job_id,),
        )
        return [NotificationRecord(**row) for row in rows]

    async def spend_by_day(self, *, since: float) -> list[Spend]:
        """What storage.Store.spend_by_day reports. `floor`, not a cast: PostgreSQL's cast rounds."""
        rows = await self._read(
            """SELECT floor(recorded_at / 86400)::bigint AS day, provider, unit, sum(amount) AS amount, count(*) AS n
               FROM job_costs WHERE recorded_at >= %s
               GROUP BY day, provider, unit ORDER BY day DESC, provider, unit""",
            (since,),
        )
        return [Spend(r["provider"], r["unit"], float(r["amount"]), int(r["n"]), utc_day(r["day"])) for r in rows]

    async def spend_totals(self) -> list[Spend]:
        """Every cost ever recorded, summed per provider and unit."""
        rows = await self._read(
            """SELECT provider, unit, sum(amount) AS amount, count(*) AS n FROM job_costs
               GROUP BY provider, unit ORDER BY provider, unit"""
        )
        return [Spend(r["provider"], r["unit"], float(r["amount"]), int(r["n"])) for r in rows]
