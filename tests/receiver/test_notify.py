"""`notify`: each event POSTed once, signed the Standard Webhooks way, retried until answered, kept across restarts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.notify import Notifier
from receiver.serving import bind_socket, running
from storage import NewJob, NewNotification, Store
from tests.conftest import StoreOpener

pytestmark = pytest.mark.anyio

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


class Receiver:
    """A webhook consumer that checks signatures by the Standard Webhooks spec, independently of reelhook's code."""

    def __init__(self) -> None:
        self.accepted: list[dict[str, Any]] = []
        self.refused = 0
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        msg_id, timestamp = request.headers["webhook-id"], request.headers["webhook-timestamp"]
        key = base64.b64decode(SECRET.split("_", 1)[1])
        expected = base64.b64encode(hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest())
        signatures = [part.split(",", 1)[1] for part in request.headers["webhook-signature"].split()]
        fresh = abs(time.time() - int(timestamp)) < 300
        if not fresh or not any(hmac.compare_digest(expected.decode(), sig) for sig in signatures):
            self.refused += 1
            return Response(status_code=401)
        self.accepted.append({"id": msg_id, **json.loads(body)})
        return Response(status_code=204)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def record(store: Store, url: str, body: dict[str, Any] | None = None) -> None:
    job, _ = await store.create_job(NewJob("ttapi", "generate", {"prompt": "p", "image_url": "https://i/a.png"}))
    await store.claim_submission(job.id)
    await store.record_submitted(job.id, "tt-1")  # emits job.submitted
    event = (await store.pending_events())[0]
    note = NewNotification("tell-me", url, json.dumps(body or {"type": event.type.value}).encode())
    await store.complete_event(event.id, notifications=[note, note])  # the same rule twice: recorded once


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_receiver_that_was_down_gets_each_event_once(
    tmp_path: Path, http: httpx.AsyncClient, open_store: StoreOpener
) -> None:
    now = [time.time()]
    store = await open_store(tmp_path / "db.sqlite3", clock=lambda: now[0])
    port = free_port()
    await record(store, f"http://127.0.0.1:{port}/hook", {"type": "job.submitted"})
    notifier = Notifier(store, http, SECRET)

    assert await notifier.run_once() == 1  # nobody listens: connection refused
    assert await store.due_notifications(limit=10) == []  # not due again yet
    due = await store.next_notification_at()
    assert due is not None and due > now[0]
    for _ in range(3):  # down for a while: every retry fails and backs off further
        now[0] = due + 1
        assert await notifier.run_once() == 1
        later = await store.next_notification_at()
        assert later is not None and later > now[0]
        due = later

    consumer = Receiver()
    async with running(consumer.app, bind_socket(port=port)):
        now[0] = due + 1
        assert await notifier.run_once() == 1
        now[0] += 10_000
        assert await notifier.run_once() == 0  # delivered: never sent again
    assert consumer.refused == 0
    assert [message["type"] for message in consumer.accepted] == ["job.submitted"]
    assert consumer.accepted[0]["id"].startswith("msg_")


async def test_a_recorded_notification_survives_a_restart(tmp_path: Path, http: httpx.AsyncClient) -> None:
    consumer = Receiver()
    async with running(consumer.app) as url:
        async with await Store.open(tmp_path / "db.sqlite3") as store:
            await record(store, f"{url}/hook")  # recorded, then the process "dies" before sending
        async with await Store.open(tmp_path / "db.sqlite3") as reopened:
            assert await Notifier(reopened, http, SECRET).run_once() == 1
            assert await Notifier(reopened, http, SECRET).run_once() == 0
    assert len(consumer.accepted) == 1


async def test_a_wrong_key_is_refused_by_a_verifying_receiver(tmp_path: Path, http: httpx.AsyncClient) -> None:
    consumer = Receiver()
    other = "whsec_" + base64.b64encode(b"z" * 32).decode()
    async with running(consumer.app) as url, await Store.open(tmp_path / "db.sqlite3") as store:
        await record(store, f"{url}/hook")
        await Notifier(store, http, other).run_once()
        assert consumer.refused == 1 and consumer.accepted == []
        assert await store.next_notification_at() is not None  # still owed: it will be retried
