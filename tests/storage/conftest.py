"""The storage tests run against both engines: every test that takes `store` (or `database_url`, `make_store`) runs
once on SQLite and once on a real PostgreSQL 16.

PostgreSQL comes from the `pgserver` wheel: one server per test session, started in a temporary directory on a Unix
socket the first time a test asks for it (no root, no Docker, under a second). A template database is migrated once;
each test gets `CREATE DATABASE t_N TEMPLATE …` (a file copy, milliseconds) and it is dropped afterwards, so tests
are isolated without migrating again. A test that leaves a connection to its database open fails, as a test that
leaves a SQLite store open does (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import threading
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest

from storage import StoreProtocol, open_store
from storage.postgres import PostgresStore

ENGINES = ("sqlite", "postgres")
TEMPLATE = "reelhook_template"

MakeStore = Callable[..., Awaitable[StoreProtocol]]


class PostgresServer:
    """One running PostgreSQL, handing out a fresh migrated database per test."""

    def __init__(self, data_dir: Path) -> None:
        with warnings.catch_warnings():  # pgserver's import warns that XDG_RUNTIME_DIR is unset (it uses /tmp)
            warnings.simplefilter("ignore")
            import pgserver

            self._server = pgserver.get_server(data_dir, cleanup_mode="stop")
        self._numbers = itertools.count(1)
        self.admin(f"CREATE DATABASE {TEMPLATE}")
        self._run(self._migrate(self.url(TEMPLATE)))

    def url(self, database: str) -> str:
        return str(self._server.get_uri(database))

    def admin(self, sql: str) -> list[tuple[Any, ...]]:
        return self.admin_in("postgres", sql)

    def admin_in(self, database: str, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cursor = conn.execute(sql.encode())
            return cursor.fetchall() if cursor.description else []

    def new_database(self, *, migrated: bool = True) -> str:
        """A database of its own: a copy of the migrated template, or empty."""
        name = f"t_{next(self._numbers)}"
        self.admin(f"CREATE DATABASE {name}" + (f" TEMPLATE {TEMPLATE}" if migrated else ""))
        return name

    def drop_database(self, name: str) -> int:
        """Drop a test's database; return how many connections to it were still open."""
        # A closed connection's server process ends a moment after the client hangs up, and nothing signals it:
        # ask again for a while before calling a connection left open.
        for _ in range(500):
            [(left,)] = self.admin(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}'")
            if not left:
                break
            time.sleep(0.01)
        self.admin(f"DROP DATABASE {name} WITH (FORCE)")
        return int(left)

    def stop(self) -> None:
        self._server.cleanup()

    @staticmethod
    async def _migrate(url: str) -> None:
        async with await PostgresStore.open(url):
            pass

    @staticmethod
    def _run(coroutine: Awaitable[None]) -> None:
        # In a thread of its own: a session fixture may be set up while a test's event loop runs.
        failure: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(coroutine)  # type: ignore[arg-type]
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        if failure:
            raise failure[0]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    # Not under pytest's tmp_path: pytest removes old numbered temp dirs of other runs by the same user, and a
    # server whose data dir went away mid-run dies (seen with several test runs at once on one machine).
    with tempfile.TemporaryDirectory(prefix="reelhook-pg-") as data_dir:
        server = PostgresServer(Path(data_dir))
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """Where this test's empty, migrated database is: a SQLite file, or a PostgreSQL database of its own."""
    if engine == "sqlite":
        yield str(tmp_path / "reelhook.sqlite3")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.new_database()
    yield server.url(name)
    left = server.drop_database(name)
    if left:
        pytest.fail(f"the test left {left} PostgreSQL connection(s) open: close every store it opened", pytrace=False)


@pytest.fixture
async def make_store(database_url: str) -> AsyncIterator[MakeStore]:
    """Open another store on this test's database (a clock of its own, or a second instance's connections);
    whatever it opened is closed after the test."""
    async with AsyncExitStack() as stack:

        async def make(**options: Any) -> StoreProtocol:
            return await stack.enter_async_context(await open_store(database_url, **options))

        yield make


@pytest.fixture
async def store(make_store: MakeStore) -> StoreProtocol:
    """This test's store, on each engine in turn."""
    return await make_store()
