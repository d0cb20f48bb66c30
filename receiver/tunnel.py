"""Where providers call us back: a fixed `REELHOOK_PUBLIC_URL`, or the https URL of a tunnel agent running beside us.

A free ngrok or cloudflared quick tunnel gets a new random URL each time its agent starts, and a job's callback URL
is fixed when the job leaves. So with `REELHOOK_PUBLIC_URL=auto` (the default once a real provider has a key) the
URL is not a setting but a question, asked of the agent's local API when a paid job is about to leave:

- ngrok: `GET <REELHOOK_NGROK_API>/api/endpoints` (agents since endpoints replaced tunnels), else the older
  `/api/tunnels`; an https one whose upstream is our port (or the only https one);
- cloudflared: `GET http://<addr>/quicktunnel` on its metrics server, which answers
  `{"hostname":"….trycloudflare.com"}` (empty for a named tunnel), at each of `REELHOOK_CLOUDFLARED_METRICS`
  (by default 127.0.0.1:20241-20245, the ports cloudflared tries in turn).

Answers, found or not, are kept for a few seconds so that a burst of submissions asks once. While nothing is found,
paid jobs wait queued (submitter/worker.py) and the status says where we looked.

`CallbackBase` remembers the base that paid jobs last left with (the store's `public_url` flag, across restarts).
When the agent's URL changes, jobs still in flight named the old one, and their callbacks are lost: they are noted,
never resent (each was paid for), and their deadline lookups (receiver/reconcile.py) settle them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx

from receiver.settings import LOCAL_HOSTS, Settings
from storage import StoreProtocol
from submitter.jsonbody import JSONBodyError, parse_json

log = logging.getLogger("reelhook.tunnel")

TIMEOUT = httpx.Timeout(1.0)  # the agents answer on loopback at once, or are not there
TTL = 2.0  # seconds an answer (found or not) is reused: a burst of submissions asks once
AGENT_BODY = 1024 * 1024  # an agent's answer past this is not an agent's answer


@dataclass(frozen=True)
class Found:
    url: str | None
    source: str  # where it was found, or where nothing was


class PublicUrl:
    """The public base URL: `fixed`, or discovered from a local ngrok or cloudflared agent."""

    def __init__(
        self,
        *,
        fixed: str | None = None,
        ngrok_api: str = "http://127.0.0.1:4040",
        cloudflared_metrics: Sequence[str] = (),
        port: int | None = None,
        web_ports_only: bool = False,
        ttl: float = TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fixed = fixed
        self._ngrok = ngrok_api.rstrip("/")
        self._cloudflared = tuple(cloudflared_metrics)
        self._port = port  # ours: the tunnel to pick when an agent runs several
        self._web_ports_only = web_ports_only  # APIMart calls back on ports 80 and 443 only
        self._ttl = ttl
        self._clock = clock
        self._last: Found | None = None
        self._last_at = 0.0
        self._http: httpx.AsyncClient | None = None
        self._asking = anyio.Lock()  # the status page and the submitter at once ask the agent once

    @property
    def where(self) -> str:
        """Where discovery looks, for people."""
        if self.fixed is not None:
            return "REELHOOK_PUBLIC_URL"
        return f"ngrok at {self._ngrok} or cloudflared at {', '.join(self._cloudflared) or 'no address'}"

    @property
    def waiting(self) -> str | None:
        """What the status says while no public URL is known; None once one is (or when it is fixed)."""
        if self.fixed is not None or self._last is None or self._last.url is not None:
            return None
        return f"waiting for a public URL (no ngrok/cloudflared tunnel found at {self._last.source})"

    async def find(self) -> Found:
        """The URL and where it came from, asked of the agents at most once per TTL."""
        if self.fixed is not None:
            return Found(self.fixed, "REELHOOK_PUBLIC_URL")
        async with self._asking:
            if self._last is None or self._clock() - self._last_at >= self._ttl:
                self._last, self._last_at = await self._discover(), self._clock()
            return self._last

    async def get(self) -> str | None:
        return (await self.find()).url

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _discover(self) -> Found:
        if self._http is None:  # its own: the loopback agents are never reached through a proxy from the env
            self._http = httpx.AsyncClient(timeout=TIMEOUT, trust_env=False)
        found = await self._from_ngrok(self._http) or await self._from_cloudflared(self._http)
        return found or Found(None, self.where)

    async def _from_ngrok(self, http: httpx.AsyncClient) -> Found | None:
        candidates: list[tuple[str, int | None]] = []
        endpoints = await _get_json(http, f"{self._ngrok}/api/endpoints")
        for endpoint in _objects(endpoints, "endpoints"):
            upstream = endpoint.get("upstream")
            addr = upstream.get("url") if isinstance(upstream, dict) else None
            candidates.append((str(endpoint.get("url")), _port_of(addr)))
        if not candidates:
            for tunnel in _objects(await _get_json(http, f"{self._ngrok}/api/tunnels"), "tunnels"):
                config = tunnel.get("config")
                addr = config.get("addr") if isinstance(config, dict) else None
                candidates.append((str(tunnel.get("public_url")), _port_of(addr)))
        url = self._pick(candidates, f"ngrok at {self._ngrok}")
        return None if url is None else Found(url, f"ngrok's agent API at {self._ngrok}")

    async def _from_cloudflared(self, http: httpx.AsyncClient) -> Found | None:
        for address in self._cloudflared:
            answer = await _get_json(http, f"http://{address}/quicktunnel")
            hostname = answer.get("hostname") if isinstance(answer, dict) else None
            if isinstance(hostname, str) and hostname:
                url = self._pick([(f"https://{hostname}", None)], f"cloudflared at {address}")
                if url is not None:
                    return Found(url, f"cloudflared's quick tunnel at {address}")
        return None

    def _pick(self, candidates: list[tuple[str, int | None]], agent: str) -> str | None:
        usable = [(url.rstrip("/"), port) for url, port in candidates if self._usable(url, agent)]
        ours = [url for url, port in usable if port is not None and port == self._port]
        if ours:
            return ours[0]
        if len(usable) == 1:  # the only https tunnel: what else would it be for
            return usable[0][0]
        if usable:
            log.warning("%s runs %d https tunnels and none to port %s: not guessing", agent, len(usable), self._port)
        return None

    def _usable(self, url: str, agent: str) -> bool:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            return False
        if self._web_ports_only and parts.port not in (None, 80, 443):
            log.warning("%s offers %s: APIMart only calls back on ports 80 and 443; not used", agent, url)
            return False
        return True


def public_url_source(settings: Settings) -> PublicUrl:
    """The source `settings` ask for: REELHOOK_PUBLIC_URL as given, or the tunnel agents' (port: ours, the one
    `settings.public_url` names)."""
    if not settings.discover_public_url:
        return PublicUrl(fixed=settings.public_url)
    apimart = settings.providers.get("apimart")
    return PublicUrl(
        ngrok_api=settings.ngrok_api,
        cloudflared_metrics=settings.cloudflared_metrics,
        port=urlsplit(settings.public_url).port,
        web_ports_only=apimart is not None and not apimart.simulated and _remote(apimart.base_url),
    )


def _remote(url: str) -> bool:
    return urlsplit(url).hostname not in LOCAL_HOSTS


class CallbackBase:
    """The base URL paid jobs leave with, asked right before they do; a change of it is logged and noted."""

    def __init__(self, source: PublicUrl, store: StoreProtocol, providers: Collection[str]) -> None:
        self._source = source
        self._store = store
        self._providers = tuple(providers)  # the paid ones: simulators call back on the local URL
        self._recorded: str | None = None

    async def current(self) -> str | None:
        url = await self._source.get()
        if url is not None and url != self._recorded:
            old, noted = await self._store.use_public_url(url, providers=self._providers, note=_note(url))
            if old is not None:
                log.warning(
                    "PUBLIC URL CHANGED from %s to %s: %d job(s) in flight named the old one in their callback URL;"
                    " they are not resent, their deadline lookups settle them",
                    old, url, len(noted),
                )  # fmt: skip
            self._recorded = url
        return url


def _note(new: str) -> Callable[[str], str]:
    def note(old: str) -> str:
        # The path's token is a credential: the note names the base only.
        return (
            f"callback URL {old}/hooks/… is no longer reachable (tunnel moved to {new}); it will be settled by lookup"
        )

    return note


async def _get_json(http: httpx.AsyncClient, url: str) -> Any:
    try:
        async with http.stream("GET", url) as response:
            if response.status_code != 200:
                return None
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > AGENT_BODY:
                    return None
    except httpx.HTTPError:
        return None
    try:
        return parse_json(body, what="agent answer", surrogates="replace")
    except JSONBodyError:
        return None


def _objects(answer: Any, key: str) -> list[dict[str, Any]]:
    items = answer.get(key) if isinstance(answer, dict) else None
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _port_of(addr: object) -> int | None:
    """The local port an agent forwards to: `8000`, `localhost:8000`, `http://localhost:8000`, `https://`…"""
    if isinstance(addr, int):
        return addr
    if not isinstance(addr, str) or not addr:
        return None
    if addr.isdigit():
        return int(addr)
    try:
        parts = urlsplit(addr if "://" in addr else f"//{addr}")
        port = parts.port
    except ValueError:
        return None
    if port is not None:
        return port
    return {"https": 443, "http": 80, "": 80}.get(parts.scheme)
