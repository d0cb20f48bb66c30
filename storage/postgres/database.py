"""The pool under the PostgreSQL store: opening, migrating, one transaction per state change, and the writes every
part shares.

The promises are SQLite's (storage/database.py): every method that changes state is one transaction, committed
before it returns; a state change and the events it emits commit together. What SQLite gets from having one
writer, this engine gets from row locks: a write that depends on a job's current state reads the job
`FOR UPDATE` first (`_locked_job`), so two instances applying two callbacks of one job take turns, and the second
sees what the first committed. Reads run on their own pooled connection in autocommit, each seeing what was
committed when it started.

Connections come from a psycopg_pool pool: several workers of one process query at once, and a connection the
server dropped is replaced on checkout. A psycopg error leaves as `StoreError`, its cause attached.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Self

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from storage.errors import StoreError
from storage.lifecycle import check_transition
from storage.postgres.schema import migrate
from storage.postgres.wakeups import CHANNEL
from storage.records import EventType, Job, JobStatus, NewJob

Connection = AsyncConnection[DictRow]


class PostgresDatabase:
    def __init__(
        self, pool: AsyncConnectionPool[Connection], *, clock: Callable[[], float] = time.time, claimant: str = ""
    ) -> None:
        self._pool = pool
        self._clock = clock
        self.claimant = claimant  # who this process is, in its claim ids (storage/claims.py new_claim)

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        max_connections: int = 10,
        timeout: float = 30.0,
        claimant: str = "",
    ) -> Self:
        """Connect to the database at `url` (postgresql://…), migrate it, and return the store."""
        pool = AsyncConnectionPool(
            url,
            connection_class=Connection,
            kwargs={"autocommit": True, "row_factory": dict_row},
            min_size=1,
            max_size=max_connections,
            timeout=timeout,
            check=AsyncConnectionPool.check_connection,
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=timeout)
            async with pool.connection() as conn:
                await migrate(conn)
        except psycopg.Error as exc:
            await pool.close()
            raise StoreError(f"PostgreSQL: {exc}") from exc
        except BaseException:
            await pool.close()
            raise
        return cls(pool, clock=clock, claimant=claimant)

    @property
    def clock(self) -> Callable[[], float]:
        """The store's time source; workers schedule retries on it so that 'due' means one thing everywhere."""
        return self._clock

    async def close(self) -> None:
        await self._pool.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Connection]:
        try:
            async with self._pool.connection() as conn, conn.transaction():
                yield conn
        except psycopg.Error as exc:  # callers outside storage/ catch StoreError, whichever engine runs
            raise StoreError(f"PostgreSQL: {exc}") from exc

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[DictRow]:
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute(sql, params)
                return await cursor.fetchall()
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {exc}") from exc

    async def _insert_job(self, db: Connection, new: NewJob) -> str | None:
        job_id = uuid.uuid4().hex
        root_id, depth = job_id, 0
        if new.parent_id is not None:
            cursor = await db.execute("SELECT root_id, depth FROM jobs WHERE id = %s", (new.parent_id,))
            parent = await cursor.fetchone()
            if parent is None:
                raise LookupError(f"parent job {new.parent_id} does not exist")
            root_id, depth = parent["root_id"], parent["depth"] + 1
        now = self._clock()
        cursor = await db.execute(
            """INSERT INTO jobs (id, provider, action, status, params, parent_id, root_id, depth, rule, origin,
                                 created_at, updated_at)
               VALUES (%s, %s, %s, 'queued', %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (origin) DO NOTHING""",
            (job_id, new.provider, new.action, json.dumps(new.params), new.parent_id, root_id, depth, new.rule,
             new.origin, now, now),
        )  # fmt: skip
        if cursor.rowcount != 1:
            return None
        await self._hint(db, "submissions")
        return job_id

    async def _job_id_for_origin(self, origin: str | None) -> str:
        rows = await self._read("SELECT id FROM jobs WHERE origin = %s", (origin,))
        return str(rows[0]["id"])

    async def _set_status(self, db: Connection, job: Job | DictRow, target: JobStatus, **fields: Any) -> bool:
        """Move `job` to `target` if the lifecycle allows it (else InvalidTransition), as a compare-and-set on the
        status it was read with: False, and nothing written, when the job has moved since."""
        if isinstance(job, Job):
            job_id, current, lost = job.id, job.status, job.lost_at is not None
        else:
            job_id, current, lost = job["id"], JobStatus(job["status"]), job["lost_at"] is not None
        check_transition(job_id, current, target, lost=lost)
        assignments = "".join(f", {name} = %s" for name in fields)
        sql = f"UPDATE jobs SET status = %s, updated_at = %s{assignments} WHERE id = %s AND status = %s"
        cursor = await db.execute(sql, (target.value, self._clock(), *fields.values(), job_id, current.value))
        if cursor.rowcount != 1:
            return False
        # A finished job frees its provider's slot, a job put back is due again, a sent one has a deadline.
        if target is not JobStatus.RUNNING:
            await self._hint(db, "lookups" if target is JobStatus.SUBMITTED else "submissions")
        return True

    async def _emit(self, db: Connection, type: EventType, job_id: str, index: int | None = None) -> None:
        await db.execute(
            "INSERT INTO events (type, job_id, video_index, created_at) VALUES (%s, %s, %s, %s)",
            (type.value, job_id, index, self._clock()),
        )
        await self._hint(db, "events", *(("downloads",) if type is EventType.JOB_SUCCEEDED else ()))

    async def _hint(self, db: Connection, *queues: str) -> None:
        """Tell every listening instance that `queues` have new work (storage.postgres.wakeups). Sent inside the
        transaction, so PostgreSQL delivers it on commit and drops it on rollback, folding repeats into one."""
        for queue in queues:
            await db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, queue))

    async def _locked_job(self, db: Connection, job_id: str) -> DictRow:
        """The job's row, locked until the transaction ends: the writes that depend on it take turns."""
        cursor = await db.execute("SELECT * FROM jobs WHERE id = %s FOR UPDATE", (job_id,))
        row = await cursor.fetchone()
        if row is None:
            raise LookupError(f"job {job_id} does not exist")
        return row


def printable(text: str) -> str:
    """`text` as PostgreSQL can store it: NUL, which no text column holds, and code points UTF-8 cannot encode
    (lone surrogates) become U+FFFD."""
    text = text.replace("\x00", "\ufffd")
    return text if text.isascii() else text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
