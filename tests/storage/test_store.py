from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from storage import (
    CallbackOutcome,
    CallbackResult,
    EventType,
    InvalidTransition,
    JobMismatch,
    JobStatus,
    NewJob,
    Note,
    Store,
    StoreProtocol,
    VideoStatus,
)
from storage.schema import MIGRATIONS

pytestmark = pytest.mark.anyio

URLS = tuple(f"https://cdn.example/v/{i}.mp4" for i in range(4))


def generate(**params: object) -> NewJob:
    return NewJob("ttapi", "generate", {"prompt": "a cat", "image_url": "https://img.example/a.png", **params})


def success(provider_job_id: str = "p-1", urls: tuple[str, ...] = URLS) -> CallbackResult:
    return CallbackResult(provider_job_id, JobStatus.SUCCEEDED, 100, urls, result={"quota": "30"})


async def submitted(store: StoreProtocol, provider_job_id: str = "p-1") -> str:
    job, _ = await store.create_job(generate())
    await store.claim_submission(job.id)
    await store.record_submitted(job.id, provider_job_id)
    return job.id


async def test_schema_is_migrated_once_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    async with await Store.open(path) as store:
        job, _ = await store.create_job(generate())
    async with await Store.open(path) as store:
        assert (await store.get_job(job.id)) is not None
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(RuntimeError, match="upgrade reelhook"):
        await Store.open(path)


async def test_follow_up_inherits_root_and_depth(store: StoreProtocol) -> None:
    root_id = await submitted(store)
    child, _ = await store.create_job(NewJob("ttapi", "extend", {"index": 0}, parent_id=root_id, rule="r"))
    grandchild, _ = await store.create_job(NewJob("ttapi", "extend", {"index": 1}, parent_id=child.id))
    assert (child.root_id, child.depth) == (root_id, 1)
    assert (grandchild.root_id, grandchild.depth) == (root_id, 2)


async def test_origin_makes_a_follow_up_unique(store: StoreProtocol) -> None:
    root_id = await submitted(store)
    new = NewJob("ttapi", "extend", {"index": 0}, parent_id=root_id, rule="r", origin=f"r:{root_id}:0")
    first, created = await store.create_job(new)
    again, created_again = await store.create_job(new)
    assert created and not created_again and again.id == first.id


async def test_success_callback_records_videos_and_one_event(store: StoreProtocol) -> None:
    job_id = await submitted(store)
    outcome = await store.record_callback(job_id, "ttapi", body=b"raw", headers=[("x", "1")], result=success())
    job = await store.get_job(job_id)
    assert outcome is CallbackOutcome.APPLIED
    assert job is not None and job.status is JobStatus.SUCCEEDED and job.result == {"quota": "30"}
    assert [(v.index, v.url, v.status) for v in job.videos] == [(i, u, VideoStatus.PENDING) for i, u in enumerate(URLS)]
    types = [event.type for event in await store.pending_events()]
    assert types == [EventType.JOB_SUBMITTED, EventType.JOB_SUCCEEDED]


async def test_duplicate_callback_is_stored_but_changes_nothing(store: StoreProtocol) -> None:
    job_id = await submitted(store)
    await store.record_callback(job_id, "ttapi", body=b"1", headers=[], result=success())
    before = await store.get_job(job_id)
    outcome = await store.record_callback(job_id, "ttapi", body=b"2", headers=[], result=success(urls=URLS[:1]))
    after = await store.get_job(job_id)
    assert outcome is CallbackOutcome.DUPLICATE
    assert after == before
    assert await store.callback_count(job_id) == 2
    assert [e.type for e in await store.pending_events()].count(EventType.JOB_SUCCEEDED) == 1


async def test_callback_for_another_provider_job_writes_nothing(store: StoreProtocol) -> None:
    job_id = await submitted(store, "p-1")
    with pytest.raises(JobMismatch):
        await store.record_callback(job_id, "ttapi", body=b"x", headers=[], result=success("p-2"))
    with pytest.raises(JobMismatch):
        await store.record_callback(job_id, "acedata", body=b"x", headers=[], result=success("p-1"))
    job = await store.get_job(job_id)
    assert job is not None and job.status is JobStatus.SUBMITTED and not job.videos
    assert await store.callback_count(job_id) == 0


async def test_callback_binds_the_provider_id_of_a_job_whose_submit_answer_was_lost(store: StoreProtocol) -> None:
    job, _ = await store.create_job(generate())
    await store.claim_submission(job.id)  # the answer never came back
    await store.record_callback(job.id, "ttapi", body=b"x", headers=[], result=success("late-id"))
    settled = await store.get_job(job.id)
    assert settled is not None and settled.provider_job_id == "late-id" and settled.status is JobStatus.SUCCEEDED


async def test_progress_then_failure(store: StoreProtocol) -> None:
    job_id = await submitted(store)
    running = CallbackResult("p-1", JobStatus.RUNNING, 40)
    outcome = await store.record_callback(job_id, "ttapi", body=b"running", headers=[], result=running)
    assert outcome is CallbackOutcome.PROGRESS
    failed = CallbackResult("p-1", JobStatus.FAILED, error="prompt violation")
    await store.record_callback(job_id, "ttapi", body=b"failed", headers=[], result=failed)
    job = await store.get_job(job_id)
    assert job is not None and (job.status, job.progress, job.error) == (JobStatus.FAILED, 40, "prompt violation")


async def test_in_flight_counts_submitted_and_running_only(store: StoreProtocol) -> None:
    first = await submitted(store, "a")
    await submitted(store, "b")
    await store.create_job(generate())
    assert await store.in_flight("ttapi") == 2
    await store.record_callback(first, "ttapi", body=b"", headers=[], result=success("a"))
    assert await store.in_flight("ttapi") == 1


async def test_release_puts_an_unsent_job_back_with_a_retry_time(store: StoreProtocol) -> None:
    job, _ = await store.create_job(generate())
    await store.claim_submission(job.id)
    await store.release_submission(job.id, error="429", retry_at=1e12)
    queued = await store.get_job(job.id)
    assert queued is not None and queued.status is JobStatus.QUEUED and queued.attempts == 1
    assert await store.due_submissions("ttapi", limit=10) == []
    assert await store.next_submission_at() == 1e12


async def test_a_finished_job_cannot_be_claimed(store: StoreProtocol) -> None:
    job_id = await submitted(store)
    await store.record_callback(job_id, "ttapi", body=b"", headers=[], result=success())
    with pytest.raises(InvalidTransition):
        await store.claim_submission(job_id)


async def test_download_is_recorded_once(store: StoreProtocol) -> None:
    job_id = await submitted(store)
    await store.record_callback(job_id, "ttapi", body=b"", headers=[], result=success())
    assert await store.record_download(job_id, 0, path="/m/0.mp4", sha256="ab", size=3)
    assert not await store.record_download(job_id, 0, path="/m/0.mp4", sha256="ab", size=3)
    types = [e.type for e in await store.pending_events()]
    assert types.count(EventType.VIDEO_DOWNLOADED) == 1


async def test_complete_event_is_atomic_and_idempotent(store: StoreProtocol) -> None:
    job_id = await submitted(store)
    event = (await store.pending_events())[0]
    followup = NewJob("ttapi", "extend", {"index": 0}, parent_id=job_id, rule="r", origin=f"r:{job_id}:0")
    assert len(await store.complete_event(event.id, [followup, followup])) == 1
    assert await store.pending_events() == []
    assert await store.complete_event(event.id, [followup]) == []


async def test_a_job_without_its_own_prompt_reports_the_providers(store: StoreProtocol) -> None:
    parent_id = await submitted(store)
    child, _ = await store.create_job(NewJob("ttapi", "upsample1", {}, parent_id=parent_id))
    await store.claim_submission(child.id)
    result = CallbackResult("p-2", JobStatus.SUCCEEDED, 100, URLS[:1], result={"prompt": "a cat --v 7"})
    await store.record_callback(child.id, "ttapi", body=b"", headers=[], result=result)
    upscaled = await store.get_job(child.id)
    assert upscaled is not None and upscaled.prompt == "a cat --v 7"
    own = await store.get_job(parent_id)
    assert own is not None and own.prompt == "a cat"


async def test_chain_counts_each_jobs_unprocessed_events(store: StoreProtocol) -> None:
    # `reelhook watch` must not call a chain settled while an event that may fire a follow-up waits.
    job_id = await submitted(store)  # job.submitted waits
    [node] = await store.chain(job_id)
    assert node.pending_events == 1
    [event] = await store.pending_events()
    followup = NewJob("ttapi", "extend", {"index": 0}, parent_id=job_id, rule="r", origin=f"r:{job_id}:0")
    [child_id] = await store.complete_event(event.id, [followup])
    assert [(n.id, n.pending_events) for n in await store.chain(job_id)] == [(job_id, 0), (child_id, 0)]


async def test_the_job_list_carries_each_jobs_notes(store: StoreProtocol) -> None:
    # A note says why a rule's follow-up did not happen; `reelhook watch` reads the list and must see it.
    job_id = await submitted(store)
    [event] = await store.pending_events()
    await store.complete_event(event.id, notes=[Note(job_id, "r", "max_depth 1 reached (job depth 1)")])
    [listed] = await store.list_jobs()
    assert [(note.rule, note.message) for note in listed.notes] == [("r", "max_depth 1 reached (job depth 1)")]
