"""A provider slow to answer holds up nothing else: while `Submitter.sending()` runs (as the service runs it), a run
hands each claimed job to a request of its own and returns, so the next run claims and sends other jobs, of this
provider or another, while the slow answer is still awaited. (Seen: a follow-up recorded while its root's request
was still being answered waited for that answer, ~40 ms in `bench latency`, and any slow provider held every other.)
"""

from __future__ import annotations

import anyio
import httpx
import pytest

from storage import JobStatus, NewJob, Store
from submitter.providers import PROVIDERS
from submitter.tokens import HookSigner
from submitter.worker import Endpoint, Submitter
from tests.submitter.test_worker import accepted, status_of

pytestmark = pytest.mark.anyio


class SlowThenQuick:
    """An async peer: ACEDATA's requests wait until `release` is set; TTAPI's are answered at once."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.arrived: list[str] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.arrived.append(request.url.host)
        if request.url.host == "acedata.test":
            await self.release.wait()
            return httpx.Response(200, json={"success": True, "task_id": "ace-1"})
        return accepted(request)


async def test_a_provider_slow_to_answer_holds_up_no_other_submission(store: Store) -> None:
    peer = SlowThenQuick()
    endpoints = {
        "acedata": Endpoint(PROVIDERS["acedata"], "http://acedata.test", "key"),
        "ttapi": Endpoint(PROVIDERS["ttapi"], "http://ttapi.test", "key"),
    }
    async with httpx.AsyncClient(transport=httpx.MockTransport(peer)) as http:
        worker = Submitter(
            store, http, endpoints, signer=HookSigner(["s" * 32], max_age=3600), public_url="https://hooks.example"
        )
        slow, _ = await store.create_job(
            NewJob("acedata", "generate", {"prompt": "a slow one", "image_url": "https://i/a.png"})
        )
        async with worker.sending():
            with anyio.fail_after(5):
                assert await worker.run_once() == 1  # handed off: the run does not wait for acedata's answer
                while peer.arrived != ["acedata.test"]:
                    await anyio.sleep(0.01)
                quick, _ = await store.create_job(
                    NewJob("ttapi", "generate", {"prompt": "a quick one", "image_url": "https://i/a.png"})
                )
                assert await worker.run_once() == 1
                while (await status_of(store, quick.id))[1] is None:  # its provider id recorded
                    await anyio.sleep(0.01)
            assert (await status_of(store, slow.id))[:2] == (JobStatus.SUBMITTED, None)  # still awaiting its answer
            peer.release.set()
            with anyio.fail_after(5):
                await worker.wait_sent()
        assert (await status_of(store, slow.id))[:2] == (JobStatus.SUBMITTED, "ace-1")
