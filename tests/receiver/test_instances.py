"""Two instances on one database: two apps, each with its own store (its own connections) on the same SQLite file or
PostgreSQL database, their workers running at once. What must hold across them: a provider's in-flight limit,
each event handled once with the money guards exact, and (on PostgreSQL) work recorded by one waking the other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from receiver.app import create_app
from receiver.rules import RuleSet
from receiver.service import Service
from receiver.settings import ProviderSettings, Secret
from storage import CallbackResult, JobStatus, NewJob, StoreProtocol, open_store
from tests.postgres import PostgresServer
from tests.receiver.conftest import make_settings, ttapi_callback

pytestmark = pytest.mark.anyio

LIMIT = 3


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "reelhook.sqlite3")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.new_database()
    yield server.url(name)
    server.drop_database(name)


@dataclass
class CountingTTAPI:
    """TTAPI as the seed answers a submit; counts the jobs it holds (accepted, not yet called back) and the most it
    ever held at once. A job is done when the test says so (`finish`), as a callback would say."""

    held: set[str] = field(default_factory=set)
    most: int = 0
    accepted: list[str] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        job_id = f"tt-{len(self.accepted) + 1}"
        self.accepted.append(job_id)
        self.held.add(job_id)
        self.most = max(self.most, len(self.held))
        return httpx.Response(200, json={"status": "SUCCESS", "message": "", "data": {"jobId": job_id}})


@asynccontextmanager
async def instance(
    tmp_path: Path, database: str, provider: Any, rules: RuleSet | None = None
) -> AsyncIterator[tuple[Service, httpx.AsyncClient, StoreProtocol]]:
    """One reelhook instance on `database`: its own store, HTTP client and workers."""
    shared = {"database_url": Secret(database)} if database.startswith("postgresql") else {}
    settings = make_settings(
        tmp_path,
        providers={"ttapi": ProviderSettings(Secret("tt-key"), "http://ttapi.test", max_in_flight=LIMIT)},
        **shared,
    )
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(await open_store(database))
        http = await stack.enter_async_context(httpx.AsyncClient(transport=httpx.MockTransport(provider)))
        app = create_app(settings, store=store, http=http, rules=rules or RuleSet.empty())
        await stack.enter_async_context(app.router.lifespan_context(app))
        transport = httpx.ASGITransport(app=app)
        client = await stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://testserver"))
        yield app.state.service, client, store


async def recorded_as(store: StoreProtocol, ids: list[str], provider_job_id: str) -> str:
    """Our job the provider accepted as `provider_job_id`, once its submitter has recorded the answer."""
    while True:
        for job_id in ids:
            job = await store.get_job(job_id)
            if job is not None and job.provider_job_id == provider_job_id:
                return job_id
        await anyio.sleep(0.01)


def hook_path(service: Service, job_id: str) -> str:
    return f"/hooks/ttapi/{service.signer.sign_hook_token(job_id, 'ttapi')}"


async def test_two_instances_never_hold_more_than_the_limit_in_flight(tmp_path: Path, database: str) -> None:
    provider = CountingTTAPI()
    async with (
        instance(tmp_path / "a", database, provider) as (a, client_a, store),
        instance(tmp_path / "b", database, provider) as (b, client_b, _),
    ):
        ids = [
            (await store.create_job(NewJob("ttapi", "generate", {"prompt": f"p{n}", "image_url": "https://i/x.png"})))[
                0
            ].id
            for n in range(12)
        ]
        for service in (a, b):
            service.wake_submitter()
        clients = (client_a, client_b)
        done = 0
        with anyio.fail_after(30):
            while done < len(ids):
                # Finish what the provider holds, one callback at a time, through either instance in turn.
                while not provider.held:
                    await anyio.sleep(0.01)
                provider_job_id = sorted(provider.held)[0]
                job_id = await recorded_as(store, ids, provider_job_id)
                provider.held.discard(provider_job_id)
                body = ttapi_callback(provider_job_id, status="FAILED")
                answer = await clients[done % 2].post(hook_path(a, job_id), content=body)
                assert answer.status_code == 200
                done += 1
        assert len(provider.accepted) == 12 and provider.most <= LIMIT


async def test_each_event_is_handled_once_and_the_guard_holds_with_two_instances_racing(
    tmp_path: Path, database: str
) -> None:
    rules = RuleSet.parse(
        """
        [limits]
        max_jobs_per_day = 3
        [[rule]]
        name = "extend-first"
        on = "job.succeeded"
        when.action = "generate"
        extend.index = 0
        """
    )
    async with await open_store(database) as store:
        roots = []
        for n in range(8):
            job, _ = await store.create_job(NewJob("ttapi", "generate", {"prompt": f"p{n}"}))
            await store.claim_submission(job.id)
            result = CallbackResult(f"tt-root-{n}", JobStatus.SUCCEEDED, 100, ("http://127.0.0.1:9/v/0.mp4",))
            await store.record_callback(job.id, "ttapi", body=b"{}", headers=[], result=result)
            roots.append(job.id)
        await store.set_flag("paused", "until both instances run")  # the events wait for both
    provider = CountingTTAPI()
    async with (
        instance(tmp_path / "a", database, provider, rules) as (a, _, store),
        instance(tmp_path / "b", database, provider, rules) as (b, _, _),
    ):
        await store.set_flag("paused", None)
        a.wake_all()
        b.wake_all()
        with anyio.fail_after(30):
            while any(event.job_id in roots for event in await store.pending_events(limit=100)):
                await anyio.sleep(0.02)
        followups = [job for job in await store.list_jobs(limit=100) if job.rule is not None]
        notes = [note for root in roots for note in await store.get_notes(root)]
    assert len(followups) == 3  # max_jobs_per_day
    assert len(notes) == 5 and all("max_jobs_per_day 3 reached" in note.message for note in notes)  # one per event


async def test_a_callback_recorded_by_one_instance_wakes_the_other(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    name = postgres_server.new_database()
    database = postgres_server.url(name)
    try:
        provider = CountingTTAPI()
        # In flight before either instance starts: created while they run, their submitters could claim it first.
        async with await open_store(database) as store:
            job, _ = await store.create_job(NewJob("ttapi", "generate", {"prompt": "p"}))
            await store.claim_submission(job.id)
            await store.record_submitted(job.id, "tt-9")
        async with (
            instance(tmp_path / "a", database, provider) as (a, client_a, _),
            instance(tmp_path / "b", database, provider) as (b, _, _),
        ):
            with anyio.fail_after(10):
                await b.wait_idle()  # b is at rest: only news from elsewhere can wake it now (its backstop is 60 s)
            seen = b.changes.count
            answer = await client_a.post(hook_path(a, job.id), content=ttapi_callback("tt-9", videos=0))
            assert answer.status_code == 200
            with anyio.fail_after(10):
                await b.changes.wait(seen)
    finally:
        postgres_server.drop_database(name)
