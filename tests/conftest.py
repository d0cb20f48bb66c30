from __future__ import annotations

import gc
import threading
import warnings
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import pytest

from storage import Store
from tests.postgres import postgres_server  # noqa: F401  (a fixture: one PostgreSQL per session)
from tests.seaweed import s3_server  # noqa: F401  (a fixture: one SeaweedFS per session)

pytest_plugins = ["pytester"]  # tests/test_conftest.py runs the leak guard on a leaking test


@pytest.fixture
def anyio_backend() -> str:
    # aiosqlite and uvicorn are asyncio-only.
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A real SQLite store on a temporary file."""
    async with await Store.open(tmp_path / "reelhook.sqlite3") as opened:
        yield opened


class StoreOpener(Protocol):
    def __call__(self, path: Path, **options: Any) -> Awaitable[Store]: ...


@pytest.fixture
async def open_store() -> AsyncIterator[StoreOpener]:
    """`Store.open` for a test that needs its own options (a clock); whatever it opened is closed after the test,
    passed or failed."""
    async with AsyncExitStack() as stack:

        async def open_(path: Path, **options: Any) -> Store:
            return await stack.enter_async_context(await Store.open(path, **options))

        yield open_


# A Store left open keeps its aiosqlite worker, a non-daemon thread, waiting for work. When a failed test's traceback
# still holds the store, the run hangs after its last test, for good and with no word of which test (tried: a test that
# failed between Store.open and close). So after every test a new worker still running fails the test, and is stopped.


def sqlite_workers() -> set[threading.Thread]:
    """aiosqlite's worker threads now alive: each connection runs on one (before 0.22 the Connection itself was the
    thread; since then it starts one named after its target)."""
    return {
        thread
        for thread in threading.enumerate()
        if isinstance(thread, aiosqlite.Connection) or thread.name.endswith("(_connection_worker_thread)")
    }


def stop_connections(workers: set[threading.Thread]) -> None:
    """Stop the connections that run on `workers`, so that one leaking test does not also hang the run's exit."""
    for thing in gc.get_objects():
        if isinstance(thing, aiosqlite.Connection) and getattr(thing, "_thread", thing) in workers:
            with warnings.catch_warnings():  # stop() asks for an event loop, and there is none here
                warnings.simplefilter("ignore")
                thing.stop()
    for worker in workers:
        worker.join(timeout=5)


def still_running(worker: threading.Thread) -> bool:
    worker.join(timeout=1)  # a store closed just now has stopped its worker, which may need a moment to end
    return worker.is_alive()


@pytest.fixture(autouse=True)
def no_store_left_open() -> Iterator[None]:
    before = sqlite_workers()
    yield
    left = {worker for worker in sqlite_workers() - before if still_running(worker)}
    if left:
        stop_connections(left)
        pytest.fail(
            f"the test left {len(left)} SQLite connection(s) open (aiosqlite worker threads still running):"
            " open stores with `async with await Store.open(...)`, or the `store`/`open_store` fixtures",
            pytrace=False,
        )
