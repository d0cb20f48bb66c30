"""A real PostgreSQL 16 for tests, from the `pgserver` wheel: one server per test session, started in a temporary
directory on a Unix socket the first time a test asks for it (no root, no Docker, under a second). A template
database is migrated once; each test gets `CREATE DATABASE t_N TEMPLATE …` (a file copy, milliseconds) and drops it
afterwards, so tests are isolated without migrating again.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import threading
import time
import warnings
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from storage.postgres import PostgresStore

TEMPLATE = "reelhook_template"


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
