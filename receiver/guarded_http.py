"""An HTTP client for media downloads that cannot be pointed at the host's own network, whatever DNS answers.

`netguard.check_url` judges a URL by what its name resolves to *before* the request, and the HTTP client then
resolves the name again to connect. A DNS server that answers a public address the first time and 127.0.0.1 the
second (DNS rebinding, with a zero TTL) slips between the two. So the client built here resolves the name itself, in
the one place that opens sockets, httpcore's network backend: it refuses the connection if any address is not a
public one (netguard's rules), then connects to an address it checked, never to the name. Only the socket is
pinned: TLS still verifies the certificate against the name (SNI), and the Host header still carries it.

Redirects need nothing more: a hop to another host opens another connection, which passes through here, and a
pooled connection stays pinned to the address checked when it was opened.

Trusted origins (the simulators, a test CDN) and `allow_private` pass as they do in `check_url`. A socket has a host
and a port but no scheme, so a trusted origin lets its host and port through for either scheme; the scheme never
changes which address a socket reaches.

The environment has no say. httpx ignores proxy variables for a client given its own transport, which matters: through
a proxy the socket goes to the proxy, and the proxy, not this check, would choose where the request lands. And
`trust_env=False` keeps ~/.netrc credentials from going to whatever host a callback names.
"""

from __future__ import annotations

import ipaddress
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from urllib.parse import urlsplit

import anyio
import httpcore
import httpx

from receiver.netguard import IPAddress, UnsafeURL, origin, refusal_for, resolve

Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]
SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]

LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's own defaults
# Each guarded client's rules, for `fetching`, whose reader threads connect outside httpx by the same rules.
_GUARDS: weakref.WeakKeyDictionary[httpx.AsyncClient, AddressGuard] = weakref.WeakKeyDictionary()


def guarded_client(
    *,
    allow_private: bool,
    allowed_origins: Collection[str],
    timeout: httpx.Timeout,
    resolver: Resolver = resolve,
    network: httpcore.AsyncNetworkBackend | None = None,
) -> httpx.AsyncClient:
    """An AsyncClient whose every connection goes only to addresses that pass netguard's rules when it is opened.

    `resolver` and `network` (the backend that opens the checked sockets) are there for tests.
    """
    backend = GuardedBackend(
        allow_private=allow_private, allowed_origins=allowed_origins, resolver=resolver, network=network
    )
    client = httpx.AsyncClient(
        transport=GuardedTransport(backend), timeout=timeout, follow_redirects=False, trust_env=False
    )
    _GUARDS[client] = backend.guard
    return client


def guard_of(client: httpx.AsyncClient) -> AddressGuard | None:
    """The rules `client` connects by, if `guarded_client` built it."""
    return _GUARDS.get(client)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """`httpx.AsyncHTTPTransport` over a network backend of our choosing.

    httpx (0.28) offers no public way to hand its transport a network backend, only httpcore's pool does; so this
    builds the transport as usual and swaps its pool for one on `backend`, with the settings httpx would have used.
    """

    def __init__(self, backend: httpcore.AsyncNetworkBackend, *, limits: httpx.Limits = LIMITS) -> None:
        super().__init__(limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


class AddressGuard:
    """netguard's rules for one socket: which addresses a host and port may be connected to, resolved once, here.

    Shared by `GuardedBackend` (httpx) and `fetching` (the download reader): both connect only to what this returns.
    """

    def __init__(
        self, *, allow_private: bool = False, allowed_origins: Collection[str] = (), resolver: Resolver = resolve
    ) -> None:
        self._allow_private = allow_private
        self._trusted = {_socket_address(allowed) for allowed in allowed_origins}
        self._resolve = resolver

    def trusts(self, host: str, port: int) -> bool:
        """True when `host:port` may be connected to by name, unchecked (a trusted origin, or allow_private)."""
        return self._allow_private or (_normal_host(host), port) in self._trusted

    async def addresses(self, host: str, port: int) -> list[IPAddress]:
        """The addresses to connect to; UnsafeURL if any is not public, OSError if the name does not resolve."""
        literal = _literal(host)
        addresses = [literal] if literal is not None else list(await self._resolve(host, port))
        refusal = refusal_for(host, addresses)
        if refusal is not None:
            raise UnsafeURL(f"refusing to connect to {host}:{port}: {refusal}")
        return addresses


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves each host itself, refuses it unless every address is public, and connects to a checked address."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        allowed_origins: Collection[str] = (),
        resolver: Resolver = resolve,
        network: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.guard = AddressGuard(allow_private=allow_private, allowed_origins=allowed_origins, resolver=resolver)
        self._network = network if network is not None else httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if self.guard.trusts(host, port):
            return await self._network.connect_tcp(
                host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
            )
        try:
            with anyio.fail_after(timeout):  # resolving and every connect attempt share the connect timeout
                try:
                    addresses = await self.guard.addresses(host, port)
                except OSError as exc:
                    raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
                failure: httpcore.ConnectError | None = None
                for address in addresses:
                    try:
                        return await self._network.connect_tcp(
                            str(address), port, local_address=local_address, socket_options=socket_options
                        )
                    except httpcore.ConnectError as exc:  # try the next address, as a resolving connect would
                        failure = exc
                raise failure or httpcore.ConnectError(f"cannot resolve {host}: no addresses")
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"connecting to {host}:{port} took more than {timeout}s") from None

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SocketOption] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise UnsafeURL(f"refusing to connect to the unix socket {path}: downloads go over TCP only")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


def _socket_address(url: str) -> tuple[str, int]:
    """The host and port an origin names, as `connect_tcp` will be handed them."""
    parts = urlsplit(origin(url))
    return _normal_host(parts.hostname or ""), parts.port or 0


def _normal_host(host: str) -> str:
    """One spelling per host (httpx has already lower-cased it): no trailing dot or brackets, IPv6 compressed."""
    host = host.strip("[]").rstrip(".")
    literal = _literal(host)
    return host if literal is None else str(literal)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
