"""The connection under the Store: opening, migrating, one transaction at a time, and the writes every part shares.

Durability rule: every method that changes state runs as one `BEGIN IMMEDIATE … COMMIT` and returns only after the
commit, so a caller that answers a provider or acts on a record after `await store.x()` never acts on something a
crash could take back. A state change and the events it emits are written in the same transaction: the event
outbox can never disagree with the jobs table.

One hop per store call: the connection lives on aiosqlite's one thread, and a transaction (or a read) is a plain
function of the `sqlite3.Connection` run there whole (`_transaction`, `_query`), not one awaited hop per statement.
A hop (queue to the thread, wake the event loop) costs ~0.09 ms of CPU against ~0.002 ms for a statement run
directly, and a callback's work took 86 of them (bench: ingest CPU per callback). Because one function runs at a
time on that thread, transactions cannot interleave and need no lock. The callbacks are grouped further: see
`storage/groups.py`.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

import aiosqlite

from storage.errors import StoreError
from storage.groups import CommitGroups
from storage.lifecycle import check_transition
from storage.records import EventType, Job, JobStatus, NewJob
from storage.schema import migrate

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], T]


class Database:
    def __init__(self, db: aiosqlite.Connection, *, clock: Callable[[], float] = time.time, claimant: str = "") -> None:
        self._db = db
        self._clock = clock
        self.claimant = claimant  # who this process is, in its claim ids (storage/claims.py new_claim)
        self._groups = CommitGroups(self._hop)

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout_ms: int = 5000,
        claimant: str = "",
    ) -> Self:
        db = await aiosqlite.connect(str(path), isolation_level=None)
        db.row_factory = aiosqlite.Row
        # WAL lets readers in other processes (the CLI, backups) work during writes; synchronous=FULL makes a
        # COMMIT survive power loss, not only a process crash, since a 200 to a provider depends on it.
        try:
            for pragma in (
                "journal_mode=WAL",
                "synchronous=FULL",
                "foreign_keys=ON",
                f"busy_timeout={busy_timeout_ms}",
            ):
                await db.execute(f"PRAGMA {pragma}")
            await migrate(db)
        except BaseException:
            await db.close()  # else aiosqlite's thread keeps the process alive
            raise
        return cls(db, clock=clock, claimant=claimant)

    @property
    def clock(self) -> Callable[[], float]:
        """The store's time source; workers schedule retries on it so that 'due' means one thing everywhere."""
        return self._clock

    async def close(self) -> None:
        await self._groups.drain()  # callbacks already queued are committed and answered before the thread stops
        await self._db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _hop(self, function: Callable[[sqlite3.Connection], T]) -> T:
        """Run `function(connection)` on the database thread: the one hop. aiosqlite offers no public call for a
        function of its connection, so its `_execute` is used here alone (aiosqlite is pinned in constraints.txt);
        sqlite3 errors become StoreError, which callers outside storage/ catch whichever engine runs."""
        db = self._db
        try:
            result: T = await db._execute(lambda: function(db._conn))  # type: ignore[no-untyped-call]
            return result
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite: {exc}") from exc

    async def _transaction(self, work: Work[T]) -> T:
        """`work(connection)` committed before this returns, rolled back (to its savepoint) if it raises; sharing
        its `BEGIN IMMEDIATE … COMMIT` with every other write waiting meanwhile (storage/groups.py): a callback, the
        download slots' outcomes and the event worker's batch that arrive together are one fsynced COMMIT."""
        result: T = await self._groups.run(work)
        return result

    async def _query(self, work: Work[T]) -> T:
        """`work(connection)` reading outside a transaction, in one hop."""
        return await self._hop(work)

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await self._hop(lambda connection: connection.execute(sql, params).fetchall())

    def _insert_job(self, db: sqlite3.Connection, new: NewJob) -> str | None:
        job_id = uuid.uuid4().hex
        root_id, depth = job_id, 0
        if new.parent_id is not None:
            parent = db.execute("SELECT root_id, depth FROM jobs WHERE id = ?", (new.parent_id,)).fetchone()
            if parent is None:
                raise LookupError(f"parent job {new.parent_id} does not exist")
            root_id, depth = parent["root_id"], parent["depth"] + 1
        now = self._clock()
        cursor = db.execute(
            """INSERT INTO jobs (id, provider, action, status, params, parent_id, root_id, depth, rule, origin,
                                 created_at, updated_at)
               VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (origin) DO NOTHING""",
            (job_id, new.provider, new.action, json.dumps(new.params), new.parent_id, root_id, depth, new.rule,
             new.origin, now, now),
        )  # fmt: skip
        return job_id if cursor.rowcount == 1 else None

    def _set_status(self, db: sqlite3.Connection, job: Job | sqlite3.Row, target: JobStatus, **fields: Any) -> bool:
        """Move `job` to `target` if the lifecycle allows it (else InvalidTransition), as a compare-and-set on the
        status it was read with: False, and nothing written, when the job has moved since."""
        if isinstance(job, Job):
            job_id, current, lost = job.id, job.status, job.lost_at is not None
        else:
            job_id, current, lost = job["id"], JobStatus(job["status"]), job["lost_at"] is not None
        check_transition(job_id, current, target, lost=lost)
        assignments = "".join(f", {name} = ?" for name in fields)
        sql = f"UPDATE jobs SET status = ?, updated_at = ?{assignments} WHERE id = ? AND status = ?"
        cursor = db.execute(sql, (target.value, self._clock(), *fields.values(), job_id, current.value))
        return cursor.rowcount == 1

    def _emit(self, db: sqlite3.Connection, type: EventType, job_id: str, index: int | None = None) -> None:
        db.execute(
            "INSERT INTO events (type, job_id, video_index, created_at) VALUES (?, ?, ?, ?)",
            (type.value, job_id, index, self._clock()),
        )

    def _locked_job(self, db: sqlite3.Connection, job_id: str) -> sqlite3.Row:
        row: sqlite3.Row | None = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise LookupError(f"job {job_id} does not exist")
        return row


def printable(text: str) -> str:
    """`text` as SQLite can store it: code points UTF-8 cannot encode (lone surrogates) become U+FFFD."""
    # Through UTF-16: a surrogate pair that arrived as two escapes becomes its character, a lone half U+FFFD.
    return text if text.isascii() else text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def float_or_none(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
