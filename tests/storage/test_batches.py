"""Batched background work, on both engines: a worker's batch of events is claimed, decided and recorded by one
`handle_events` transaction (or recorded by one `complete_events` after a claim), each event in a savepoint of its
own, and the jobs of a batch are read by one `get_jobs` call.

On SQLite every write also shares its COMMIT with the writes waiting meanwhile (storage/groups.py), so the
outcomes of the download slots that finish together are one transaction; the count of committed transactions is
read from the write-ahead log (tests/storage/test_group_commit.py `commits_in_wal`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from storage import (
    Event,
    EventOutcome,
    FollowupGuard,
    Job,
    LeaseLost,
    NewJob,
    NewNotification,
    Note,
    Store,
    StoreProtocol,
)
from tests.storage.conftest import MakeStore
from tests.storage.test_claims import succeeded_jobs
from tests.storage.test_group_commit import commits_in_wal

pytestmark = pytest.mark.anyio

PAUSE = "paused"


def extend(parent: str, origin: str) -> NewJob:
    return NewJob("ttapi", "extend", {"index": 0}, parent_id=parent, rule="r", origin=origin)


async def test_a_batch_of_events_is_recorded_together_and_a_failing_event_alone_is_rolled_back(
    store: StoreProtocol,
) -> None:
    first, second, third = await succeeded_jobs(store, 3)
    events = [e for e in await store.claim_events(limit=100, lease=60) if e.type == "job.succeeded"]
    assert [e.job_id for e in events] == [first, second, third]
    outcomes = [
        EventOutcome(events[0].id, [extend(first, "o-1")], [NewNotification("n", "https://h.example/", b"{}")],
                     [Note(first, "r", "a note")], claim=events[0].claim_id),
        EventOutcome(events[1].id, [extend("no-such-parent", "o-2")], claim=events[1].claim_id),  # fails alone
        EventOutcome(events[2].id, [extend(third, "o-3")], claim=events[2].claim_id),
    ]  # fmt: skip
    results = await store.complete_events(outcomes)
    assert results is not None and len(results) == 3
    assert isinstance(results[0], list) and len(results[0]) == 1
    assert isinstance(results[1], LookupError)
    assert isinstance(results[2], list) and len(results[2]) == 1
    jobs = await store.get_jobs([first, second, third, results[0][0], results[2][0], "nope"])
    assert set(jobs) == {first, second, third, results[0][0], results[2][0]}
    assert jobs[results[0][0]].parent_id == first and jobs[results[2][0]].parent_id == third
    assert [n.message for n in jobs[first].notes] == ["a note"] and len(jobs[first].videos) == 4
    assert [n.rule for n in await store.due_notifications(limit=10)] == ["n"]
    pending = {e.id for e in await store.pending_events(limit=100)}
    assert events[1].id in pending and events[0].id not in pending and events[2].id not in pending


async def test_an_event_whose_claim_was_taken_over_is_lease_lost_and_the_rest_are_recorded(
    make_store: MakeStore,
) -> None:
    now = [1_000_000.0]
    a, b = await make_store(clock=lambda: now[0]), await make_store(clock=lambda: now[0])
    first, second = await succeeded_jobs(a, 2)
    short = await a.claim_events(limit=1, lease=10)  # the first job's event, on a short lease
    long = await a.claim_events(limit=100, lease=1000)
    assert {e.job_id for e in short} == {first} and {e.job_id for e in long} == {second}
    now[0] += 11
    assert {e.id for e in await b.claim_events(limit=100, lease=60)} == {e.id for e in short}  # taken over
    results = await a.complete_events(
        [EventOutcome(e.id, [extend(e.job_id, f"o-{e.id}")], claim=e.claim_id) for e in (short[-1], long[-1])]
    )
    assert results is not None and isinstance(results[0], LeaseLost) and isinstance(results[1], list)
    assert [job.parent_id for job in (await a.get_jobs(results[1])).values()] == [second]
    assert first not in {job.parent_id for job in await a.list_jobs(limit=50)}


async def test_a_set_flag_records_nothing_of_the_batch(store: StoreProtocol) -> None:
    (job,) = await succeeded_jobs(store, 1)
    events = await store.claim_events(limit=100, lease=60)
    await store.set_flag(PAUSE, "over budget")  # landed between the claim and the batch's transaction
    outcomes = [EventOutcome(e.id, [extend(job, f"o-{e.id}")], claim=e.claim_id) for e in events]
    assert await store.complete_events(outcomes, unless_flag=PAUSE) is None
    assert len(await store.pending_events(limit=100)) == len(events)
    assert [j.id for j in await store.list_jobs(limit=50)] == [job]
    await store.set_flag(PAUSE, None)
    results = await store.complete_events(outcomes, unless_flag=PAUSE)
    assert results is not None and all(isinstance(r, list) for r in results)


async def test_guards_in_one_batch_count_the_follow_ups_of_the_events_before_them(store: StoreProtocol) -> None:
    jobs = await succeeded_jobs(store, 2)
    events = await store.claim_events(limit=100, lease=60)
    assert [e.job_id for e in events] == jobs
    seen: list[int] = []

    def guard(job: str) -> FollowupGuard:
        def decide(in_chain: int, in_day: int) -> tuple[list[NewJob], list[Note]]:
            seen.append(in_day)
            return ([extend(job, f"o-{job}")], []) if in_day < 1 else ([], [Note(job, "r", "limit")])

        return FollowupGuard(job, 0.0, decide)

    results = await store.complete_events(
        [EventOutcome(e.id, [extend(e.job_id, "asked")], guard=guard(e.job_id), claim=e.claim_id) for e in events]
    )
    assert seen == [0, 1] and results is not None and [len(r) for r in results if isinstance(r, list)] == [1, 0]
    assert [n.message for n in (await store.get_jobs([jobs[1]]))[jobs[1]].notes] == ["limit"]


async def test_handle_events_claims_decides_and_records_a_batch_at_once(store: StoreProtocol) -> None:
    jobs = await succeeded_jobs(store, 3)
    seen: list[tuple[str, int]] = []

    def decide(batch: Sequence[tuple[Event, Job | None]]) -> list[EventOutcome]:
        seen.extend((job.id if job else "", len(job.videos) if job else 0) for _, job in batch)
        return [EventOutcome(e.id, [extend(e.job_id, f"o-{e.id}")], claim=e.claim_id) for e, _ in batch]

    results = await store.handle_events(decide, limit=100, lease=60)
    assert results is not None and seen == [(job, 4) for job in jobs]
    assert [len(r) for r in results if isinstance(r, list)] == [1, 1, 1]
    assert await store.pending_events(limit=100) == []
    assert await store.handle_events(decide, limit=100, lease=60) == []  # nothing left: decide is asked nothing
    assert len(seen) == 3


async def test_handle_events_claims_nothing_while_the_flag_is_set_and_nothing_if_decide_fails(
    store: StoreProtocol,
) -> None:
    await succeeded_jobs(store, 2)
    await store.set_flag(PAUSE, "over budget")
    asked: list[int] = []

    def decide(batch: Sequence[tuple[Event, Job | None]]) -> list[EventOutcome]:
        asked.append(len(batch))
        raise RuntimeError("a rule blew up")

    assert await store.handle_events(decide, limit=100, lease=60, unless_flag=PAUSE) is None
    assert asked == []
    await store.set_flag(PAUSE, None)
    with pytest.raises(RuntimeError, match="a rule blew up"):
        await store.handle_events(decide, limit=100, lease=60, unless_flag=PAUSE)
    assert asked == [2]
    assert len(await store.claim_events(limit=100, lease=60)) == 2  # the failed batch's claim was rolled back too


# -- SQLite: how many transactions ---------------------------------------------------------------------------------


async def test_a_batch_of_events_is_one_commit(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    async with await Store.open(path) as store:
        jobs = await succeeded_jobs(store, 5)
        events = await store.claim_events(limit=100, lease=60)
        before = commits_in_wal(path)
        outcomes = [EventOutcome(e.id, [extend(e.job_id, f"o-{e.id}")], claim=e.claim_id) for e in events]
        results = await store.complete_events(outcomes)
        assert commits_in_wal(path) == before + 1
        assert results is not None and sum(len(r) for r in results if isinstance(r, list)) == len(events)
        assert len(await store.list_jobs(limit=100)) == len(jobs) + len(events)


async def test_download_outcomes_that_arrive_together_share_one_commit(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    async with await Store.open(path) as store:
        await succeeded_jobs(store, 2)
        videos = await store.claim_downloads(limit=8, lease=60)
        before = commits_in_wal(path)
        done = await asyncio.gather(
            *(store.fail_download(v.job_id, v.index, error="gone", claim=v.claim_id) for v in videos[:4]),
            *(store.record_download(v.job_id, v.index, path=f"k/{v.index}", sha256="0" * 64, size=1,
                                    claim=v.claim_id) for v in videos[4:6]),
            *(store.retry_download(v.job_id, v.index, error="later", retry_at=1e12, claim=v.claim_id)
              for v in videos[6:]),
        )  # fmt: skip
        assert done == [True] * 8
        assert commits_in_wal(path) == before + 1
