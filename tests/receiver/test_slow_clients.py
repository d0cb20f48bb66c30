"""Slow and hostile clients on real sockets: heads that never finish, bodies dribbled past their deadline, many
connections on one job's token, idle sockets. Each holds at most its share for at most its deadline, and a
legitimate callback for another job gets its 200 at once the whole time.

Deadlines are shortened through settings (fractions of a second); a legitimate callback must be answered well
within the shortest of them, so a 200 that only came because a hostile client was dropped would fail the test.

Every test runs on both of uvicorn's HTTP parsers, h11 and httptools (what `reelhook serve` uses when installed):
the guards hook into each differently (receiver/connections.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
from anyio.abc import SocketStream

from receiver.app import create_app
from receiver.connections import ConnectionLimits, Parser
from receiver.rules import RuleSet
from receiver.serving import running
from storage import NewJob, Store
from tests.receiver.conftest import FakeTTAPI, make_settings, ttapi_callback

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["h11", "httptools"])
def parser(request: pytest.FixtureRequest) -> Parser:
    return request.param  # type: ignore[no-any-return]


AT_ONCE = 1.0  # seconds a legitimate callback may take while all this goes on


@dataclass
class Served:
    url: str
    app: Any
    db_path: Path
    jobs: dict[str, str]  # name -> job id; each job's provider id is f"tt-{name}"
    streams: list[SocketStream]  # raw client sockets, closed when the server stops

    async def connect(self) -> SocketStream:
        parts = urlsplit(self.url)
        assert parts.hostname and parts.port
        stream = await anyio.connect_tcp(parts.hostname, parts.port)
        self.streams.append(stream)
        return stream

    def token(self, name: str) -> str:
        return str(self.app.state.service.signer.sign_hook_token(self.jobs.get(name, name), "ttapi"))

    def head(self, name: str, content_length: int, token: str | None = None) -> bytes:
        host = urlsplit(self.url).netloc
        return (
            f"POST /hooks/ttapi/{token or self.token(name)} HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
        ).encode()

    async def callback(self, name: str) -> httpx.Response:
        """What a provider sends, on a fresh connection; it must be answered at once."""
        with anyio.fail_after(AT_ONCE):
            async with httpx.AsyncClient(base_url=self.url) as client:
                return await client.post(f"/hooks/ttapi/{self.token(name)}", content=ttapi_callback(f"tt-{name}"))

    def callbacks(self, name: str) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(self.db_path)) as db:
            return db.execute("SELECT * FROM callbacks WHERE job_id = ?", (self.jobs[name],)).fetchall()


@asynccontextmanager
async def serving(tmp_path: Path, parser: Parser, jobs: str = "AB", **overrides: Any) -> AsyncIterator[Served]:
    settings = make_settings(tmp_path, **overrides)
    db_path = tmp_path / "reelhook.sqlite3"
    async with (
        await Store.open(db_path) as store,
        httpx.AsyncClient(transport=httpx.MockTransport(FakeTTAPI())) as http,
    ):
        ids = {}
        for name in jobs:  # submitted before the service starts, so no worker races the test for them
            job, _ = await store.create_job(
                NewJob("ttapi", "generate", {"prompt": "p", "image_url": "https://a/b.png"})
            )
            await store.claim_submission(job.id)
            await store.record_submitted(job.id, f"tt-{name}")
            ids[name] = job.id
        app = create_app(settings, store=store, http=http, rules=RuleSet.empty())
        async with running(app, limits=ConnectionLimits.of(settings), http=parser) as url:
            served = Served(url, app, db_path, ids, [])
            try:
                yield served
            finally:
                for stream in served.streams:
                    await stream.aclose()


async def response_of(stream: SocketStream, timeout: float) -> tuple[int, bytes] | None:
    """The status and head of the response on `stream` within `timeout`, or None if none came."""
    data = b""
    with anyio.move_on_after(timeout):
        while b"\r\n\r\n" not in data:
            try:
                data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return None
        head = data.split(b"\r\n\r\n", 1)[0].lower()
        return int(head.split(b" ", 2)[1]), head
    return None


async def closed(stream: SocketStream, timeout: float) -> bool:
    """Whether the server closes `stream` within `timeout` (anything it sends before is read and dropped)."""
    with anyio.move_on_after(timeout):
        try:
            while True:
                await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return True
    return False


async def test_heads_that_never_finish_are_closed_while_a_callback_gets_200(tmp_path: Path, parser: Parser) -> None:
    async with serving(tmp_path, parser, header_timeout=1.5) as served:
        silent = [await served.connect() for _ in range(10)]
        partial = [await served.connect() for _ in range(10)]
        for stream in partial:
            await stream.send(served.head("A", 100)[:60])  # the request line and part of a header, then nothing

        assert (await served.callback("B")).status_code == 200
        with anyio.fail_after(5):
            results = [await closed(stream, 5) for stream in silent + partial]
        assert results == [True] * 20
        assert served.callbacks("A") == [] and len(served.callbacks("B")) == 1


async def test_a_body_dribbled_past_its_deadline_gets_408_and_frees_the_slot(tmp_path: Path, parser: Parser) -> None:
    async with serving(tmp_path, parser, body_timeout=1.5, max_hook_requests_per_job=1) as served:
        body = ttapi_callback("tt-A")
        stream = await served.connect()
        await stream.send(served.head("A", len(body)))

        async def dribble() -> None:
            for byte in body[:-1]:  # one byte every 50 ms: the whole body would take ~25 s
                await stream.send(bytes([byte]))
                await anyio.sleep(0.05)

        async with anyio.create_task_group() as tg:
            tg.start_soon(dribble)
            assert (await served.callback("B")).status_code == 200  # meanwhile, another job's callback
            started = anyio.current_time()
            answer = await response_of(stream, 5)
            tg.cancel_scope.cancel()
        assert answer is not None and answer[0] == 408, answer
        assert anyio.current_time() - started < 1.5  # at its deadline, not when the body would have ended
        assert await closed(stream, 2)
        assert served.callbacks("A") == []  # nothing of it stored
        assert (await served.callback("A")).status_code == 200  # its only slot is free again
        assert len(served.callbacks("A")) == 1


async def test_one_token_holds_at_most_its_share_of_the_slots(tmp_path: Path, parser: Parser) -> None:
    async with serving(tmp_path, parser, max_hook_requests=4, max_hook_requests_per_job=2, body_timeout=2.0) as served:
        streams = [await served.connect() for _ in range(10)]
        for stream in streams:
            await stream.send(served.head("A", 200) + b"{")  # a leaked token: bodies that never finish

        answers: list[tuple[int, bytes] | None] = [None] * 10

        async def answer(i: int) -> None:
            answers[i] = await response_of(streams[i], 1.0)

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(answer, i)
        refused = [a for a in answers if a is not None]
        assert len(refused) == 8 and {status for status, _ in refused} == {429}, answers
        assert all(b"retry-after: 5" in head and b"connection: close" in head for _, head in refused)
        held = [streams[i] for i, a in enumerate(answers) if a is None]
        assert [await closed(streams[i], 1) for i, a in enumerate(answers) if a is not None] == [True] * 8

        assert (await served.callback("B")).status_code == 200  # other jobs still have the rest of the slots
        for stream in held:  # A's two slots end at the body deadline
            assert (await response_of(stream, 3)) is not None
        assert served.callbacks("A") == []
        assert (await served.callback("A")).status_code == 200
        assert len(served.callbacks("A")) == 1 and len(served.callbacks("B")) == 1


async def test_a_bad_token_is_refused_at_once_without_a_slot_or_its_body(tmp_path: Path, parser: Parser) -> None:
    async with serving(
        tmp_path, parser, jobs="AC", max_hook_requests=2, max_hook_requests_per_job=1, body_timeout=3.0
    ) as s:
        holders = [await s.connect() for _ in "AC"]
        for stream, name in zip(holders, "AC", strict=True):
            await stream.send(s.head(name, 200) + b"{")  # A and C hold every slot there is
        with anyio.fail_after(2):
            while True:  # a valid token for a job that does not exist: 503 once the slots are all held
                probe = await s.connect()
                await probe.send(s.head("no-such-job", 2) + b"{}")
                answer = await response_of(probe, 1)
                if answer is not None and answer[0] == 503:
                    break
                await anyio.sleep(0.01)

        forged = await s.connect()
        await forged.send(s.head("A", 1000, token="forged-token"))  # and not a byte of its body
        answer = await response_of(forged, AT_ONCE)
        assert answer is not None and answer[0] == 403, answer
        assert await closed(forged, 1)  # its body is not waited for
        assert s.callbacks("A") == [] and s.callbacks("C") == []


async def test_idle_kept_alive_connections_are_closed(tmp_path: Path, parser: Parser) -> None:
    async with serving(tmp_path, parser, keep_alive_timeout=0.5, header_timeout=10) as served:
        stream = await served.connect()
        await stream.send(f"GET /healthz HTTP/1.1\r\nHost: {urlsplit(served.url).netloc}\r\n\r\n".encode())
        answer = await response_of(stream, 2)
        assert answer is not None and answer[0] == 200 and b"connection: close" not in answer[1]
        started = anyio.current_time()
        assert await closed(stream, 3)
        assert anyio.current_time() - started < 2


async def test_past_the_connection_cap_the_longest_idle_is_closed_for_a_new_one(tmp_path: Path, parser: Parser) -> None:
    async with serving(tmp_path, parser, max_connections=10, header_timeout=10) as served:
        idle = []
        for _ in range(30):
            idle.append(await served.connect())
            await anyio.sleep(0.005)  # accepted in this order, so their waits are ordered too

        assert (await served.callback("B")).status_code == 200

        async def is_closed(stream: SocketStream) -> bool:
            return await closed(stream, 0.05)

        with anyio.fail_after(5):
            while True:
                gone = [await is_closed(stream) for stream in idle]
                if sum(gone) >= 21:  # 20 past the cap, and one more for the callback's connection
                    break
        assert gone[:21] == [True] * 21 and not any(gone[-5:]), gone  # the oldest went first


async def test_a_head_past_16_kib_is_refused_400_while_a_callback_gets_200(tmp_path: Path, parser: Parser) -> None:
    async with serving(tmp_path, parser, header_timeout=10) as served:
        stream = await served.connect()
        await stream.send(served.head("A", 100).split(b"\r\n", 1)[0] + b"\r\n")  # the request line, then headers
        for i in range(3):  # 12 KiB, under the limit
            await stream.send(f"X-Pad-{i}: ".encode() + b"a" * 4096 + b"\r\n")
        # and 5 KiB more, past 16 KiB, in the last write: the server reads it all before it answers and closes, so
        # the close sends a FIN after the 400, not a reset that would discard it
        await stream.send(b"X-Pad-3: " + b"a" * 5120 + b"\r\n")
        answer = await response_of(stream, AT_ONCE)  # not at the 10 s head deadline
        assert answer is not None and answer[0] == 400, answer
        assert await closed(stream, 1)
        assert (await served.callback("B")).status_code == 200
        assert served.callbacks("A") == []


async def test_a_pipelined_request_is_not_cut_by_the_head_deadline_while_its_body_arrives(
    tmp_path: Path, parser: Parser
) -> None:
    async with serving(tmp_path, parser, header_timeout=0.5, body_timeout=10) as served:
        first, second = ttapi_callback("tt-A"), ttapi_callback("tt-B")
        stream = await served.connect()
        # Two callbacks in one write, the second's body held back: its head is in, so no head deadline applies.
        await stream.send(served.head("A", len(first)) + first + served.head("B", len(second)))
        for i in range(0, len(second), len(second) // 8 + 1):  # the body over ~1 s, twice the head deadline
            await anyio.sleep(0.125)
            await stream.send(second[i : i + len(second) // 8 + 1])
        received = b""
        with anyio.move_on_after(5):
            while received.count(b"HTTP/1.1 200") < 2:
                received += await stream.receive()
        assert received.count(b"HTTP/1.1 200") == 2, received
        assert len(served.callbacks("A")) == 1 and len(served.callbacks("B")) == 1
