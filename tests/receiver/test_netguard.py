"""check_url, resolve and refusal_for on literal addresses and `localhost` only: nothing here leaves the machine."""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path

import pytest

from receiver.netguard import UnsafeURL, check_url, origin, refusal_for, resolve, why_not_public

pytestmark = pytest.mark.anyio

HINT = "REELHOOK_ALLOW_PRIVATE_URLS=1"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/x.mp4", "127.0.0.1 is a loopback address"),
        ("http://127.8.9.10:8080/x.mp4", "loopback"),
        ("https://10.0.0.1/x.mp4", "10.0.0.1 is a private address"),
        ("http://172.16.5.4/x.mp4", "private"),
        ("http://192.168.1.1/x.mp4", "private"),
        ("http://169.254.10.20/x.mp4", "link-local"),
        ("http://169.254.169.254/latest/meta-data/", "the cloud metadata address"),
        ("http://0.0.0.0/x.mp4", "unspecified"),
        ("http://224.0.0.1/x.mp4", "multicast"),
        ("http://100.64.0.1/x.mp4", "not a globally routable address"),
        ("http://[::1]/x.mp4", "::1 is a loopback address"),
        ("http://[::]/x.mp4", "unspecified"),
        ("http://[fe80::1]/x.mp4", "link-local"),
        ("http://[fc00::1]/x.mp4", "private"),
        ("http://[fd00:ec2::254]/x.mp4", "the cloud metadata address"),
        ("http://[ff02::1]/x.mp4", "multicast"),
        ("http://[::ffff:127.0.0.1]/x.mp4", "loopback address in IPv4-mapped form (127.0.0.1)"),
        ("http://[::ffff:10.0.0.1]/x.mp4", "private address in IPv4-mapped form (10.0.0.1)"),
        ("http://[::ffff:169.254.169.254]/x.mp4", "the cloud metadata address in IPv4-mapped form"),
        ("http://localhost:9/x.mp4", "localhost resolves to "),
    ],
)
async def test_refuses_addresses_that_are_not_public(url: str, reason: str) -> None:
    with pytest.raises(UnsafeURL) as caught:
        await check_url(url)
    message = str(caught.value)
    assert message.startswith(f"refusing {url}: ")
    assert reason in message and HINT in message


async def test_localhost_names_each_address_it_resolves_to() -> None:
    with pytest.raises(UnsafeURL, match=r"localhost resolves to (127\.0\.0\.1|::1), which is a loopback address"):
        await check_url("http://localhost/x.mp4")


@pytest.mark.parametrize(
    "url", ["http://93.184.216.34/x.mp4", "https://93.184.216.34:8443/x.mp4", "https://[2606:2800:220:1::1946]/x"]
)
async def test_allows_public_literal_addresses_without_dns(url: str) -> None:
    await check_url(url)  # raises UnsafeURL otherwise; a literal address is never looked up


@pytest.mark.parametrize(
    "url", ["ftp://93.184.216.34/x.mp4", "file:///etc/passwd", "gopher://93.184.216.34/", "//93.184.216.34/x"]
)
@pytest.mark.parametrize("allow_private", [False, True])
async def test_refuses_other_schemes_even_when_private_urls_are_allowed(url: str, allow_private: bool) -> None:
    with pytest.raises(UnsafeURL, match="only http and https"):
        await check_url(url, allow_private=allow_private)


async def test_refuses_a_url_without_a_host() -> None:
    with pytest.raises(UnsafeURL, match="names no host"):
        await check_url("http:///x.mp4")


async def test_refuses_a_host_that_does_not_resolve() -> None:
    # A 70-character label is not a valid DNS name: the resolver gives up without sending a query.
    host = "a" * 70 + ".invalid"
    with pytest.raises(UnsafeURL, match=f"cannot resolve {host}"):
        await check_url(f"http://{host}/x.mp4")


async def test_allow_private_lets_any_http_address_through() -> None:
    for url in ("http://127.0.0.1/x", "http://169.254.169.254/", "http://[::1]:8080/x", "http://localhost/x"):
        await check_url(url, allow_private=True)


async def test_allowed_origins_let_exactly_that_origin_through() -> None:
    allowed = {"http://127.0.0.1:8080"}
    await check_url("http://127.0.0.1:8080/videos/0.mp4?sig=abc", allowed_origins=allowed)
    await check_url("HTTP://127.0.0.1:8080/x", allowed_origins={"http://127.0.0.1:8080/"})
    for other in ("http://127.0.0.1:8081/x", "https://127.0.0.1:8080/x", "http://localhost:8080/x"):
        with pytest.raises(UnsafeURL):
            await check_url(other, allowed_origins=allowed)


async def test_default_ports_are_explicit_on_both_sides() -> None:
    await check_url("http://127.0.0.1:80/x", allowed_origins={"http://127.0.0.1"})
    await check_url("https://[::1]/x", allowed_origins={"https://[::1]:443"})
    with pytest.raises(UnsafeURL):
        await check_url("http://127.0.0.1:443/x", allowed_origins={"https://127.0.0.1"})


def test_origin_normalises_scheme_host_and_port() -> None:
    assert origin("HTTPS://Example.COM/a/b?c") == "https://example.com:443"
    assert origin("http://example.com:8080") == "http://example.com:8080"
    assert origin("http://[::1]/") == "http://[::1]:80"
    with pytest.raises(UnsafeURL, match="port"):
        origin("http://example.com:99999/")


async def test_resolve_answers_a_literal_address_itself_and_raises_oserror_for_a_bad_name() -> None:
    assert await resolve("93.184.216.34", 80) == [ipaddress.ip_address("93.184.216.34")]
    assert await resolve("[2606:2800:220:1::1946]", 443) == [ipaddress.ip_address("2606:2800:220:1::1946")]
    assert set(await resolve("localhost", 80)) <= {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    with pytest.raises(socket.gaierror):
        await resolve("a" * 70 + ".invalid", 80)


def test_refusal_for_names_the_first_address_that_is_not_public() -> None:
    public, private = ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.7")
    assert refusal_for("cdn.example", [public]) is None
    assert refusal_for("cdn.example", [public, private]) == (
        f"cdn.example resolves to 10.0.0.7, which is a private address (set {HINT} to allow)"
    )
    assert refusal_for("10.0.0.7", [private]) == f"10.0.0.7 is a private address (set {HINT} to allow)"


def teredo(server: str, client: str) -> str:
    """The Teredo address (2001::/32) for a server and a client; the client's bits are stored inverted."""
    value = (
        (0x2001_0000 << 96)
        | (int(ipaddress.IPv4Address(server)) << 64)
        | (~int(ipaddress.IPv4Address(client)) & 0xFFFFFFFF)
    )
    return str(ipaddress.IPv6Address(value))


EMBEDDED = {
    "6to4-loopback": ("2002:7f00:1::1", "a loopback address in 6to4 form (127.0.0.1)"),
    "6to4-metadata": ("2002:a9fe:a9fe::1", "the cloud metadata address in 6to4 form (169.254.169.254)"),
    "6to4-private": ("2002:a00:1::1", "a private address in 6to4 form (10.0.0.1)"),
    "teredo-client": (teredo("65.54.227.120", "127.0.0.1"), "a loopback address in Teredo form (client 127.0.0.1)"),
    "teredo-server": (teredo("10.1.2.3", "8.8.8.8"), "a private address in Teredo form (server 10.1.2.3)"),
    "nat64": ("64:ff9b::7f00:1", "a loopback address in NAT64 form (127.0.0.1)"),
    "nat64-metadata": ("64:ff9b::a9fe:a9fe", "the cloud metadata address in NAT64 form (169.254.169.254)"),
    "nat64-local": ("64:ff9b:1::a00:1", "a private address in NAT64 form (10.0.0.1)"),
    "nat64-local-public": ("64:ff9b:1::808:808", "a local-use NAT64 address (64:ff9b:1::/48), not globally routable"),
    "compatible": ("::7f00:1", "a loopback address in IPv4-compatible form (127.0.0.1)"),
    "compatible-private": ("::c0a8:101", "a private address in IPv4-compatible form (192.168.1.1)"),
    "compatible-public": ("::808:808", "a reserved address"),
    "mapped": ("::ffff:7f00:1", "a loopback address in IPv4-mapped form (127.0.0.1)"),
    "translated": ("::ffff:0:a00:1", "a private address in IPv4-translated form (10.0.0.1)"),
}


@pytest.mark.parametrize(("address", "reason"), EMBEDDED.values(), ids=EMBEDDED.keys())
async def test_ipv6_forms_that_embed_an_ipv4_address_are_judged_by_it(address: str, reason: str) -> None:
    assert why_not_public(ipaddress.IPv6Address(address)) == reason
    with pytest.raises(UnsafeURL, match=re.escape(f"{address} is {reason} (set {HINT}")):
        await check_url(f"http://[{address}]/x.mp4")


@pytest.mark.parametrize(
    "address",
    ["2002:808:808::1", teredo("65.54.227.120", "8.8.8.8"), "::ffff:808:808", "2606:2800:220:1::1946"],
)
def test_forms_embedding_a_public_ipv4_address_are_left_to_the_usual_checks(address: str) -> None:
    # 6to4 and IPv4-mapped forms of a public address are public; Teredo (2001::/32) is refused as a whole.
    expected = "a private address" if address.startswith("2001:0:") else None
    assert why_not_public(ipaddress.IPv6Address(address)) == expected


def test_the_readmes_list_of_refused_ranges_matches_the_code() -> None:
    """Every range README.md lists under "Addresses downloads refuse" is refused, at its first and last address."""
    readme = Path(__file__).resolve().parents[2] / "README.md"
    section = readme.read_text().split("### Addresses downloads refuse", 1)[1].split("\n### ", 1)[0]
    ranges = re.findall(r"`([0-9a-f:.]+/\d+|[0-9a-f:.]*[.:][0-9a-f:.]+)`", section)
    assert len(ranges) >= 20, ranges
    for text in ranges:
        network = ipaddress.ip_network(text, strict=False)
        for address in {network[0], network[-1]}:
            assert why_not_public(address) is not None, f"README says {text} is refused, but {address} passes"
