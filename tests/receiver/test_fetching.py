"""The download reader (receiver/fetching.py) against a tiny server on 127.0.0.1.

Names other than 127.0.0.1 resolve through a resolver the test hands in, and sockets open through `Loopback`, which
records the address the reader asked for and connects to the local server instead: nothing leaves the machine.
What the downloader does with the responses (caps, encodings, drips, redirects, crashes) is tested through
`Downloader` in test_downloads.py, test_hostile_downloads.py and tests/faults/, which all run on this reader.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest

from receiver import readerthreads
from receiver.fetching import Fetcher, pour, tls_context
from receiver.fetchreader import READ
from receiver.guarded_http import AddressGuard
from receiver.netguard import UnsafeURL
from receiver.serving import running
from tests.receiver.test_guarded_http import HINT, PUBLIC, Resolver

pytestmark = pytest.mark.anyio

IDENTITY = {"Accept-Encoding": "identity"}
BIG = bytes(range(256)) * (32 * 1024)  # 8 MiB


@dataclass
class Origin:
    """Answers GET /video with `b"video"`; GET /big with BIG; GET /stall with a head and a first piece, then nothing
    until the client goes away. Records the Host header and the Accept-Encoding of each request."""

    hosts: list[str] = field(default_factory=list)
    encodings: list[str] = field(default_factory=list)
    gone: anyio.Event = field(default_factory=anyio.Event)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        headers = dict(scope["headers"])
        self.hosts.append(headers[b"host"].decode())
        self.encodings.append(headers.get(b"accept-encoding", b"").decode())
        if scope["path"] == "/stall":
            head = [(b"content-length", str(10 * 1024 * 1024).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": head})
            await send({"type": "http.response.body", "body": b"x" * 1000, "more_body": True})
            while (await receive())["type"] != "http.disconnect":
                pass
            self.gone.set()
            return
        if scope["path"] == "/big":
            head = [(b"content-length", str(len(BIG)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": head})
            await send({"type": "http.response.body", "body": BIG})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"video"})


@dataclass
class Loopback:
    """Opens every socket to the local server, recording the address and port it was asked for."""

    port: int
    asked: list[tuple[str, int]] = field(default_factory=list)

    def __call__(self, host: str, port: int, timeout: float | None) -> socket.socket:
        self.asked.append((host, port))
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)


@pytest.fixture
def origin() -> Origin:
    return Origin()


@pytest.fixture
async def origin_url(origin: Origin) -> AsyncIterator[str]:
    async with running(origin) as base_url:  # type: ignore[arg-type]
        yield base_url


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def body_of(fetcher: Fetcher, url: str) -> tuple[int, bytes]:
    async with fetcher.stream(url, IDENTITY) as response:
        return response.status_code, await response.aread()


async def test_connects_to_the_address_it_checked_and_names_the_host(origin: Origin, origin_url: str) -> None:
    loopback = Loopback(port_of(origin_url))
    fetcher = Fetcher(AddressGuard(resolver=Resolver({"cdn.example": [PUBLIC]})), connect=loopback)

    assert await body_of(fetcher, "http://cdn.example:8080/video") == (200, b"video")
    assert loopback.asked == [(PUBLIC, 8080)]  # the checked address, never the name: DNS is not asked again
    assert origin.hosts == ["cdn.example:8080"] and origin.encodings == ["identity"]


async def test_refuses_a_name_with_any_private_address_before_connecting(origin_url: str) -> None:
    loopback = Loopback(port_of(origin_url))
    fetcher = Fetcher(AddressGuard(resolver=Resolver({"cdn.example": [PUBLIC, "10.0.0.7"]})), connect=loopback)

    with pytest.raises(
        UnsafeURL, match=r"refusing to connect to cdn\.example:80: .*10\.0\.0\.7, which is a private address" + HINT
    ):
        await body_of(fetcher, "http://cdn.example/video")
    assert loopback.asked == []


async def test_each_request_resolves_and_checks_again(origin: Origin, origin_url: str) -> None:
    # DNS rebinding: a public answer for the first request, loopback for the next (a redirect, a retry).
    resolver = Resolver({"rebind.example": [[PUBLIC], ["127.0.0.1"]]})
    loopback = Loopback(port_of(origin_url))
    fetcher = Fetcher(AddressGuard(resolver=resolver), connect=loopback)

    assert await body_of(fetcher, "http://rebind.example/video") == (200, b"video")
    with pytest.raises(UnsafeURL, match=r"rebind\.example resolves to 127\.0\.0\.1, which is a loopback address"):
        await body_of(fetcher, "http://rebind.example/video")
    assert resolver.asked == ["rebind.example", "rebind.example"] and loopback.asked == [(PUBLIC, 80)]


async def test_a_trusted_origin_is_connected_by_name_without_a_lookup(origin: Origin, origin_url: str) -> None:
    loopback = Loopback(port_of(origin_url))
    fetcher = Fetcher(AddressGuard(allowed_origins={"http://cdn.local:9000"}, resolver=Resolver({})), connect=loopback)

    assert await body_of(fetcher, "http://cdn.local:9000/video") == (200, b"video")
    assert loopback.asked == [("cdn.local", 9000)]


async def test_a_cancelled_download_closes_its_connection_and_its_reader_ends(origin: Origin, origin_url: str) -> None:
    # The attempt's deadline (wirebody.Pace) cancels while the reader thread is blocked in a read: the cancel must
    # not wait for that read, and the reader must not outlive it (its thread waits for the next one, then ends).
    assert readerthreads.running() == 0
    fetcher = Fetcher(AddressGuard(allow_private=True))
    received = 0
    with anyio.CancelScope() as scope:
        async with fetcher.stream(f"{origin_url}/stall", IDENTITY) as response:
            async for raw in response.aiter_raw():
                received += len(raw)
                if received == 1000:  # all the server will send: the next read blocks until cancelled
                    scope.cancel()
    assert scope.cancelled_caught and received == 1000
    with anyio.fail_after(10):  # a bound on a hang, not a measurement
        await origin.gone.wait()  # the server saw the connection go
    with anyio.fail_after(10):  # a bound on a hang, not a measurement
        while readerthreads.running():
            await anyio.sleep(0.01)
    idle = [thread for thread in threading.enumerate() if thread.name.startswith("fetch ")]
    await anyio.to_thread.run_sync(lambda: [thread.join(10) for thread in idle])  # IDLE seconds for the next one
    assert not [thread for thread in idle if thread.is_alive()]


async def test_a_reader_thread_that_finished_runs_the_next_reader(origin_url: str) -> None:
    # Starting a thread makes the event loop wait for it to run (~0.5 ms with downloads holding the GIL by turns).
    fetcher = Fetcher(AddressGuard(allow_private=True))
    assert await body_of(fetcher, f"{origin_url}/video") == (200, b"video")
    with anyio.fail_after(10):
        while readerthreads.running():
            await anyio.sleep(0.01)
    waiting = [thread for thread in threading.enumerate() if thread.name == "fetch (idle)"]
    assert waiting  # the thread that ran the reader waits for the next one
    assert await body_of(fetcher, f"{origin_url}/video") == (200, b"video")
    # No thread was started for it: one of those that waited ran it.
    assert {thread for thread in threading.enumerate() if thread.name.startswith("fetch ")} <= set(waiting)


async def test_the_body_comes_as_the_reader_read_it_never_joined_into_larger_blocks(origin_url: str) -> None:
    # A busy event loop takes several reads at once; they come as they were read, not joined: joining a MiB cost
    # the loop about a millisecond (a fresh allocation, its pages faulted in). The blocking sleep keeps the loop
    # busy while the reader reads ahead, as a loop busy with other downloads is.
    fetcher = Fetcher(AddressGuard(allow_private=True))
    sizes = []
    async with fetcher.stream(f"{origin_url}/big", IDENTITY) as response:
        received = bytearray()
        async for raw in response.aiter_raw():
            sizes.append(len(raw))
            received += raw
            time.sleep(0.005)
    assert received == BIG
    assert max(sizes) <= READ, f"a block of {max(sizes)} bytes, more than one read of {READ}"


@dataclass
class Collected:
    """A writer and a check that hash what they are given, in the order given (keeping it would weigh as much as
    the body); `refuse_at` makes the check refuse once that many bytes have come, and `hold` keeps the writer's
    first write waiting."""

    digest: Any = field(default_factory=hashlib.sha256)
    size: int = 0
    buffers: set[int | None] = field(default_factory=set)  # what each piece was a view of (None: its own bytes)
    checked: int = 0
    finished: bool = False
    refuse_at: int | None = None
    hold: threading.Event | None = None
    writing: threading.Event = field(default_factory=threading.Event)

    def take(self, piece: bytes | memoryview) -> None:
        self.checked += len(piece)
        if self.refuse_at is not None and self.checked >= self.refuse_at:
            raise ValueError(f"refused at {self.checked}")

    def finish(self) -> None:
        self.finished = True

    def write(self, data: bytes | memoryview) -> None:
        self.writing.set()
        if self.hold is not None:
            self.hold.wait(10)  # a bound on a hang, not a timing: the test sets it
        self.digest.update(data)
        self.size += len(data)
        self.buffers.add(id(data.obj) if isinstance(data, memoryview) else None)


async def test_a_poured_body_goes_from_the_thread_into_the_writer_checked_and_whole_read_into_one_buffer(
    origin_url: str,
) -> None:
    # The thread reads into one buffer, checks each piece, writes it; the event loop only hears how much came.
    fetcher = Fetcher(AddressGuard(allow_private=True))
    collected, progress = Collected(), []
    async with fetcher.stream(f"{origin_url}/big", IDENTITY) as response:
        await pour(response, collected, collected, progress.append)
    assert collected.digest.digest() == hashlib.sha256(BIG).digest() and collected.size == len(BIG)
    assert collected.checked == len(BIG) and collected.finished and sum(progress) == len(BIG)
    assert len(collected.buffers) == 1 and None not in collected.buffers  # views of one buffer, read over and over


async def test_a_poured_piece_the_check_refuses_is_not_written_and_the_error_is_raised_as_itself(
    origin_url: str,
) -> None:
    fetcher = Fetcher(AddressGuard(allow_private=True))
    collected = Collected(refuse_at=1)
    async with fetcher.stream(f"{origin_url}/big", IDENTITY) as response:
        with pytest.raises(ValueError, match="refused at"):
            await pour(response, collected, collected, lambda size: None)
    assert collected.size == 0 and not collected.finished


async def test_a_cancelled_pour_returns_only_once_the_thread_has_let_go_of_the_writer(origin_url: str) -> None:
    # The writer is a `.part` its caller unlinks and closes as soon as pour returns: the thread must be done with it.
    fetcher = Fetcher(AddressGuard(allow_private=True))
    collected = Collected(hold=threading.Event())
    returned = anyio.Event()

    async def pouring(scope: anyio.CancelScope) -> None:
        with scope:
            async with fetcher.stream(f"{origin_url}/big", IDENTITY) as response:
                await pour(response, collected, collected, lambda size: None)
        returned.set()

    scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(pouring, scope)
        await anyio.to_thread.run_sync(collected.writing.wait, 10)  # the thread is inside its first write
        scope.cancel()
        await anyio.wait_all_tasks_blocked()
        assert not returned.is_set() and collected.size == 0  # still waiting for the thread
        collected.hold.set()  # type: ignore[union-attr]
    assert scope.cancelled_caught and 0 < collected.size < len(BIG)  # that one write, and no more


async def test_a_body_that_stops_coming_ends_in_a_read_timeout(origin: Origin, origin_url: str) -> None:
    fetcher = Fetcher(AddressGuard(allow_private=True), timeout=httpx.Timeout(5.0, read=0.2))

    with pytest.raises(httpx.ReadTimeout) as caught:
        await body_of(fetcher, f"{origin_url}/stall")
    assert caught.value.request.url == f"{origin_url}/stall"
    with anyio.fail_after(10):
        await origin.gone.wait()


async def test_a_refused_connection_is_an_httpx_connect_error(origin_url: str) -> None:
    with socket.socket() as unused:  # a port nobody listens on: bound, never listening
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}/video"
        with pytest.raises(httpx.ConnectError) as caught:
            await body_of(Fetcher(AddressGuard(allow_private=True)), url)
    assert re.search(r"connecting to 127\.0\.0\.1:\d+: .*refused", str(caught.value))


async def test_https_names_the_host_to_tls_and_verifies_certificates(origin_url: str) -> None:
    # A peer that is no TLS server: it records the ClientHello, where SNI carries the name in the clear, and hangs up.
    hello: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hello.append(await reader.read(4096))
        writer.close()

    server = await asyncio.start_server(record, "127.0.0.1", 0)
    loopback = Loopback(server.sockets[0].getsockname()[1])
    fetcher = Fetcher(AddressGuard(resolver=Resolver({"cdn.example": [PUBLIC]})), connect=loopback)
    async with server:
        with pytest.raises(httpx.ConnectError, match=r"connecting to cdn\.example"):
            await body_of(fetcher, "https://cdn.example/video")

    assert loopback.asked == [(PUBLIC, 443)]  # the checked address...
    assert hello[0][:1] == b"\x16" and b"cdn.example" in hello[0]  # ...and a TLS handshake naming the host
    context = tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
