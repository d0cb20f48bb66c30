"""What one callback's transaction asks of the `callbacks` table (storage/inbox.py): one read, which finds both
whether this is a re-delivery and how many bodies the job keeps, then the one write. Each statement on the
database thread is CPU on the path to a callback's 200 (bench: ingest), so the read is not made twice.

The statements are those SQLite itself reports running (its trace callback on the store's connection).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import CallbackOutcome, CallbackResult, JobStatus, NewJob, Store

pytestmark = pytest.mark.anyio

URLS = tuple(f"https://cdn.example/v/{i}.mp4" for i in range(4))


async def on_callbacks(store: Store, job_id: str, body: bytes) -> tuple[CallbackOutcome, list[str]]:
    """The callback's outcome and the statements its transaction ran on the callbacks table, as their first words."""
    statements: list[str] = []
    # On the database thread, where the sqlite3 connection lives: SQLite then reports each statement it runs.
    await store._hop(lambda connection: connection.set_trace_callback(statements.append))
    try:
        result = CallbackResult("p-1", JobStatus.SUCCEEDED, 100, URLS, result={})
        outcome = await store.record_callback(job_id, "ttapi", body=body, headers=[], result=result)
    finally:
        await store._hop(lambda connection: connection.set_trace_callback(None))
    touching = [" ".join(s.split()[:3]) for s in statements if " callbacks " in f" {' '.join(s.split())} "]
    return outcome, touching


async def test_a_new_callback_reads_the_kept_callbacks_once_then_writes_its_row(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "db.sqlite3") as store:
        job, _ = await store.create_job(NewJob("ttapi", "generate", {"prompt": "a cat"}))
        await store.claim_submission(job.id)
        await store.record_submitted(job.id, "p-1")
        outcome, touching = await on_callbacks(store, job.id, b'{"a": 1}')
        assert outcome is CallbackOutcome.APPLIED
        assert touching == ["SELECT (SELECT id", "INSERT INTO callbacks"]
        outcome, touching = await on_callbacks(store, job.id, b'{"a": 1}')  # the same body again: a re-delivery
        assert outcome is CallbackOutcome.DUPLICATE
        assert touching == ["SELECT (SELECT id", "UPDATE callbacks SET"]
        assert await store.callback_count(job.id) == 2
