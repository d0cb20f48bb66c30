"""The callback inbox on PostgreSQL: the rules of storage/inbox.py (a re-delivery is counted, not stored again; at
most MAX_BODIES distinct bodies per job), with the job's row locked for the whole transaction, so two instances
given two callbacks of one job apply them one after the other."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from psycopg.rows import DictRow

from storage.inbox import DELIVERY_ID_HEADER, MAX_BODIES, CallbackOutcome, JobMismatch
from storage.lifecycle import TERMINAL, sql_list
from storage.postgres.database import Connection, PostgresDatabase, printable
from storage.records import CallbackResult, Cost, EventType, JobStatus


class Inbox(PostgresDatabase):
    async def record_callback(
        self,
        job_id: str,
        provider: str,
        *,
        body: bytes,
        headers: Iterable[tuple[str, str]],
        result: CallbackResult,
    ) -> CallbackOutcome:
        """Store a verified callback and apply it to its job, in one transaction (storage.Store.record_callback)."""
        headers = list(headers)
        digest = hashlib.sha256(body).hexdigest()
        delivery_id = next((value for name, value in headers if name.lower() == DELIVERY_ID_HEADER), None)
        async with self._transaction() as db:
            job = await self._locked_job(db, job_id)
            known = job["provider_job_id"]
            if job["provider"] != provider or (result.provider_job_id and known and known != result.provider_job_id):
                raise JobMismatch(f"callback for {provider} job {result.provider_job_id} does not belong to {job_id}")
            if await self._count_redelivery(db, job_id, digest, delivery_id):
                return CallbackOutcome.DUPLICATE
            outcome = await self._apply_result(db, job, result)
            await self._keep_body(
                db, job_id, provider, body=body, headers=headers, digest=digest, delivery_id=delivery_id,
                status=result.status.value, effect=outcome.value,
            )  # fmt: skip
        return outcome

    async def _count_redelivery(self, db: Connection, job_id: str, digest: str, delivery_id: str | None) -> bool:
        cursor = await db.execute(
            """UPDATE callbacks SET deliveries = deliveries + 1, last_received_at = %s
               WHERE id = (SELECT id FROM callbacks WHERE job_id = %s AND (body_sha256 = %s OR delivery_id = %s)
                           ORDER BY id LIMIT 1)""",
            (self._clock(), job_id, digest, delivery_id),
        )
        return cursor.rowcount == 1

    async def _keep_body(
        self, db: Connection, job_id: str, provider: str, *, body: bytes, headers: list[tuple[str, str]],
        digest: str, delivery_id: str | None, status: str, effect: str,
    ) -> None:  # fmt: skip
        now = self._clock()
        cursor = await db.execute(
            "SELECT count(*) AS kept, max(id) AS last FROM callbacks WHERE job_id = %s", (job_id,)
        )
        row = await cursor.fetchone()
        kept, last = (row["kept"], row["last"]) if row else (0, None)
        values = (now, json.dumps(headers), body, status, effect, digest, delivery_id, now)
        if kept < MAX_BODIES:
            await db.execute(
                """INSERT INTO callbacks (job_id, provider, received_at, headers, body, status, effect, body_sha256,
                                          delivery_id, last_received_at)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (job_id, provider, *values),
            )
        else:  # the last row always holds the latest distinct body, and counts the ones it replaced
            await db.execute(
                """UPDATE callbacks SET received_at = %s, headers = %s, body = %s, status = %s, effect = %s,
                          body_sha256 = %s, delivery_id = %s, last_received_at = %s, deliveries = 1,
                          replaced = replaced + 1, pruned_at = NULL
                   WHERE id = %s""",
                (*values, last),
            )

    async def _apply_result(self, db: Connection, job: DictRow, result: CallbackResult) -> CallbackOutcome:
        status = JobStatus(job["status"])
        if status.terminal and not (job["lost_at"] is not None and result.status.terminal):
            return CallbackOutcome.DUPLICATE
        provider_job_id = job["provider_job_id"] or result.provider_job_id
        progress = result.progress if result.progress is not None else job["progress"]
        error = None if result.error is None else printable(result.error)
        if not result.status.terminal:
            await self._set_status(db, job, JobStatus.RUNNING, progress=progress, provider_job_id=provider_job_id)
            return CallbackOutcome.PROGRESS
        # A lost job's late result is applied: the provider ran it and may have charged for it (storage.lifecycle).
        await self._set_status(
            db, job, result.status, progress=progress, provider_job_id=provider_job_id, error=error,
            result=json.dumps(result.result), next_attempt_at=None, lost_at=None,
        )  # fmt: skip
        await self._set_costs(db, job, result.costs)
        if result.status is JobStatus.SUCCEEDED:
            now = self._clock()
            async with db.cursor() as cursor:
                await cursor.executemany(
                    """INSERT INTO videos (job_id, idx, url, status, updated_at) VALUES (%s, %s, %s, 'pending', %s)
                       ON CONFLICT DO NOTHING""",
                    [(job["id"], index, url, now) for index, url in enumerate(result.media_urls)],
                )
            await self._emit(db, EventType.JOB_SUCCEEDED, job["id"])
        elif status is not JobStatus.FAILED:  # a lost job's late failure was reported when it was lost
            await self._emit(db, EventType.JOB_FAILED, job["id"])
        return CallbackOutcome.APPLIED

    async def _set_costs(self, db: Connection, job: DictRow, costs: Iterable[Cost]) -> None:
        # Set, not added (storage/inbox.py says why).
        async with db.cursor() as cursor:
            await cursor.executemany(
                """INSERT INTO job_costs (job_id, provider, unit, amount, recorded_at) VALUES (%s, %s, %s, %s, %s)
                   ON CONFLICT (job_id, unit) DO UPDATE SET amount = excluded.amount""",
                [(job["id"], job["provider"], cost.unit, cost.amount, self._clock()) for cost in costs],
            )

    async def callback_count(self, job_id: str) -> int:
        """Callbacks received for a job, re-deliveries and replaced bodies included."""
        rows = await self._read(
            "SELECT coalesce(sum(deliveries + replaced), 0) AS n FROM callbacks WHERE job_id = %s", (job_id,)
        )
        return int(rows[0]["n"])

    async def prune_callbacks(self, *, older_than: float) -> int:
        """Drop the bodies and headers of finished jobs' callbacks received before `older_than`, keeping each one's
        digest, status and counts; return how many were pruned."""
        async with self._transaction() as db:
            cursor = await db.execute(
                f"""UPDATE callbacks SET body = ''::bytea, headers = '[]', pruned_at = %s
                   WHERE pruned_at IS NULL AND received_at < %s
                     AND job_id IN (SELECT id FROM jobs WHERE status IN ({sql_list(TERMINAL)}))""",
                (self._clock(), older_than),
            )
            return cursor.rowcount
