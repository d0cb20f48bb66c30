"""Leases fenced by a claim id, on both engines: a claimer whose lease ran out, and whose item another claimer took
over, cannot record its stale outcome; a claimer that renews keeps its item. Two stores on one database stand for
two instances, and share one clock the test moves by hand.
"""

from __future__ import annotations

import pytest

from storage import LeaseLost, NewJob, NewNotification, StoreProtocol, VideoStatus
from tests.storage.conftest import MakeStore
from tests.storage.test_claims import succeeded_jobs

pytestmark = pytest.mark.anyio

LEASE = 60.0


@pytest.fixture
def now() -> list[float]:
    return [1_000_000.0]


async def two_instances(make_store: MakeStore, now: list[float]) -> tuple[StoreProtocol, StoreProtocol]:
    return await make_store(clock=lambda: now[0]), await make_store(clock=lambda: now[0])


async def test_a_download_is_taken_over_after_its_lease_and_the_stale_outcome_refused(
    make_store: MakeStore, now: list[float]
) -> None:
    a, b = await two_instances(make_store, now)
    await succeeded_jobs(a, 1)
    stale = (await a.claim_downloads(limit=1, lease=LEASE))[0]
    assert stale.claim_id and len(await b.claim_downloads(limit=4, lease=LEASE)) == 3  # the other three videos
    now[0] += LEASE + 1  # `a` stalled: it did not renew
    key = (stale.job_id, stale.index)
    fresh = [v for v in await b.claim_downloads(limit=4, lease=LEASE) if (v.job_id, v.index) == key]
    assert len(fresh) == 1 and fresh[0].claim_id not in (None, stale.claim_id)
    job_id, index = stale.job_id, stale.index
    assert not await a.renew_download(job_id, index, claim=stale.claim_id, lease=LEASE)
    assert not await a.retry_download(job_id, index, error="stale", retry_at=now[0], claim=stale.claim_id)
    assert not await a.fail_download(job_id, index, error="stale", claim=stale.claim_id)
    assert not await a.record_download(job_id, index, path="x/stale", sha256="0" * 64, size=1, claim=stale.claim_id)
    video = next(v for v in await b.get_videos(job_id) if v.index == index)
    assert video.status is VideoStatus.PENDING and video.attempts == 0 and video.error is None
    assert await b.record_download(job_id, index, path="x/fresh", sha256="1" * 64, size=2, claim=fresh[0].claim_id)
    video = next(v for v in await b.get_videos(job_id) if v.index == index)
    assert video.status is VideoStatus.DOWNLOADED and video.path == "x/fresh"


async def test_a_renewed_download_lease_is_not_taken_over(make_store: MakeStore, now: list[float]) -> None:
    a, b = await two_instances(make_store, now)
    await succeeded_jobs(a, 1)
    held = await a.claim_downloads(limit=4, lease=LEASE)
    for _ in range(5):  # five lease lengths, renewed every half lease
        now[0] += LEASE / 2
        for video in held:
            assert video.claim_id and await a.renew_download(
                video.job_id, video.index, claim=video.claim_id, lease=LEASE
            )
        assert await b.claim_downloads(limit=4, lease=LEASE) == []
    assert all(
        [await a.record_download(v.job_id, v.index, path=f"k{v.index}", sha256="2" * 64, size=3, claim=v.claim_id)
         for v in held]
    )  # fmt: skip


async def test_an_event_taken_over_after_its_lease_is_completed_once(make_store: MakeStore, now: list[float]) -> None:
    a, b = await two_instances(make_store, now)
    [root] = await succeeded_jobs(a, 1)
    stale = (await a.claim_events(limit=1, lease=LEASE))[0]
    assert await b.claim_events(limit=1, lease=LEASE) == []
    now[0] += LEASE + 1
    [fresh] = await b.claim_events(limit=1, lease=LEASE)
    assert fresh.id == stale.id and fresh.claim_id != stale.claim_id
    followup = NewJob("ttapi", "extend", {"index": 0}, parent_id=root, rule="again", origin=f"again:{root}:0")
    with pytest.raises(LeaseLost):
        await a.complete_event(stale.id, [followup], claim=stale.claim_id)
    assert len(await a.chain(root)) == 1  # the stale worker's follow-up was not recorded
    assert len(await b.complete_event(fresh.id, [followup], claim=fresh.claim_id)) == 1
    with pytest.raises(LeaseLost):  # a second completion of the same claim changes nothing either
        await b.complete_event(fresh.id, [followup], claim=fresh.claim_id)


async def test_a_notification_failure_after_a_takeover_is_refused(make_store: MakeStore, now: list[float]) -> None:
    a, b = await two_instances(make_store, now)
    await succeeded_jobs(a, 1)
    [event] = await a.pending_events(limit=1)
    await a.complete_event(event.id, notifications=[NewNotification("tell", "https://hooks.example/n", b"{}")])
    [stale] = await a.claim_notifications(limit=1, lease=LEASE)
    now[0] += LEASE + 1
    [fresh] = await b.claim_notifications(limit=1, lease=LEASE)
    assert fresh.id == stale.id and fresh.claim_id != stale.claim_id
    assert not await a.record_notification(stale.id, error="HTTP 500", retry_at=now[0] + 3600, claim=stale.claim_id)
    assert await b.record_notification(fresh.id, error=None, retry_at=None, claim=fresh.claim_id)
    [record] = await b.job_notifications(event.job_id)
    assert record.delivered_at is not None and record.error is None


async def test_released_claims_are_due_at_once(store: StoreProtocol) -> None:
    # What a single instance does at start-up: whatever its previous run claimed and never finished is its own.
    await succeeded_jobs(store, 1)
    assert len(await store.claim_downloads(limit=10, lease=3600)) == 4
    assert len(await store.claim_events(limit=10, lease=3600)) == 1
    assert await store.claim_downloads(limit=10, lease=3600) == []
    assert await store.release_claims() == 5
    assert len(await store.claim_downloads(limit=10, lease=3600)) == 4
    assert len(await store.claim_events(limit=10, lease=3600)) == 1


async def test_a_claim_given_back_is_due_at_once_for_another_claimer(make_store: MakeStore, now: list[float]) -> None:
    # What a worker that stops early does (a pause mid-batch, a shutdown): the rest is due now, not at lease end.
    a, b = await two_instances(make_store, now)
    await succeeded_jobs(a, 2)
    first, second = await a.claim_events(limit=2, lease=LEASE)
    assert first.claim_id == second.claim_id and first.claim_id is not None
    await a.complete_event(first.id, claim=first.claim_id)
    assert await b.claim_events(limit=2, lease=LEASE) == []
    assert await a.release_claim(first.claim_id) == 1  # the one left; the one completed stays completed
    assert [event.id for event in await b.claim_events(limit=2, lease=LEASE)] == [second.id]


async def test_a_restarted_instance_takes_back_its_own_claims_and_no_others(
    make_store: MakeStore, now: list[float]
) -> None:
    # On a shared database: instance `a` died holding claims and came back under its name; `b` is alive.
    a = await make_store(clock=lambda: now[0], claimant="a1")
    b = await make_store(clock=lambda: now[0], claimant="b2")
    await succeeded_jobs(a, 2)
    held_by_a = await a.claim_downloads(limit=3, lease=3600)
    held_by_b = await b.claim_downloads(limit=5, lease=3600)
    assert len(held_by_a) == 3 and len(held_by_b) == 5
    assert all(video.claim_id and video.claim_id.startswith("a1.") for video in held_by_a)
    restarted = await make_store(clock=lambda: now[0], claimant="a1")
    assert await restarted.release_claims("a1") == 3
    again = await restarted.claim_downloads(limit=10, lease=3600)
    assert sorted((v.job_id, v.index) for v in again) == sorted((v.job_id, v.index) for v in held_by_a)
    for video in held_by_b:  # b's claims are live: untouched, and its outcomes still count
        assert video.claim_id and await b.renew_download(video.job_id, video.index, claim=video.claim_id, lease=60)
