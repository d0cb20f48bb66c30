"""The submission worker against a fake TTAPI peer: what is retried, what fails, and what is never resent."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from storage import JobStatus, NewJob, Store
from submitter.providers import PROVIDERS
from submitter.tokens import HookSigner
from submitter.worker import Endpoint, Submitter
from tests.conftest import StoreOpener

pytestmark = pytest.mark.anyio

Answer = Callable[[httpx.Request], httpx.Response]


class Peer:
    """Records each request, answers with the next scripted answer (the last one repeats)."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer(request)


def accepted(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"status": "SUCCESS", "message": "", "data": {"jobId": f"tt-{id(request)}"}})


def status(code: int, message: str = "nope") -> Answer:
    return lambda request: httpx.Response(code, json={"status": "FAILED", "message": message, "data": None})


def raises(exc: type[httpx.HTTPError]) -> Answer:
    def answer(request: httpx.Request) -> httpx.Response:
        raise exc("simulated", request=request)  # type: ignore[call-arg]

    return answer


def submitter(store: Store, peer: Peer, *, slots: int | None = None) -> Submitter:
    endpoint = Endpoint(PROVIDERS["ttapi"], "http://ttapi.test", "key", max_in_flight=slots)
    return Submitter(
        store,
        httpx.AsyncClient(transport=httpx.MockTransport(peer)),
        {"ttapi": endpoint},
        signer=HookSigner(["s" * 32], max_age=3600),
        public_url="https://hooks.example",
    )


async def queue(store: Store, count: int = 1) -> list[str]:
    ids = []
    for n in range(count):
        job, _ = await store.create_job(
            NewJob("ttapi", "generate", {"prompt": f"p{n}", "image_url": "https://i/a.png"})
        )
        ids.append(job.id)
    return ids


async def status_of(store: Store, job_id: str) -> tuple[JobStatus, str | None, str | None]:
    job = await store.get_job(job_id)
    assert job is not None
    return job.status, job.provider_job_id, job.error


async def test_accepted_job_records_the_provider_id_and_a_signed_hook(store: Store) -> None:
    [job_id] = await queue(store)
    peer = Peer(accepted)
    worker = submitter(store, peer)
    assert await worker.run_once() == 1
    state, provider_job_id, _ = await status_of(store, job_id)
    assert state is JobStatus.SUBMITTED and provider_job_id and provider_job_id.startswith("tt-")
    hook = json.loads(peer.requests[0].content)["hookUrl"]
    token = hook.removeprefix("https://hooks.example/hooks/ttapi/")
    assert "/" not in token and "?" not in hook
    assert HookSigner(["s" * 32], max_age=3600).verify_hook_token(token, "ttapi").job_id == job_id


@pytest.mark.parametrize("code", [400, 401, 402])
async def test_refusals_fail_the_job_with_the_providers_message(store: Store, code: int) -> None:
    [job_id] = await queue(store)
    await submitter(store, Peer(status(code, "Wrong TT-API-KEY or email is not activated."))).run_once()
    state, _, error = await status_of(store, job_id)
    assert state is JobStatus.FAILED and error is not None and "Wrong TT-API-KEY" in error


@pytest.mark.parametrize("answer", [status(429), status(499, "Queue exhausted"), raises(httpx.ConnectError)])
async def test_transient_refusals_wait_and_retry(tmp_path: Path, answer: Answer, open_store: StoreOpener) -> None:
    now = [1000.0]
    store = await open_store(tmp_path / "db.sqlite3", clock=lambda: now[0])
    [job_id] = await queue(store)
    peer = Peer(answer, accepted)
    worker = submitter(store, peer)
    await worker.run_once()
    job = await store.get_job(job_id)
    assert job is not None and job.status is JobStatus.QUEUED and job.next_attempt_at is not None
    assert job.next_attempt_at > 1000.0
    assert await worker.run_once() == 0  # not due yet: nothing is sent
    assert len(peer.requests) == 1
    now[0] = job.next_attempt_at + 1  # the retry comes due
    assert await worker.run_once() == 1
    assert len(peer.requests) == 2
    assert (await status_of(store, job_id))[0] is JobStatus.SUBMITTED


@pytest.mark.parametrize(
    "answer",
    [raises(httpx.ReadTimeout), raises(httpx.RemoteProtocolError), lambda r: httpx.Response(200, content=b"<html>")],
    ids=["read-timeout", "dropped-after-send", "garbage-200"],
)
async def test_a_submission_that_may_have_been_accepted_is_never_sent_again(store: Store, answer: Answer) -> None:
    [job_id] = await queue(store)
    peer = Peer(answer)
    worker = submitter(store, peer)
    await worker.run_once()
    await worker.run_once()
    assert len(peer.requests) == 1
    state, provider_job_id, _ = await status_of(store, job_id)
    assert state is JobStatus.SUBMITTED and provider_job_id is None  # the callback will settle it
    assert await store.in_flight("ttapi") == 1


async def test_at_most_the_providers_limit_is_in_flight(store: Store) -> None:
    ids = await queue(store, 11)
    peer = Peer(accepted)
    worker = submitter(store, peer)
    assert await worker.run_once() == 10
    assert await worker.run_once() == 0
    assert len(peer.requests) == 10
    assert (await status_of(store, ids[-1]))[0] is JobStatus.QUEUED  # first come, first served


async def test_extend_without_an_accepted_parent_fails_clearly(store: Store) -> None:
    parent, _ = await store.create_job(NewJob("ttapi", "generate", {"prompt": "p", "image_url": "https://i/a.png"}))
    await store.claim_submission(parent.id)  # no provider id yet
    child, _ = await store.create_job(NewJob("ttapi", "extend", {"index": 0}, parent_id=parent.id))
    peer = Peer(accepted)
    await submitter(store, peer).run_once()
    state, _, error = await status_of(store, child.id)
    assert state is JobStatus.FAILED and error is not None and "no TTAPI jobId" in error
    assert peer.requests == []
