"""The storage tests run against both engines: every test that takes `store` (or `database_url`, `make_store`) runs
once on SQLite and once on a real PostgreSQL 16.

PostgreSQL comes from the `pgserver` wheel: one server per test session, started in a temporary directory on a Unix
socket the first time a test asks for it (no root, no Docker, under a second). A template database is migrated once;
each test gets `CREATE DATABASE t_N TEMPLATE …` (a file copy, milliseconds) and it is dropped afterwards, so tests
are isolated without migrating again. A test that leaves a connection to its database open fails, as a test that
leaves a SQLite store open does (tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from storage import StoreProtocol, open_store
from tests.postgres import PostgresServer

ENGINES = ("sqlite", "postgres")

MakeStore = Callable[..., Awaitable[StoreProtocol]]


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
