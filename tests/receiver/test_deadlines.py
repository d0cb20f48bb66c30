"""Issue 8, "lost callbacks hold slots forever": every job that left has a deadline. One that never reports back is
given up on (`lost:`), its slot freed with no restart and no person, and its result is still applied if it comes."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from storage import CallbackResult, EventType, JobStatus, NewJob
from submitter.providers import PROVIDERS
from submitter.tokens import HookSigner
from submitter.worker import Endpoint, Submitter
from tests.receiver.test_reconcile import GRACE, SEEDS, START, TT_JOB, reconciling

pytestmark = pytest.mark.anyio

GIVE_UP = 86400.0


async def test_jobs_that_never_report_back_are_lost_and_free_their_slots(tmp_path: Path) -> None:
    async with reconciling(tmp_path) as setup:
        # Ten jobs whose submit answers were lost (no provider id) and one the provider took but never called back.
        no_id = [await setup.overdue("ttapi", None) for _ in range(9)]
        took = await setup.overdue("ttapi", TT_JOB)  # the fake provider answers 404 for its fetch: never settles
        assert await setup.store.in_flight("ttapi") == 10
        new = NewJob("ttapi", "generate", {"prompt": "p", "image_url": "https://i/a.png"})
        waiting, _ = await setup.store.create_job(new)

        # Deadlines pass; nothing settles; nobody restarts anything or runs reconcile.
        while setup.now[0] + GRACE < START + GIVE_UP:
            setup.now[0] += GRACE
            await setup.reconciler.run_once()
        assert await setup.store.in_flight("ttapi") == 10
        # The job with an id was asked at each deadline, backing off (2, 4, 8 × the grace, then hourly: ~25 in a
        # day); the others could not be asked about.
        gets = [r for r in setup.providers.requests if r.method == "GET"]  # (each 404 is asked once more by POST)
        assert {r.url.params["jobId"] for r in gets} == {TT_JOB}
        assert 20 <= len(gets) <= 30
        setup.now[0] += 10 * (GRACE + 1)
        assert await setup.reconciler.run_once() == 10

        assert await setup.store.in_flight("ttapi") == 0
        for job_id in [*no_id, took]:
            job = await setup.store.get_job(job_id)
            assert job is not None and job.status is JobStatus.FAILED and job.lost_at is not None
            assert job.error is not None and job.error.startswith("lost: ") and "charged for it" in job.error
            assert job.notes and "given up on" in job.notes[-1].message
        failed = [e.job_id for e in await setup.store.pending_events() if e.type is EventType.JOB_FAILED]
        assert sorted(failed) == sorted([*no_id, took])
        assert setup.woken  # the submitter and the rules are told
        assert await setup.reconciler.next_due() is None  # nothing in flight: nothing is due

        # The slot is free: the waiting job goes out.
        peer_requests: list[httpx.Request] = []

        def provider(request: httpx.Request) -> httpx.Response:
            peer_requests.append(request)
            return httpx.Response(200, json={"status": "SUCCESS", "data": {"jobId": "tt-next"}})

        submitter = Submitter(
            setup.store,
            httpx.AsyncClient(transport=httpx.MockTransport(provider)),
            {"ttapi": Endpoint(PROVIDERS["ttapi"], "https://ttapi.test", "k")},
            signer=HookSigner(["s" * 32], max_age=3600),
            public_url="https://hooks.example",
        )
        assert await submitter.run_once() == 1
        job = await setup.store.get_job(waiting.id)
        assert job is not None and job.status is JobStatus.SUBMITTED and len(peer_requests) == 1


async def test_a_lost_jobs_late_result_is_applied(tmp_path: Path) -> None:
    seed = SEEDS["ttapi"]
    async with reconciling(tmp_path) as setup:
        job_id = await setup.overdue("ttapi", None)
        setup.now[0] += GIVE_UP
        assert (await setup.reconciler.reconcile()).lost == 1
        result = CallbackResult(None, JobStatus.SUCCEEDED, 100, seed.videos)
        outcome = await setup.store.record_callback(job_id, "ttapi", body=seed.answer, headers=[], result=result)
        assert outcome == "applied"
        job = await setup.store.get_job(job_id)
        assert job is not None and job.status is JobStatus.SUCCEEDED and job.error is None and job.lost_at is None
        assert tuple(video.url for video in job.videos) == seed.videos
        events = [(e.type, e.job_id) for e in await setup.store.pending_events()]
        assert events[-2:] == [(EventType.JOB_FAILED, job_id), (EventType.JOB_SUCCEEDED, job_id)]
        # Once settled, it is settled: the same result again is a duplicate.
        again = await setup.store.record_callback(job_id, "ttapi", body=seed.answer + b" ", headers=[], result=result)
        assert again == "duplicate"


async def test_the_ttapi_fetch_is_a_get_and_once_more_a_post_on_a_4xx(tmp_path: Path) -> None:
    seed = SEEDS["ttapi"]
    async with reconciling(tmp_path) as setup:
        setup.providers.answers[("GET", seed.path)] = (405, b'{"status":"FAILED","message":"Method Not Allowed"}')
        setup.providers.answers[("POST", seed.path)] = (200, seed.answer)
        job_id = await setup.overdue("ttapi", TT_JOB)
        assert (await setup.reconciler.reconcile()).settled == 1
        assert [(r.method, r.url.params.get("jobId"), r.content) for r in setup.providers.requests] == [
            ("GET", TT_JOB, b""),
            ("POST", None, b'{"jobId":"' + TT_JOB.encode() + b'"}'),
        ]
        assert await setup.status(job_id) is JobStatus.SUCCEEDED


async def test_a_give_up_time_is_a_setting_per_provider() -> None:
    from receiver.settings import Settings, SettingsError

    settings = Settings.from_env({"REELHOOK_ACEDATA_GIVE_UP_AFTER": "3600"})
    assert {name: p.give_up_after for name, p in settings.providers.items()} == {
        "ttapi": GIVE_UP, "acedata": 3600.0, "wavespeed": GIVE_UP, "apimart": GIVE_UP,
    }  # fmt: skip
    with pytest.raises(SettingsError, match="REELHOOK_TTAPI_GIVE_UP_AFTER"):
        Settings.from_env({"REELHOOK_TTAPI_GIVE_UP_AFTER": "a day"})
    assert GRACE < GIVE_UP
