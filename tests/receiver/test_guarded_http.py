"""The guarded client against a tiny server on 127.0.0.1.

Names other than `localhost` resolve through a resolver the test hands in, and sockets to the addresses the guard
checked open through `Loopback`, a network backend that records what it was asked for and connects to the local
server instead: nothing here leaves the machine.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpcore
import httpx
import pytest

from receiver.guarded_http import GuardedBackend, guarded_client
from receiver.netguard import IPAddress, UnsafeURL
from receiver.serving import running

pytestmark = pytest.mark.anyio

TIMEOUT = httpx.Timeout(5)
PUBLIC, OTHER_PUBLIC = "93.184.216.34", "93.184.216.35"
HINT = r" \(set REELHOOK_ALLOW_PRIVATE_URLS=1 to allow\)"


@dataclass
class Origin:
    """Answers every GET with `b"video"`, recording the Host header it was sent."""

    hosts: list[str] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.hosts.append(dict(scope["headers"])[b"host"].decode())
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"video"})


@dataclass
class Resolver:
    """Answers each name from `answers`; a list of lists answers one per call, the last one from then on."""

    answers: dict[str, list[str] | list[list[str]]]
    asked: list[str] = field(default_factory=list)

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        calls = sum(1 for asked in self.asked if asked == host)
        self.asked.append(host)
        answer = self.answers[host]
        if answer and isinstance(answer[0], list):
            answer = answer[min(calls, len(answer) - 1)]
        return [ipaddress.ip_address(address) for address in answer]


class TLSRefused(httpcore.AsyncNetworkStream):
    """A socket that records the name TLS would verify, then fails the handshake (there is no TLS server here)."""

    def __init__(self, names: list[str | None]) -> None:
        self._names = names

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        self._names.append(server_hostname)
        raise httpcore.ConnectError("no TLS server here")

    async def aclose(self) -> None:
        pass


@dataclass
class Loopback(httpcore.AsyncNetworkBackend):
    """Records each (host, port) it is asked to connect to, then connects to 127.0.0.1:`port` whatever they were."""

    port: int
    asked: list[tuple[str, int]] = field(default_factory=list)
    down: set[str] = field(default_factory=set)  # addresses that refuse connections
    tls_names: list[str | None] = field(default_factory=list)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.asked.append((host, port))
        if host in self.down:
            raise httpcore.ConnectError(f"[Errno 111] Connection refused by {host}")
        if port == 443:
            return TLSRefused(self.tls_names)
        return await httpcore.AnyIOBackend().connect_tcp("127.0.0.1", self.port, timeout=timeout)


@pytest.fixture
def origin() -> Origin:
    return Origin()


@pytest.fixture
async def origin_url(origin: Origin) -> AsyncIterator[str]:
    async with running(origin) as base_url:  # type: ignore[arg-type]
        yield base_url


@pytest.fixture
def loopback(origin_url: str) -> Loopback:
    return Loopback(int(origin_url.rsplit(":", 1)[1]))


async def test_localhost_is_refused_at_connect_time(origin: Origin, origin_url: str) -> None:
    port = origin_url.rsplit(":", 1)[1]
    async with guarded_client(allow_private=False, allowed_origins=(), timeout=TIMEOUT) as client:
        for host in ("localhost", "127.0.0.1"):
            with pytest.raises(UnsafeURL) as caught:
                await client.get(f"http://{host}:{port}/v.mp4")
            reason = "localhost resolves to (127.0.0.1|::1), which" if host == "localhost" else "127.0.0.1"
            assert re.fullmatch(
                rf"refusing to connect to {host}:{port}: {reason} is a loopback address{HINT}", str(caught.value)
            )
    assert origin.hosts == []


async def test_a_name_is_refused_if_any_address_it_resolves_to_is_not_public(loopback: Loopback) -> None:
    resolver = Resolver({"cdn.example": [PUBLIC, "10.0.0.7"], "meta.example": ["169.254.169.254"]})
    async with guarded_client(
        allow_private=False, allowed_origins=(), timeout=TIMEOUT, resolver=resolver, network=loopback
    ) as client:
        with pytest.raises(UnsafeURL) as caught:
            await client.get("http://cdn.example/v.mp4")
        assert re.fullmatch(
            rf"refusing to connect to cdn.example:80: cdn.example resolves to 10.0.0.7, which is a private"
            rf" address{HINT}",
            str(caught.value),
        )
        with pytest.raises(
            UnsafeURL, match="meta.example resolves to 169.254.169.254, which is the cloud metadata address"
        ):
            await client.get("https://meta.example/latest/meta-data/")
    assert loopback.asked == []


async def test_each_connection_is_judged_on_the_answer_it_connects_with(origin: Origin, loopback: Loopback) -> None:
    # DNS rebinding: the name answers a public address, then (zero TTL) 127.0.0.1.
    resolver = Resolver({"rebind.example": [[PUBLIC], ["127.0.0.1"]]})
    options: dict[str, Any] = {"allow_private": False, "allowed_origins": (), "timeout": TIMEOUT}
    async with guarded_client(**options, resolver=resolver, network=loopback) as client:
        assert (await client.get("http://rebind.example/v.mp4")).content == b"video"
    async with guarded_client(**options, resolver=resolver, network=loopback) as client:  # a new connection
        with pytest.raises(UnsafeURL, match="rebind.example resolves to 127.0.0.1, which is a loopback address"):
            await client.get("http://rebind.example/v.mp4")
    assert resolver.asked == ["rebind.example", "rebind.example"]
    assert loopback.asked == [(PUBLIC, 80)] and origin.hosts == ["rebind.example"]


async def test_connects_to_the_address_it_checked_and_keeps_the_name_for_host_and_tls(
    origin: Origin, loopback: Loopback
) -> None:
    resolver = Resolver({"cdn.example": [PUBLIC]})
    async with guarded_client(
        allow_private=False, allowed_origins=(), timeout=TIMEOUT, resolver=resolver, network=loopback
    ) as client:
        assert (await client.get("http://cdn.example/v.mp4")).content == b"video"
        with pytest.raises(httpx.ConnectError, match="no TLS server here"):
            await client.get("https://cdn.example/v.mp4")
    assert loopback.asked == [(PUBLIC, 80), (PUBLIC, 443)]  # the checked address, never the name
    assert origin.hosts == ["cdn.example"] and loopback.tls_names == ["cdn.example"]


async def test_tries_each_checked_address_in_turn(origin: Origin, loopback: Loopback) -> None:
    resolver = Resolver({"cdn.example": [PUBLIC, OTHER_PUBLIC], "down.example": [PUBLIC]})
    loopback.down.add(PUBLIC)
    async with guarded_client(
        allow_private=False, allowed_origins=(), timeout=TIMEOUT, resolver=resolver, network=loopback
    ) as client:
        assert (await client.get("http://cdn.example/v.mp4")).content == b"video"
        with pytest.raises(httpx.ConnectError, match=f"Connection refused by {PUBLIC}"):
            await client.get("http://down.example/v.mp4")
    assert loopback.asked == [(PUBLIC, 80), (OTHER_PUBLIC, 80), (PUBLIC, 80)]


async def test_a_name_that_does_not_resolve_fails_to_connect(loopback: Loopback) -> None:
    async with guarded_client(
        allow_private=False, allowed_origins=(), timeout=TIMEOUT, resolver=Resolver({}), network=loopback
    ) as client:
        with pytest.raises(httpx.ConnectError, match="cannot resolve nowhere.example: .*Name or service not known"):
            await client.get("http://nowhere.example/v.mp4")
    assert loopback.asked == []


async def test_resolving_counts_against_the_connect_timeout(loopback: Loopback) -> None:
    async def hangs(host: str, port: int) -> list[IPAddress]:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async with guarded_client(
        allow_private=False,
        allowed_origins=(),
        timeout=httpx.Timeout(5, connect=0.05),
        resolver=hangs,
        network=loopback,
    ) as client:
        with anyio.fail_after(5), pytest.raises(httpx.ConnectTimeout, match="slow.example:80 took more than 0.05s"):
            await client.get("http://slow.example/v.mp4")
    assert loopback.asked == []


async def test_an_allowed_origin_connects_by_its_name(origin: Origin, origin_url: str) -> None:
    port = origin_url.rsplit(":", 1)[1]
    allowed = {origin_url, f"HTTP://LocalHost:{port}/"}  # origins are compared in one spelling
    async with guarded_client(allow_private=False, allowed_origins=allowed, timeout=TIMEOUT) as client:
        assert (await client.get(f"{origin_url}/v.mp4")).content == b"video"
        assert (await client.get(f"http://localhost:{port}/v.mp4")).content == b"video"
        with pytest.raises(UnsafeURL, match="refusing to connect to 127.0.0.2"):  # the same port on another address
            await client.get(f"http://127.0.0.2:{port}/v.mp4")
    assert origin.hosts == [f"127.0.0.1:{port}", f"localhost:{port}"]


async def test_an_allowed_origin_is_matched_as_check_url_matches_it(origin: Origin, loopback: Loopback) -> None:
    allowed = {"http://cdn.example", "http://[::1]:8080"}  # default port implicit, IPv6 in brackets
    async with guarded_client(
        allow_private=False, allowed_origins=allowed, timeout=TIMEOUT, resolver=Resolver({}), network=loopback
    ) as client:
        for url in ("http://cdn.example:80/", "http://cdn.example./", "http://[0:0::1]:8080/"):
            assert (await client.get(url)).content == b"video"
    # Trusted: connected by name, as given, without a look-up (the resolver knows no names and would have failed).
    assert loopback.asked == [("cdn.example", 80), ("cdn.example.", 80), ("0:0::1", 8080)]


async def test_allow_private_lets_every_address_through(origin: Origin, origin_url: str) -> None:
    port = origin_url.rsplit(":", 1)[1]
    async with guarded_client(allow_private=True, allowed_origins=(), timeout=TIMEOUT) as client:
        assert (await client.get(f"http://localhost:{port}/v.mp4")).content == b"video"
    assert origin.hosts == [f"localhost:{port}"]


async def test_a_proxy_in_the_environment_is_not_used(
    origin: Origin, origin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Through a proxy the socket would go to the proxy, and the proxy would choose where the request lands.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    async with guarded_client(allow_private=False, allowed_origins={origin_url}, timeout=TIMEOUT) as client:
        assert (await client.get(f"{origin_url}/v.mp4")).content == b"video"
        with pytest.raises(UnsafeURL):
            await client.get(origin_url.replace("127.0.0.1", "localhost"))
    assert origin.hosts == [origin_url.removeprefix("http://")]


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("169.254.169.254", "169.254.169.254 is the cloud metadata address"),
        ("fd00:ec2::254", "fd00:ec2::254 is the cloud metadata address"),
        ("::ffff:10.0.0.1", "::ffff:10.0.0.1 is a private address in IPv4-mapped form (10.0.0.1)"),
        ("100.64.0.1", "100.64.0.1 is not a globally routable address"),
        ("0.0.0.0", "0.0.0.0 is an unspecified address"),
        ("224.0.0.1", "224.0.0.1 is a multicast address"),
        ("fe80::1", "fe80::1 is a link-local address"),
        ("240.0.0.1", "240.0.0.1 is a private address"),
    ],
)
async def test_refuses_every_kind_of_non_public_address(host: str, reason: str) -> None:
    network = Loopback(port=9)
    with pytest.raises(UnsafeURL) as caught:
        await GuardedBackend(resolver=Resolver({}), network=network).connect_tcp(host, 80)
    assert str(caught.value).startswith(f"refusing to connect to {host}:80: ") and reason in str(caught.value)
    assert network.asked == []
