from __future__ import annotations

import pytest

from storage import CallbackResult, JobStatus, NewJob, Note, StoreProtocol
from tests.storage.conftest import MakeStore

pytestmark = pytest.mark.anyio


async def test_flags_set_read_and_clear(store: StoreProtocol) -> None:
    assert await store.get_flag("paused") is None
    await store.set_flag("paused", "by the CLI")
    await store.set_flag("paused", "again")
    assert await store.get_flag("paused") == "again"
    await store.set_flag("paused", None)
    assert await store.get_flag("paused") is None


async def test_notes_are_recorded_with_their_event_and_shown_on_the_job(store: StoreProtocol) -> None:
    job, _ = await store.create_job(NewJob("ttapi", "generate", {"prompt": "p", "image_url": "u"}))
    await store.claim_submission(job.id)
    await store.record_submitted(job.id, "tt-1")
    [event] = await store.pending_events()
    await store.complete_event(event.id, notes=[Note(job.id, "extend-first", "max_jobs_per_root 3 reached")])
    shown = await store.get_job(job.id)
    assert shown is not None and [(n.rule, n.message) for n in shown.notes] == [
        ("extend-first", "max_jobs_per_root 3 reached")
    ]
    assert await store.pending_events() == []


async def test_counts_for_the_limits(make_store: MakeStore) -> None:
    now = [1000.0]
    store = await make_store(clock=lambda: now[0])
    root, _ = await store.create_job(NewJob("ttapi", "generate", {}))
    now[0] = 2000.0
    await store.create_job(NewJob("ttapi", "extend", {"index": 0}, parent_id=root.id, rule="r", origin="a"))
    await store.create_job(NewJob("ttapi", "extend", {"index": 1}, parent_id=root.id, rule="r", origin="b"))
    await store.create_job(NewJob("ttapi", "generate", {}))  # by hand: not a follow-up
    assert await store.count_root_jobs(root.id) == 3
    assert await store.count_followups_since(1500.0) == 2
    assert await store.count_followups_since(2500.0) == 0


async def test_jobs_in_flight_are_due_at_their_deadline_until_they_settle(make_store: MakeStore) -> None:
    now = [1000.0]
    store = await make_store(clock=lambda: now[0])
    ids = []
    for _ in range(3):
        job, _ = await store.create_job(NewJob("ttapi", "generate", {}))
        await store.claim_submission(job.id, look_up_after=600)
        ids.append(job.id)
    await store.record_submitted(ids[0], "tt-0")
    await store.record_submitted(ids[1], "tt-1")  # ids[2]: never answered, but it has a deadline all the same
    await store.record_callback(
        ids[1], "ttapi", body=b"", headers=[], result=CallbackResult("tt-1", JobStatus.SUCCEEDED, 100, ("u",))
    )
    assert await store.due_lookups() == [] and await store.next_lookup_at() == 1600.0  # not late yet
    now[0] += 600
    assert sorted(job.id for job in await store.due_lookups()) == sorted([ids[0], ids[2]])
    assert await store.schedule_lookup(ids[0], at=2800.0, looked_up=True)
    assert [job.id for job in await store.due_lookups()] == [ids[2]]
    assert not await store.schedule_lookup(ids[1], at=2800.0, looked_up=True)  # settled: no deadline
    job = await store.get_job(ids[0])
    assert job is not None and (job.lookups, job.reconciled_at, job.lookup_at) == (1, 1600.0, 2800.0)
