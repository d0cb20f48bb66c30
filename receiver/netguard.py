"""Which URLs reelhook will fetch.

Media URLs come from provider callbacks, and a callback is only as trustworthy as the provider behind it: a URL
pointing at 127.0.0.1, the LAN or the cloud metadata service would turn the downloader into a way to read inside
the host's network (SSRF). So before every request, and again for every redirect, the host is resolved and the
URL refused if *any* address it resolves to is not a public one. `allowed_origins` lets a known local peer through
(the built-in simulator, a test CDN); `allow_private` (REELHOOK_ALLOW_PRIVATE_URLS=1) lets everything through.

An IPv6 address can carry an IPv4 one (IPv4-mapped and -compatible, 6to4, Teredo, NAT64, SIIT), and whatever
relays or translates it connects to that IPv4 address, so each is also judged by the address it carries:
`2002:7f00:1::1` is 127.0.0.1 by way of a 6to4 relay, though Python 3.11 calls it global.

This checks the name, then the client resolves it again to connect. A DNS server that answers differently the
second time (DNS rebinding) would get past this check alone, so it is only the early one, the one with the clear
message: `receiver.guarded_http` applies the same rules at connect time, to the very address it then connects to.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection
from urllib.parse import urlsplit

import anyio

_DEFAULT_PORTS = {"http": 80, "https": 443}
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
_HINT = "set REELHOOK_ALLOW_PRIVATE_URLS=1 to allow"
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: local use, never global
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # RFC 2765 (SIIT)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeURL(Exception):
    """A URL reelhook refuses to fetch; the message says which and why."""


def origin(url: str) -> str:
    """`scheme://host:port`, lower-cased, with the default port made explicit: the form `allowed_origins` match."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        raise UnsafeURL(f"refusing {url}: the port is not a number from 0 to 65535") from None
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


async def check_url(url: str, *, allow_private: bool = False, allowed_origins: Collection[str] = ()) -> None:
    """Raise UnsafeURL unless `url` is http(s) and every address its host resolves to is public."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in _DEFAULT_PORTS:
        raise UnsafeURL(f"refusing {url}: only http and https URLs are fetched")
    host = parts.hostname
    if not host:
        raise UnsafeURL(f"refusing {url}: it names no host")
    here = origin(url)
    if allow_private or here in {origin(allowed) for allowed in allowed_origins}:
        return
    try:
        addresses = await resolve(host, int(here.rsplit(":", 1)[1]))
    except OSError as exc:
        raise UnsafeURL(f"refusing {url}: cannot resolve {host} ({exc})") from None
    refusal = refusal_for(host, addresses)
    if refusal is not None:
        raise UnsafeURL(f"refusing {url}: {refusal}")


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` stands for: itself when it is a literal address, else what the resolver answers.

    Raises OSError (socket.gaierror) when the name does not resolve.
    """
    literal = _literal(host)
    if literal is not None:
        return [literal]
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError as exc:  # a name IDNA cannot encode
        raise socket.gaierror(socket.EAI_NONAME, f"not a valid host name ({exc})") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, "no addresses")
    return addresses


def refusal_for(host: str, addresses: Collection[IPAddress]) -> str | None:
    """Why `host`, which stands for `addresses`, may not be fetched; None when every one of them is public."""
    for address in addresses:
        reason = why_not_public(address)
        if reason is not None:
            subject = host if _literal(host) == address else f"{host} resolves to {address}, which"
            return f"{subject} is {reason} ({_HINT})"
    return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def why_not_public(address: IPAddress) -> str | None:
    """What kind of non-public address `address` is (loopback, private, metadata…); None for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        for form, role, embedded in _embedded_ipv4(address):
            reason = why_not_public(embedded)
            if reason is not None:
                return f"{reason} in {form} form ({role}{embedded})"
        if address.ipv4_mapped is not None:
            return None  # ::ffff:8.8.8.8 is 8.8.8.8 (and Python before 3.11.10 judges the IPv6 form on its own)
        if address in _NAT64_LOCAL:
            return f"a local-use NAT64 address ({_NAT64_LOCAL}), not globally routable"
    if address in _METADATA:
        return "the cloud metadata address"
    checks = (
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        # Carrier-grade NAT (100.64.0.0/10), documentation ranges and the like: not private, not global either.
        (not address.is_global, "not a globally routable address"),
    )
    return next((reason for failed, reason in checks if failed), None)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[tuple[str, str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries, as (form, role, address): what a relay or translator on the
    way would connect to. Python judges most of these forms by their IPv6 prefix alone (3.11 calls 6to4 global)."""
    if address.ipv4_mapped is not None:
        return [("IPv4-mapped", "", address.ipv4_mapped)]
    if address.sixtofour is not None:
        return [("6to4", "", address.sixtofour)]
    if address.teredo is not None:  # 2001::/32: the server in clear, the client's bits inverted (Python undoes it)
        server, client = address.teredo
        return [("Teredo", "server ", server), ("Teredo", "client ", client)]
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _NAT64_WELL_KNOWN or address in _NAT64_LOCAL:  # the /96 layout, the one DNS64 hands out
        return [("NAT64", "", low32)]
    if address in _IPV4_TRANSLATED:
        return [("IPv4-translated", "", low32)]
    if int(address) >> 32 == 0 and int(address) > 1:  # ::a.b.c.d, deprecated, but a stack may still route it
        return [("IPv4-compatible", "", low32)]
    return []
