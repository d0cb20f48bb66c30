"""Issue 8, "never pay twice, never wedge": what the submitter does with every fault a provider or a user's input can
cause once a job is claimed. A paid request that may have reached the provider is never sent again; a request that
cannot be built fails its job; no claimed job is left without a recorded way forward."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from storage import InvalidTransition, JobStatus, NewJob, Store, check_transition
from submitter.providers import PROVIDERS
from submitter.tokens import HookSigner
from submitter.worker import Endpoint, Submitter
from tests.submitter.test_worker import Peer, accepted, queue, raises, status, status_of

pytestmark = pytest.mark.anyio


def submitter(store: Store, peer: Peer, provider: str = "ttapi") -> Submitter:
    endpoint = Endpoint(PROVIDERS[provider], f"http://{provider}.test", "key")
    return Submitter(
        store,
        httpx.AsyncClient(transport=httpx.MockTransport(peer)),
        {provider: endpoint},
        signer=HookSigner(["s" * 32], max_age=3600),
        public_url="https://hooks.example",
    )


def boom(request: httpx.Request) -> httpx.Response:
    raise RuntimeError("the transport fell over mid-request")


@pytest.mark.parametrize(
    "answer",
    [status(500), status(502), status(503), status(504, "Gateway Time-out"), status(408), raises(httpx.ReadTimeout),
     raises(httpx.WriteTimeout), raises(httpx.RemoteProtocolError), raises(httpx.ReadError), boom],
    ids=["500", "502", "503", "504", "408", "read-timeout", "write-timeout", "dropped", "read-error", "exception"],
)  # fmt: skip
async def test_an_answer_that_may_follow_a_taken_job_is_never_resent(tmp_path: Path, answer: object) -> None:
    now = [1000.0]
    async with await Store.open(tmp_path / "db.sqlite3", clock=lambda: now[0]) as store:
        [job_id] = await queue(store)
        peer = Peer(answer)  # type: ignore[arg-type]
        worker = submitter(store, peer)
        await worker.run_once()
        for _ in range(5):  # however long we wait: a day of retry times
            now[0] += 3600
            await worker.run_once()
        assert len(peer.requests) == 1
        state, provider_job_id, error = await status_of(store, job_id)
        assert state is JobStatus.SUBMITTED and provider_job_id is None
        assert error is not None and error.startswith("outcome unknown")


@pytest.mark.parametrize("answer", [status(429), status(499, "Queue exhausted"), raises(httpx.ConnectError)])
async def test_only_an_answer_that_says_it_was_not_taken_is_sent_again(tmp_path: Path, answer: object) -> None:
    now = [1000.0]
    async with await Store.open(tmp_path / "db.sqlite3", clock=lambda: now[0]) as store:
        [job_id] = await queue(store)
        peer = Peer(answer, accepted)  # type: ignore[arg-type]
        worker = submitter(store, peer)
        await worker.run_once()
        now[0] += 3600
        await worker.run_once()
        assert len(peer.requests) == 2 and (await status_of(store, job_id))[0] is JobStatus.SUBMITTED


async def test_apimart_is_sent_an_idempotency_key_naming_the_job(store: Store) -> None:
    job, _ = await store.create_job(NewJob("apimart", "generate", {"prompt": "p", "image_url": "https://i/a.png"}))
    answer = {"code": 200, "data": [{"status": "submitted", "task_id": "task_1"}]}
    peer = Peer(lambda request: httpx.Response(200, json=answer))
    await submitter(store, peer, "apimart").run_once()
    assert peer.requests[0].headers["idempotency-key"] == job.id


async def test_prompts_that_cannot_be_encoded_fail_and_do_not_hold_the_providers_slots(store: Store) -> None:
    # Recorded straight into the store, as a job from before the API refused them would be.
    for _ in range(10):
        await store.create_job(NewJob("ttapi", "generate", {"prompt": "sunset \ud83d", "image_url": "https://i/a.png"}))
    [good] = await queue(store)
    peer = Peer(accepted)
    worker = submitter(store, peer)
    await worker.run_once()
    await worker.run_once()
    jobs = await store.list_jobs(limit=20)
    bad = [job for job in jobs if job.id != good]
    assert all(job.status is JobStatus.FAILED for job in bad)
    assert all(
        job.error and "cannot build the request" in job.error and "UnicodeEncodeError" in job.error for job in bad
    )
    assert (await status_of(store, good))[0] is JobStatus.SUBMITTED  # the provider was not wedged
    assert [json.loads(r.content)["prompt"] for r in peer.requests] == ["p0"]
    assert await store.in_flight("ttapi") == 1


async def test_a_claim_is_one_compare_and_set(store: Store) -> None:
    [job_id] = await queue(store)
    await store.claim_submission(job_id)
    with pytest.raises(InvalidTransition, match="cannot go from submitted to submitted"):
        await store.claim_submission(job_id)
    job = await store.get_job(job_id)
    assert job is not None and job.attempts == 1 and job.status is JobStatus.SUBMITTED


def test_the_lifecycle_refuses_a_second_claim_and_allows_more_progress() -> None:
    with pytest.raises(InvalidTransition):
        check_transition("j", JobStatus.SUBMITTED, JobStatus.SUBMITTED)
    with pytest.raises(InvalidTransition):
        check_transition("j", JobStatus.QUEUED, JobStatus.QUEUED)
    check_transition("j", JobStatus.RUNNING, JobStatus.RUNNING)
    with pytest.raises(InvalidTransition):
        check_transition("j", JobStatus.FAILED, JobStatus.SUCCEEDED)
    check_transition("j", JobStatus.FAILED, JobStatus.SUCCEEDED, lost=True)  # a lost job's late result
