"""Wake-ups across instances on PostgreSQL: work recorded by one instance wakes the others' workers, on commit only,
and a listener that lost its connection or heard nothing for a while wakes everything (storage/postgres/wakeups.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import anyio
import pytest

from storage import CallbackResult, JobMismatch, JobStatus, NewJob, NewNotification
from storage.postgres import PostgresStore
from storage.postgres.wakeups import QUEUES, Wakeups
from tests.postgres import PostgresServer

pytestmark = pytest.mark.anyio


@dataclass
class Heard:
    """The hints a listening instance received, and a way to wait for some."""

    queues: list[str] = field(default_factory=list)
    _news: anyio.Event = field(default_factory=anyio.Event)

    def __call__(self, queue: str) -> None:
        self.queues.append(queue)
        self._news.set()

    async def until(self, *expected: str) -> None:
        with anyio.fail_after(10):
            while not set(expected) <= set(self.queues):
                self._news = anyio.Event()
                await self._news.wait()


@pytest.fixture
def url(postgres_server: PostgresServer) -> Iterator[str]:
    name = postgres_server.new_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@asynccontextmanager
async def listening(url: str, **options: float) -> AsyncIterator[Heard]:
    heard = Heard()
    async with anyio.create_task_group() as tg:
        await tg.start(Wakeups(url, heard, **options).run)
        await heard.until(*QUEUES)  # on connecting: anything may have been sent before
        heard.queues.clear()
        yield heard
        tg.cancel_scope.cancel()


async def test_work_recorded_by_one_instance_wakes_the_others(url: str) -> None:
    async with await PostgresStore.open(url) as a, listening(url, backstop=600) as b:
        job, _ = await a.create_job(NewJob("ttapi", "generate", {"prompt": "a cat"}))
        await b.until("submissions")
        await a.claim_submission(job.id)
        await b.until("lookups")
        b.queues.clear()
        success = CallbackResult("p-1", JobStatus.SUCCEEDED, 100, ("https://cdn.example/0.mp4",))
        await a.record_callback(job.id, "ttapi", body=b"{}", headers=[], result=success)
        await b.until("events", "downloads", "submissions")  # a video to fetch, rules to run, a slot free
        b.queues.clear()
        with pytest.raises(JobMismatch):  # rolled back: no hint may leave
            await a.record_callback(
                job.id, "ttapi", body=b"", headers=[], result=CallbackResult("p-2", JobStatus.FAILED)
            )
        [event] = await a.pending_events()
        await a.complete_event(event.id, notifications=[NewNotification("r", "https://hooks.example/n", b"{}")])
        await b.until("notifications")
        assert b.queues == ["notifications"]


async def test_a_listener_that_lost_its_connection_wakes_every_queue(url: str, postgres_server: PostgresServer) -> None:
    async with listening(url, backstop=600, reconnect_after=0.05) as b:
        [(killed,)] = postgres_server.admin(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            f" WHERE datname = '{urlsplit(url).path.lstrip('/')}' AND query LIKE 'LISTEN%'"
        )
        assert killed == 1
        await b.until(*QUEUES)


async def test_a_quiet_listener_wakes_every_queue_after_the_backstop(url: str) -> None:
    async with listening(url, backstop=0.2) as b:
        await b.until(*QUEUES)
