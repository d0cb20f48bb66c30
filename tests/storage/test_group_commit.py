"""Group commit on the SQLite engine (storage/groups.py): callbacks that arrive together share one transaction and
its one COMMIT, each in a savepoint of its own, and each caller gets its own answer.

How many transactions were committed is read from the write-ahead log itself: each committed transaction ends with
one commit frame (https://www.sqlite.org/fileformat.html#the_write_ahead_log).
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from storage import CallbackOutcome, CallbackResult, JobMismatch, JobStatus, NewJob, Store, StoreError

pytestmark = pytest.mark.anyio

URLS = tuple(f"https://cdn.example/v/{i}.mp4" for i in range(4))


def success(provider_job_id: str) -> CallbackResult:
    return CallbackResult(provider_job_id, JobStatus.SUCCEEDED, 100, URLS, result={"quota": "30"})


async def submitted(store: Store, provider_job_id: str | None) -> str:
    job, _ = await store.create_job(NewJob("ttapi", "generate", {"prompt": "a cat"}))
    await store.claim_submission(job.id)
    if provider_job_id is not None:
        await store.record_submitted(job.id, provider_job_id)
    return job.id


def commits_in_wal(database: Path) -> int:
    """The transactions committed in the database's write-ahead log so far: its frames that carry the log's current
    salt and a non-zero 'database size after commit', which only a transaction's last frame has."""
    wal = (database.parent / f"{database.name}-wal").read_bytes()
    page_size, salt = int.from_bytes(wal[8:12], "big"), wal[16:24]
    commits = 0
    for offset in range(32, len(wal) - 24 - page_size + 1, 24 + page_size):
        frame = wal[offset : offset + 24]
        if frame[8:16] != salt:  # a frame left from before the log was last restarted
            break
        commits += int.from_bytes(frame[4:8], "big") != 0
    return commits


async def test_callbacks_arriving_together_are_committed_once(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    async with await Store.open(path) as store:
        jobs = [await submitted(store, f"p-{n}") for n in range(4)]
        before = commits_in_wal(path)
        outcomes = await asyncio.gather(
            *(store.record_callback(job, "ttapi", body=b"{}", headers=[], result=success(f"p-{n}"))
              for n, job in enumerate(jobs))
        )  # fmt: skip
        assert outcomes == [CallbackOutcome.APPLIED] * 4
        assert commits_in_wal(path) == before + 1
        for job_id in jobs:
            job = await store.get_job(job_id)
            assert job is not None and job.status is JobStatus.SUCCEEDED and len(job.videos) == 4


async def test_a_failing_callback_is_rolled_back_alone_and_the_rest_of_its_group_commits(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    async with await Store.open(path) as store:
        first = await submitted(store, "p-1")
        clashing = await submitted(store, None)  # its callback binds p-1, which the first job has: a UNIQUE error
        mismatched = await submitted(store, "p-3")
        last = await submitted(store, "p-4")
        before = commits_in_wal(path)
        answers = await asyncio.gather(
            store.record_callback(first, "ttapi", body=b"1", headers=[], result=success("p-1")),
            store.record_callback(clashing, "ttapi", body=b"2", headers=[], result=success("p-1")),
            store.record_callback(mismatched, "ttapi", body=b"3", headers=[], result=success("p-9")),
            store.record_callback(last, "ttapi", body=b"4", headers=[], result=success("p-4")),
            return_exceptions=True,
        )
        assert answers[0] is CallbackOutcome.APPLIED and answers[3] is CallbackOutcome.APPLIED
        assert isinstance(answers[1], StoreError) and isinstance(answers[2], JobMismatch)
        assert commits_in_wal(path) == before + 1
        for job_id, status in ((first, JobStatus.SUCCEEDED), (last, JobStatus.SUCCEEDED)):
            job = await store.get_job(job_id)
            assert job is not None and job.status is status and len(job.videos) == 4
            assert await store.callback_count(job_id) == 1
        for job_id in (clashing, mismatched):
            job = await store.get_job(job_id)
            assert job is not None and job.status is JobStatus.SUBMITTED and not job.videos
            assert await store.callback_count(job_id) == 0


async def test_a_group_whose_transaction_cannot_start_answers_every_caller_with_an_error(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    async with await Store.open(path, busy_timeout_ms=50) as store:
        jobs = [await submitted(store, f"p-{n}") for n in range(3)]
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock past the busy timeout
            answers = await asyncio.gather(
                *(store.record_callback(job, "ttapi", body=b"{}", headers=[], result=success(f"p-{n}"))
                  for n, job in enumerate(jobs)),
                return_exceptions=True,
            )  # fmt: skip
            other.execute("ROLLBACK")
        assert all(isinstance(answer, StoreError) for answer in answers)
        for job_id in jobs:
            assert await store.callback_count(job_id) == 0
        # and the connection was left outside any transaction: the provider's retry is stored
        retried = await store.record_callback(jobs[0], "ttapi", body=b"{}", headers=[], result=success("p-0"))
        assert retried is CallbackOutcome.APPLIED
