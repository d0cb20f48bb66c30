"""Claims under concurrency, on both engines: many claimers, each on connections of its own (a separate store, as a
separate instance would have), asking at once. What must hold whatever the interleaving: a provider's limit is
never exceeded, no item is handed to two claimers, and the money guards never let one follow-up too many through.

SQLite serves one process, so its events' leases live in that process: there the event claimers are tasks sharing
one store, which is how SQLite runs them.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import anyio
import pytest

from storage import CallbackResult, EventOutcome, FollowupGuard, JobStatus, NewJob, NewNotification, Note, StoreProtocol
from tests.storage.conftest import MakeStore

pytestmark = pytest.mark.anyio

T = TypeVar("T")
URLS = tuple(f"https://cdn.example/v/{i}.mp4" for i in range(4))


async def at_once(claims: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run every claim concurrently, released together once all are waiting; their results in order."""
    results: dict[int, T] = {}
    go = anyio.Event()

    async def one(index: int, claim: Callable[[], Awaitable[T]]) -> None:
        await go.wait()
        results[index] = await claim()

    async with anyio.create_task_group() as tg:
        for index, claim in enumerate(claims):
            tg.start_soon(one, index, claim)
        go.set()
    return [results[index] for index in range(len(claims))]


async def until_empty(
    claimers: Sequence[StoreProtocol], claim: Callable[[StoreProtocol], Awaitable[list[T]]]
) -> list[T]:
    """Every claimer claims concurrently, again and again, until none gets anything; everything claimed."""
    claimed: list[T] = []

    async def drain(store: StoreProtocol) -> None:
        while batch := await claim(store):
            claimed.extend(batch)

    await at_once([functools.partial(drain, store) for store in claimers])
    return claimed


async def succeeded_jobs(store: StoreProtocol, count: int) -> list[str]:
    """`count` jobs that succeeded with four videos each: their downloads are due, and their events pending."""
    ids = []
    for number in range(count):
        job, _ = await store.create_job(NewJob("ttapi", "generate", {"prompt": f"p{number}"}))
        await store.claim_submission(job.id)
        await store.record_callback(
            job.id, "ttapi", body=b"", headers=[], result=CallbackResult(f"p-{number}", JobStatus.SUCCEEDED, 100, URLS)
        )
        ids.append(job.id)
    return ids


async def test_twenty_claimers_never_put_more_than_the_limit_in_flight(
    store: StoreProtocol, make_store: MakeStore
) -> None:
    for number in range(30):
        await store.create_job(NewJob("ttapi", "generate", {"prompt": f"p{number}"}))
    claimers = [await make_store() for _ in range(20)]
    claimed = await at_once([functools.partial(s.claim_submissions, "ttapi", slots=10) for s in claimers])
    ids = [job.id for batch in claimed for job in batch]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert await store.in_flight("ttapi") == 10
    assert all(job.status is JobStatus.SUBMITTED and job.attempts == 1 for batch in claimed for job in batch)
    # A slot freed lets exactly one more go, however many ask.
    await store.record_callback(ids[0], "ttapi", body=b"", headers=[], result=CallbackResult("x", JobStatus.FAILED))
    again = await at_once([functools.partial(s.claim_submissions, "ttapi", slots=10) for s in claimers])
    assert sum(len(batch) for batch in again) == 1 and await store.in_flight("ttapi") == 10


async def test_claiming_submissions_keeps_order_due_times_and_the_pause(store: StoreProtocol) -> None:
    first, _ = await store.create_job(NewJob("ttapi", "generate", {"prompt": "first"}))
    later, _ = await store.create_job(NewJob("ttapi", "generate", {"prompt": "later"}))
    await store.claim_submission(later.id)
    await store.release_submission(later.id, error="429", retry_at=store.clock() + 3600)  # not due for an hour
    followup, _ = await store.create_job(NewJob("ttapi", "extend", {"index": 0}, parent_id=first.id, rule="r"))
    await store.create_job(NewJob("acedata", "generate", {"prompt": "other provider"}))
    claimed = await store.claim_submissions("ttapi", slots=5, followups=False, look_up_after=60)
    assert [job.id for job in claimed] == [first.id]
    assert claimed[0].lookup_at is not None and claimed[0].sent_at is not None
    assert claimed[0].lookup_at == pytest.approx(claimed[0].sent_at + 60)
    assert [job.id for job in await store.claim_submissions("ttapi", slots=5)] == [followup.id]
    assert await store.claim_submissions("ttapi", slots=2) == []  # two in flight: the limit is reached


async def test_two_claimers_never_get_the_same_download(store: StoreProtocol, make_store: MakeStore) -> None:
    await succeeded_jobs(store, 10)
    claimers = [await make_store() for _ in range(8)]
    claimed = await until_empty(claimers, lambda s: s.claim_downloads(limit=3, lease=300))
    keys = [(video.job_id, video.index) for video in claimed]
    assert len(keys) == 40 and Counter(keys).most_common(1)[0][1] == 1
    assert await store.due_downloads(limit=100) == []  # all leased


async def test_two_claimers_never_get_the_same_notification(store: StoreProtocol, make_store: MakeStore) -> None:
    await succeeded_jobs(store, 5)
    for event in await store.pending_events(limit=100):
        await store.complete_event(
            event.id, notifications=[NewNotification(f"rule-{n}", "https://hooks.example/n", b"{}") for n in range(4)]
        )
    claimers = [await make_store() for _ in range(8)]
    claimed = await until_empty(claimers, lambda s: s.claim_notifications(limit=3, lease=300))
    ids = [notification.id for notification in claimed]
    assert len(ids) == 20 and len(set(ids)) == 20  # five events, four rules each


async def test_two_claimers_never_get_the_same_lookup(store: StoreProtocol, make_store: MakeStore) -> None:
    for number in range(30):
        job, _ = await store.create_job(NewJob("ttapi", "generate", {"prompt": f"p{number}"}))
        await store.claim_submission(job.id, look_up_after=0)  # due to be looked up at once
    claimers = [await make_store() for _ in range(8)]
    claimed = await until_empty(claimers, lambda s: s.claim_lookups(limit=3, lease=300))
    ids = [job.id for job in claimed]
    assert len(ids) == 30 and len(set(ids)) == 30


async def test_two_claimers_never_get_the_same_event(engine: str, store: StoreProtocol, make_store: MakeStore) -> None:
    await succeeded_jobs(store, 10)  # 10 job.succeeded events
    claimers = [store] * 8 if engine == "sqlite" else [await make_store() for _ in range(8)]
    claimed = await until_empty(claimers, lambda s: s.claim_events(limit=2, lease=300))
    ids = [event.id for event in claimed]
    assert len(ids) == 10 and len(set(ids)) == 10


async def test_a_claim_is_released_when_its_lease_ends(make_store: MakeStore) -> None:
    now = [1000.0]
    store = await make_store(clock=lambda: now[0])
    [job_id] = await succeeded_jobs(store, 1)
    assert len(await store.claim_downloads(limit=10, lease=60)) == 4
    assert len(await store.claim_events(limit=10, lease=60)) == 1
    assert await store.claim_downloads(limit=10, lease=60) == [] and await store.claim_events(limit=10, lease=60) == []
    await store.record_download(job_id, 0, path="/m/0.mp4", sha256="ab", size=3)  # done within its lease
    now[0] += 61  # the claimer died: the rest are handed out again
    assert sorted(video.index for video in await store.claim_downloads(limit=10, lease=60)) == [1, 2, 3]
    assert len(await store.claim_events(limit=10, lease=60)) == 2  # job.succeeded again, and video.downloaded


async def test_the_guards_never_allow_one_job_too_many(store: StoreProtocol, make_store: MakeStore) -> None:
    root, _ = await store.create_job(NewJob("ttapi", "generate", {"prompt": "root"}))
    await store.claim_submission(root.id)
    for number in range(12):  # twelve events of one chain, each asking for one follow-up
        await store.record_submitted(root.id, f"p-{number}")
    events = await store.pending_events(limit=100)
    per_root = 5

    def decide(followups: list[NewJob]) -> Callable[[int, int], tuple[list[NewJob], list[Note]]]:
        def under_limit(in_chain: int, in_day: int) -> tuple[list[NewJob], list[Note]]:
            if in_chain >= per_root:
                return [], [Note(root.id, "r", f"max_jobs_per_root {per_root} reached")]
            return followups, []

        return under_limit

    async def complete(claimer: StoreProtocol, event_id: int) -> list[str]:
        followups = [NewJob("ttapi", "extend", {"index": 0}, parent_id=root.id, rule="r", origin=f"r:{event_id}")]
        guard = FollowupGuard(root.id, since=0.0, decide=decide(followups))
        (result,) = await claimer.complete_events([EventOutcome(event_id, followups, guard=guard)]) or [[]]
        assert isinstance(result, list)
        return result

    claimers = [await make_store() for _ in events]
    created = await at_once(
        [functools.partial(complete, claimer, event.id) for claimer, event in zip(claimers, events, strict=True)]
    )
    assert sum(len(ids) for ids in created) == per_root - 1
    assert await store.count_root_jobs(root.id) == per_root
    stopped = (await store.get_job(root.id)).notes  # type: ignore[union-attr]
    assert len(stopped) == len(events) - (per_root - 1)
    assert await store.pending_events() == []
