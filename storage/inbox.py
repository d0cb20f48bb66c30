"""The callback inbox: every callback (and fetch answer) a provider sends, stored and applied in one transaction.

A provider re-delivers: TTAPI up to three times, APIMart for minutes, anyone with a valid token as often as they
like. What is kept for a job is bounded, whatever arrives:
- a body byte-identical to one already kept, or carrying a delivery id (`webhook-id`) already seen, is a
  re-delivery: its row's count goes up, nothing else is written;
- at most `MAX_BODIES` distinct bodies are kept per job: the first ones, and in the last row always the latest,
  which the row's `replaced` count says stands for that many.
So a replay storm costs O(1) disk per job. Old bodies of finished jobs can be pruned (`prune_callbacks`), leaving
their digest.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from enum import StrEnum

from storage.database import Database, printable
from storage.lifecycle import TERMINAL, sql_list
from storage.records import CallbackResult, Cost, EventType, JobStatus

MAX_BODIES = 10  # distinct callback bodies kept per job: the first nine and the latest
DELIVERY_ID_HEADER = "webhook-id"  # Standard Webhooks (WaveSpeed): the same on every re-delivery of a message


# What a callback's transaction reads of the job's kept callbacks, in one statement: the first row it re-delivers
# (the same body, or the same delivery id), how many rows are kept and the last of them.
KEPT_SQL = """SELECT (SELECT id FROM callbacks WHERE job_id = ? AND (body_sha256 = ? OR delivery_id = ?)
                      ORDER BY id LIMIT 1),
                     count(*), max(id)
              FROM callbacks WHERE job_id = ?"""


class CallbackOutcome(StrEnum):
    APPLIED = "applied"  # a final result: the job finished now
    PROGRESS = "progress"  # a non-terminal report
    DUPLICATE = "duplicate"  # the job had already finished, or this exact callback was seen: nothing changes


class JobMismatch(Exception):
    """A callback that does not belong to the job its token names."""


class Inbox(Database):
    async def record_callback(
        self,
        job_id: str,
        provider: str,
        *,
        body: bytes,
        headers: Iterable[tuple[str, str]],
        result: CallbackResult,
    ) -> CallbackOutcome:
        """Store a verified callback and apply it to its job, in one transaction.

        Raises JobMismatch, writing nothing, when the callback is about another provider job than this one, and
        LookupError when the job does not exist.
        """
        headers = list(headers)
        digest = hashlib.sha256(body).hexdigest()
        delivery_id = next((value for name, value in headers if name.lower() == DELIVERY_ID_HEADER), None)

        def work(db: sqlite3.Connection) -> CallbackOutcome:
            job = self._locked_job(db, job_id)
            known = job["provider_job_id"]
            if job["provider"] != provider or (result.provider_job_id and known and known != result.provider_job_id):
                raise JobMismatch(f"callback for {provider} job {result.provider_job_id} does not belong to {job_id}")
            seen, kept, last = db.execute(KEPT_SQL, (job_id, digest, delivery_id, job_id)).fetchone()
            if seen is not None:
                db.execute(
                    "UPDATE callbacks SET deliveries = deliveries + 1, last_received_at = ? WHERE id = ?",
                    (self._clock(), seen),
                )
                return CallbackOutcome.DUPLICATE
            outcome = self._apply_result(db, job, result)
            self._keep_body(
                db, job_id, provider, body=body, headers=headers, digest=digest, delivery_id=delivery_id,
                status=result.status.value, effect=outcome.value, kept=kept, last=last,
            )  # fmt: skip
            return outcome

        # Grouped: callbacks arriving together share one transaction and its COMMIT (storage/groups.py).
        outcome: CallbackOutcome = await self._transaction(work)
        return outcome

    def _keep_body(
        self, db: sqlite3.Connection, job_id: str, provider: str, *, body: bytes, headers: list[tuple[str, str]],
        digest: str, delivery_id: str | None, status: str, effect: str, kept: int, last: int | None,
    ) -> None:  # fmt: skip
        now = self._clock()
        values = (now, json.dumps(headers), body, status, effect, digest, delivery_id, now)
        if kept < MAX_BODIES:
            db.execute(
                """INSERT INTO callbacks (job_id, provider, received_at, headers, body, status, effect, body_sha256,
                                          delivery_id, last_received_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (job_id, provider, *values),
            )
        else:  # the last row always holds the latest distinct body, and counts the ones it replaced
            db.execute(
                """UPDATE callbacks SET received_at = ?, headers = ?, body = ?, status = ?, effect = ?,
                          body_sha256 = ?, delivery_id = ?, last_received_at = ?, deliveries = 1,
                          replaced = replaced + 1, pruned_at = NULL
                   WHERE id = ?""",
                (*values, last),
            )

    def _apply_result(self, db: sqlite3.Connection, job: sqlite3.Row, result: CallbackResult) -> CallbackOutcome:
        status = JobStatus(job["status"])
        if status.terminal and not (job["lost_at"] is not None and result.status.terminal):
            return CallbackOutcome.DUPLICATE
        provider_job_id = job["provider_job_id"] or result.provider_job_id
        progress = result.progress if result.progress is not None else job["progress"]
        error = None if result.error is None else printable(result.error)
        if not result.status.terminal:
            self._set_status(db, job, JobStatus.RUNNING, progress=progress, provider_job_id=provider_job_id)
            return CallbackOutcome.PROGRESS
        # A lost job's late result is applied: the provider ran it and may have charged for it (storage.lifecycle).
        self._set_status(
            db, job, result.status, progress=progress, provider_job_id=provider_job_id, error=error,
            result=json.dumps(result.result), next_attempt_at=None, lost_at=None,
        )  # fmt: skip
        self._set_costs(db, job, result.costs)
        if result.status is JobStatus.SUCCEEDED:
            now = self._clock()
            db.executemany(
                "INSERT OR IGNORE INTO videos (job_id, idx, url, status, updated_at) VALUES (?, ?, ?, 'pending', ?)",
                [(job["id"], index, url, now) for index, url in enumerate(result.media_urls)],
            )
            self._emit(db, EventType.JOB_SUCCEEDED, job["id"])
        elif status is not JobStatus.FAILED:  # a lost job's late failure was reported when it was lost
            self._emit(db, EventType.JOB_FAILED, job["id"])
        return CallbackOutcome.APPLIED

    def _set_costs(self, db: sqlite3.Connection, job: sqlite3.Row, costs: Iterable[Cost]) -> None:
        # The job's cost, set and not added: the result that reports it is applied once, and should a late result
        # ever report it again it replaces the amount, keeping the day it was first recorded on.
        db.executemany(
            """INSERT INTO job_costs (job_id, provider, unit, amount, recorded_at) VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (job_id, unit) DO UPDATE SET amount = excluded.amount""",
            [(job["id"], job["provider"], cost.unit, cost.amount, self._clock()) for cost in costs],
        )

    async def callback_count(self, job_id: str) -> int:
        """Callbacks received for a job, re-deliveries and replaced bodies included."""
        rows = await self._read("SELECT coalesce(sum(deliveries + replaced), 0) FROM callbacks WHERE job_id = ?",
                                (job_id,))  # fmt: skip
        return int(rows[0][0])

    async def prune_callbacks(self, *, older_than: float) -> int:
        """Drop the bodies and headers of finished jobs' callbacks received before `older_than`, keeping each one's
        digest, status and counts; return how many were pruned."""

        def work(db: sqlite3.Connection) -> int:
            return db.execute(
                f"""UPDATE callbacks SET body = x'', headers = '[]', pruned_at = ?
                   WHERE pruned_at IS NULL AND received_at < ?
                     AND job_id IN (SELECT id FROM jobs WHERE status IN ({sql_list(TERMINAL)}))""",
                (self._clock(), older_than),
            ).rowcount

        return await self._transaction(work)
