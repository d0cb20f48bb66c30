"""The event worker works in batches: one transaction claims the batch, reads its jobs, asks the rules and records
every event's outcome, whatever its size; an event whose write fails is rolled back alone and tried again at once.
Real SQLite files; transactions counted in the write-ahead log."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from receiver.followups import FollowUps
from storage import EventOutcome, Store
from tests.receiver.test_guards import EXTEND_TWO, children, rules, submitted_by_hand, succeed
from tests.storage.test_group_commit import commits_in_wal

pytestmark = pytest.mark.anyio


async def roots(store: Store, count: int) -> list[str]:
    ids = [await submitted_by_hand(store, f"fox {n}") for n in range(count)]
    for job_id in ids:
        await succeed(store, job_id)
    return ids


async def test_a_batch_of_events_is_one_transaction_whatever_its_size(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    async with await Store.open(path) as store:
        ids = await roots(store, 12)
        worker = FollowUps(store, rules("max_jobs_per_day = 100", EXTEND_TWO))  # guarded: counted in the batch
        before = commits_in_wal(path)
        assert await worker.run_once() == 24  # each root's job.submitted and job.succeeded
        assert commits_in_wal(path) == before + 1  # claimed, decided and recorded together
        for job_id in ids:
            assert [job.params["index"] for job in await children(store, job_id)] == [0, 1]
        assert await store.pending_events() == []


class FailingStore(Store):
    """A store whose write of one event's outcome fails, as a full disk or a bug would for that event alone."""

    failing: set[int] = set()

    def _record_outcome(self, db: sqlite3.Connection, outcome: EventOutcome) -> list[str]:
        if outcome.event_id in self.failing:
            raise RuntimeError(f"cannot record event {outcome.event_id}")
        return super()._record_outcome(db, outcome)


async def test_an_event_that_cannot_be_recorded_is_tried_again_and_the_rest_of_its_batch_is_recorded(
    tmp_path: Path,
) -> None:
    async with await FailingStore.open(tmp_path / "db.sqlite3") as store:
        first, middle, last = await roots(store, 3)
        events = await store.pending_events()
        store.failing = {next(e.id for e in events if e.job_id == middle and e.type == "job.succeeded")}
        worker = FollowUps(store, rules("", EXTEND_TWO))
        with pytest.raises(RuntimeError, match="cannot record event"):
            await worker.run_once()  # the worker loop logs it and drains again after a pause
        assert len(await children(store, first)) == 2 and len(await children(store, last)) == 2
        assert await children(store, middle) == []
        assert [(e.job_id, e.type) for e in await store.pending_events()] == [(middle, "job.succeeded")]
        store.failing = set()
        assert await worker.run_once() == 1  # given back at once, not at its lease's end
        assert len(await children(store, middle)) == 2
