"""The running service: the store, the HTTP client, the workers, and what the routes share.

Built in the app's lifespan, once the store is open, and reached by the routes as `request.app.state.service`.

Workers are woken in-process when this instance records work for them. On a database other instances share
(PostgreSQL), work recorded by another instance wakes them too: the engine sends a NOTIFY naming the queue in the
transaction that records it, and the engine's listener (`storage.wakeup_listener`) turns each into a wake of that
worker and of `changes` (the dashboard's live pages), with a slow backstop for a notification lost. On a database
this instance owns alone (SQLite) there is nobody else to hear from, and at start-up whatever was claimed and not
finished was claimed by a process that is gone: it is released at once rather than after its lease.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Collection
from contextlib import aclosing, asynccontextmanager

import anyio
import httpx

from receiver.downloads import Downloader
from receiver.faults import Faults
from receiver.followups import FollowUps
from receiver.frames import FrameLinks, frame_dir
from receiver.guarded_http import guarded_client
from receiver.metrics import Metrics
from receiver.notify import Notifier
from receiver.posterqueue import PosterQueue
from receiver.reconcile import Reconciler
from receiver.rules import RuleSet
from receiver.settings import Settings
from receiver.tunnel import CallbackBase, public_url_source
from receiver.workers import Changes, Worker
from storage import StoreProtocol, wakeup_listener
from storage.media import MediaStore
from storage.media.local import LocalMediaStore
from submitter.providers import PROVIDERS
from submitter.tokens import HookSigner
from submitter.worker import Endpoint, Submitter

log = logging.getLogger("reelhook.service")

WAKEUP_BACKSTOP = 60.0  # seconds without a wake-up hint before every worker looks anyway (a lost NOTIFY)


class Service:
    def __init__(
        self,
        settings: Settings,
        store: StoreProtocol,
        http: httpx.AsyncClient,
        rules: RuleSet,
        *,
        media: MediaStore | None = None,
        trusted_origins: Collection[str] = (),
    ) -> None:
        self.settings = settings
        self.store = store
        self.rules = rules
        self.faults = Faults(settings.faults)
        self.signer = HookSigner([str(secret) for secret in settings.secrets], max_age=settings.token_max_age)
        self.http = http
        self.changes = Changes()  # what the dashboard's live pages wait on: set by every wake below
        self.wakeup_backstop = WAKEUP_BACKSTOP
        self.trusted = tuple(trusted_origins)
        self.metrics = metrics = Metrics()  # this app's own registry (receiver/metrics.py)
        self.endpoints = {
            name: Endpoint(
                PROVIDERS[name],
                config.base_url,
                str(config.api_key or "simulator"),
                config.max_in_flight,
                callback_grace=config.callback_grace,
                give_up_after=config.give_up_after,
                simulated=config.simulated,
            )
            for name, config in settings.providers.items()
        }
        self._webhook_secrets = {
            name: str(config.webhook_secret) for name, config in settings.providers.items() if config.webhook_secret
        }
        self._secret_lock = anyio.Lock()
        # Paid jobs ask for their callback base as they leave: the given URL, or a tunnel's (receiver/tunnel.py).
        self.public_url = public_url_source(settings)
        paid = [name for name, config in settings.providers.items() if not config.simulated]
        callback_base = CallbackBase(self.public_url, store, paid).current if paid else None
        self._sender = submitter = Submitter(
            store,
            http,
            self.endpoints,
            signer=self.signer,
            public_url=settings.public_url,
            callback_base=callback_base,
            on_recorded=self._submitted,
            on_outcome=metrics.submission,
            fault=self.faults.trip,
            frame_link=functools.partial(
                FrameLinks([str(secret) for secret in settings.secrets]).link, frame_dir(settings.data_dir)
            ),
        )
        # Downloads follow URLs that providers (or anyone who forges a callback) name: their client checks every
        # address it connects to, not only the name it was given (receiver/guarded_http.py).
        self._download_http = guarded_client(
            allow_private=settings.allow_private_urls,
            allowed_origins=trusted_origins,
            timeout=httpx.Timeout(30.0, connect=10.0),
        )
        media = media if media is not None else LocalMediaStore(settings.media_dir)
        # Posters are made by a worker of their own, so a download's slot never waits on FFmpeg.
        posters = PosterQueue(media, on_offered=lambda: self.posters.wake(), on_made=self.changes.notify)
        self.downloader = downloader = Downloader(
            store,
            self._download_http,
            media,
            max_bytes=settings.max_download_bytes,
            min_rate=settings.download_min_rate,
            deadline=settings.download_deadline,
            per_origin=settings.download_per_origin,
            allow_private=settings.allow_private_urls,
            allowed_origins=trusted_origins,
            on_recorded=self.wake_events,
            posters=posters,
            fault=self.faults.trip,
            metrics=metrics,
        )
        self._followups = followups = FollowUps(
            store,
            rules,
            on_recorded=self.wake_submitter,
            on_notify=self.wake_notifier,
            fault=self.faults.trip,
            metrics=metrics,
        )
        if settings.notify_secret is None:
            raise ValueError("Settings.notify_secret must be set (Settings.with_local_secrets fills it in)")
        notifier = Notifier(store, http, str(settings.notify_secret), metrics=metrics)
        self.submitter = Worker("submitter", submitter.run_once, submitter.next_due, clock=store.clock)
        self.downloads = Worker("downloads", downloader.run_once, downloader.next_due, clock=store.clock)
        self.posters = Worker("posters", posters.run_once)
        self.events = Worker("events", followups.run_once)
        self.notifier = Worker("notifier", notifier.run_once, notifier.next_due, clock=store.clock)
        # Jobs in flight are looked up when late and given up on when lost (receiver/reconcile.py).
        self.reconciler = Reconciler(store, http, self.endpoints, on_recorded=self.wake_all, metrics=metrics)
        self.lookups = Worker("lookups", self.reconciler.run_once, self.reconciler.next_due, clock=store.clock)
        # Woken in this order (`wake_all`), so a callback's follow-up (its event, then the submission it makes) is on
        # its way before the downloads the callback also sets off: a chain waits on the first, nobody on the second.
        self.workers = (self.events, self.submitter, self.notifier, self.downloads, self.posters, self.lookups)
        self._by_queue = {
            "submissions": self.submitter,
            "downloads": self.downloads,
            "events": self.events,
            "notifications": self.notifier,
            "lookups": self.lookups,
        }

    async def wait_idle(self) -> None:
        """Until every worker has drained what it had and waits for news, and no submission is in flight (tests use
        this to start from rest)."""
        for worker in self.workers:
            await worker.wait_idle()
        await self._sender.wait_sent()
        for worker in self.workers:  # what the last requests' outcomes woke
            await worker.wait_idle()

    def replace_rules(self, rules: RuleSet) -> None:
        """Use `rules` from the next event on (the rules file was re-read); what was recorded stays as it is."""
        self.rules = rules
        self._followups.rules = rules

    def wake_submitter(self) -> None:
        self.changes.notify()
        self.submitter.wake()

    def _submitted(self) -> None:
        self.changes.notify()
        self.events.wake()
        self.lookups.wake()  # the new jobs' deadlines may be earlier than the one it sleeps until

    def wake_events(self) -> None:
        self.changes.notify()
        self.events.wake()

    def wake_notifier(self) -> None:
        self.changes.notify()
        self.notifier.wake()

    def hint(self, queue: str) -> None:
        """Another instance (or this one) recorded work on `queue` (a wake-up hint from the database)."""
        self.changes.notify()
        worker = self._by_queue.get(queue)
        if worker is not None:
            worker.wake()
        if queue == "downloads":
            self.downloader.wake()

    def wake_all(self) -> None:
        self.changes.notify()
        for worker in self.workers:
            worker.wake()
        self.downloader.wake()  # a run still downloading from a slow origin takes new videos into its idle slots

    async def webhook_secret(self, provider: str) -> str:
        """The secret a provider signs its callbacks with: configured, or asked of the provider once and kept."""
        async with self._secret_lock:
            if provider not in self._webhook_secrets:
                endpoint = self.endpoints[provider]
                spec = endpoint.provider
                if spec.secret_request is None or spec.parse_secret is None:
                    raise LookupError(f"{provider} signs its callbacks: set REELHOOK_{provider.upper()}_WEBHOOK_SECRET")
                request = spec.secret_request(endpoint.api_key)
                response = await self.http.request(
                    request.method, endpoint.base_url + request.path, headers=dict(request.headers)
                )
                self._webhook_secrets[provider] = spec.parse_secret(response.status_code, response.content)
                log.info(
                    "fetched the %s webhook secret from %s",
                    provider,
                    endpoint.base_url,
                    extra={"event": "webhook_secret.fetched", "provider": provider},
                )
            return self._webhook_secrets[provider]

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Service]:
        """Run the workers for the duration of the block; each drains what was left before a restart."""
        for name, endpoint in self.endpoints.items():
            if endpoint.provider.verify_signature is not None:
                try:
                    await self.webhook_secret(name)
                except Exception as exc:  # callbacks answer 503 (the provider retries) until the fetch succeeds
                    log.error(
                        "cannot get the %s webhook secret yet: %s",
                        name,
                        exc,
                        extra={"event": "webhook_secret.unavailable", "provider": name},
                    )
        # A restart: what the previous run claimed and never finished is dead. Alone on the database, that is every
        # claim; on a shared one, only those this instance made (its claimant), since the others' are live.
        if not self.settings.shared_database or self.store.claimant:
            released = await self.store.release_claims(self.store.claimant if self.settings.shared_database else None)
            if released:
                log.info(
                    "released %d claims left by the previous run",
                    released,
                    extra={"event": "claims.released", "count": released},
                )
        async with (
            self._download_http,
            aclosing(self.public_url),
            self._sender.sending(),
            anyio.create_task_group() as tg,
        ):
            listen = wakeup_listener(self.settings.database, self.hint, backstop=self.wakeup_backstop)
            if listen is not None:
                await tg.start(listen)  # listening before the workers start: nothing recorded from now is missed
            for worker in self.workers:
                tg.start_soon(worker.run)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()
