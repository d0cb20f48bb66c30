"""The running service: the store, the HTTP client, the workers, and what the routes share.

Built in the app's lifespan, once the store is open, and reached by the routes as `request.app.state.service`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager

import anyio
import httpx

from receiver.downloads import Downloader
from receiver.faults import Faults
from receiver.followups import FollowUps
from receiver.rules import RuleSet
from receiver.settings import Settings
from receiver.workers import Worker
from storage import Store
from submitter.providers import PROVIDERS
from submitter.tokens import HookSigner
from submitter.worker import Endpoint, Submitter


class Service:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        http: httpx.AsyncClient,
        rules: RuleSet,
        *,
        trusted_origins: Collection[str] = (),
    ) -> None:
        self.settings = settings
        self.store = store
        self.rules = rules
        self.faults = Faults(settings.faults)
        self.signer = HookSigner([str(secret) for secret in settings.secrets], max_age=settings.token_max_age)
        endpoints = {
            name: Endpoint(PROVIDERS[name], config.base_url, str(config.api_key or "simulator"))
            for name, config in settings.providers.items()
        }
        submitter = Submitter(
            store, http, endpoints, signer=self.signer, public_url=settings.public_url, on_recorded=self.wake_events
        )
        downloader = Downloader(
            store,
            http,
            settings.media_dir,
            allow_private=settings.allow_private_urls,
            allowed_origins=trusted_origins,
            on_recorded=self.wake_events,
        )
        followups = FollowUps(store, rules, on_recorded=self.wake_submitter)
        self.submitter = Worker("submitter", submitter.run_once, submitter.next_due)
        self.downloads = Worker("downloads", downloader.run_once, downloader.next_due)
        self.events = Worker("events", followups.run_once)

    def wake_submitter(self) -> None:
        self.submitter.wake()

    def wake_events(self) -> None:
        self.events.wake()

    def wake_all(self) -> None:
        for worker in (self.submitter, self.downloads, self.events):
            worker.wake()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Service]:
        """Run the workers for the duration of the block; each drains what was left before a restart."""
        async with anyio.create_task_group() as tg:
            for worker in (self.submitter, self.downloads, self.events):
                tg.start_soon(worker.run)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()
