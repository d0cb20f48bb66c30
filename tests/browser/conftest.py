"""Browser fixtures: Debian's chromium driven by Playwright's sync API, reelhook served beside it.

The tests here are plain (sync) functions. Playwright's sync API keeps an asyncio loop marked running on the thread
that started it for as long as it lives, and an anyio test on that thread then fails (`asyncio.run() cannot be
called from a running event loop`; tried). So:
- the browser lives for this package, not the session: it starts with the first browser test and stops before
  tests/e2e and the rest run (pytest runs a folder's tests together);
- everything async (reelhook, its simulators, any small app a test serves) runs in an anyio blocking portal, an
  asyncio loop on a thread of its own, and the test calls into it with `reelhook.call(...)` / `portal.call(...)`.

Without playwright or /usr/bin/chromium every test here is skipped, and the reason says how to enable them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from starlette.types import ASGIApp

from receiver.serving import running
from tests.browser.support import CHROMIUM, CHROMIUM_ARGS, missing
from tests.e2e.conftest import API_TOKEN, Deployment, deployment, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

T = TypeVar("T")
HERE = Path(__file__).parent
TIMEOUT_MS = 10_000  # every Playwright wait (actions and expect) gives up after this: a test takes seconds, not 60 s


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    why = missing()
    if why is None:
        return
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One headless chromium for every browser test."""
    if why := missing():
        pytest.skip(why)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class PageMaker(Protocol):
    def __call__(self, base_url: str | None = None, *, token: str | None = None) -> Page: ...


@pytest.fixture
def new_page(browser: Browser) -> Iterator[PageMaker]:
    """`new_page(base_url, token=...)`: a page in a fresh context (own cookies); `token` sends
    `Authorization: Bearer <token>` with every request the page makes."""
    with ExitStack() as stack:

        def make(base_url: str | None = None, *, token: str | None = None) -> Page:
            headers = {"Authorization": f"Bearer {token}"} if token else None
            context = browser.new_context(base_url=base_url, extra_http_headers=headers)
            stack.callback(context.close)
            context.set_default_timeout(TIMEOUT_MS)
            return context.new_page()

        yield make


@pytest.fixture
def portal() -> Iterator[BlockingPortal]:
    """An asyncio loop on its own thread, for everything async a browser test runs."""
    with start_blocking_portal("asyncio") as started:
        yield started


@pytest.fixture
def serve(portal: BlockingPortal) -> Iterator[Callable[[ASGIApp], str]]:
    """`serve(app)`: the app on real uvicorn on 127.0.0.1 until the test ends; returns its base URL."""
    with ExitStack() as stack:
        yield lambda app: stack.enter_context(portal.wrap_async_context_manager(running(app)))


@dataclass
class LiveReelhook:
    """tests/e2e's deployment (reelhook and every provider's simulator on real uvicorn), run on the portal."""

    deployment: Deployment
    portal: BlockingPortal

    @property
    def url(self) -> str:
        return self.deployment.url

    def call(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run one of the deployment's coroutines (or any) on its loop and return the result."""
        return self.portal.call(partial(func, *args, **kwargs))

    def submit(self, prompt: str = "a lighthouse at dusk", **extra: Any) -> dict[str, Any]:
        return self.call(self.deployment.submit, prompt, **extra)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.call(self.deployment.job, job_id)

    def wait_for_job(self, job_id: str, condition: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict:
        """The job once `condition(job)` holds (polled through the API)."""
        seen: dict[str, Any] = {}

        async def holds() -> bool:
            seen.update(await self.deployment.job(job_id))
            return condition(seen)

        self.call(wait_until, holds, timeout=timeout)
        return seen

    def wait_for_children(
        self, job_id: str, condition: Callable[[dict[str, Any]], bool] = lambda job: True, timeout: float = 10
    ) -> list[dict[str, Any]]:
        """The job's follow-ups once there is at least one and each satisfies `condition`."""
        children: list[dict[str, Any]] = []

        async def ready() -> bool:
            children[:] = [job for job in await self.deployment.jobs() if job["parent_id"] == job_id]
            return bool(children) and all(condition(child) for child in children)

        self.call(wait_until, ready, timeout=timeout)
        return children

    def deliver(self, job_id: str) -> None:
        """Have the TTAPI simulator finish the job and call back now (for `start_reelhook(auto_deliver=False)`)."""
        job = self.wait_for_job(job_id, lambda job: job["provider_job_id"] is not None)
        self.call(self.deployment.sim.deliver, job["provider_job_id"])


class ReelhookStarter(Protocol):
    def __call__(self, **options: Any) -> LiveReelhook: ...


@pytest.fixture
def start_reelhook(portal: BlockingPortal, tmp_path: Path) -> Iterator[ReelhookStarter]:
    """`start_reelhook(**options)`: a LiveReelhook; options as tests/e2e's `deployment` (rules=, auto_deliver=, ...)."""
    with ExitStack() as stack:

        def start(**options: Any) -> LiveReelhook:
            started = stack.enter_context(portal.wrap_async_context_manager(deployment(tmp_path, **options)))
            return LiveReelhook(started, portal)

        yield start


@pytest.fixture
def reelhook(start_reelhook: ReelhookStarter) -> LiveReelhook:
    """reelhook with its simulators, calling back on their own."""
    return start_reelhook()


@pytest.fixture
def page(new_page: PageMaker, reelhook: LiveReelhook) -> Page:
    """A page whose relative URLs go to `reelhook`; not signed in."""
    return new_page(reelhook.url)


@pytest.fixture
def api_page(new_page: PageMaker, reelhook: LiveReelhook) -> Page:
    """A page on `reelhook` that sends the API token with every request."""
    return new_page(reelhook.url, token=API_TOKEN)
