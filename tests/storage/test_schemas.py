"""The two engines' schemas: PostgreSQL's migrations mirror SQLite's, and run once however many instances start."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import anyio
import psycopg
import pytest

from storage import Store
from storage.postgres import PostgresStore
from storage.postgres.schema import MIGRATIONS
from tests.postgres import PostgresServer

pytestmark = pytest.mark.anyio

# Columns only one engine has, and why: none since both hold an event's lease in its row.
POSTGRES_ONLY: set[tuple[str, str]] = set()


@pytest.fixture
def empty_database(postgres_server: PostgresServer) -> Iterator[str]:
    name = postgres_server.new_database(migrated=False)
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


async def test_postgres_has_every_column_sqlite_has(tmp_path: Path, postgres_server: PostgresServer) -> None:
    # A column added to one engine's schema and not the other's fails here, not in production.
    async with await Store.open(tmp_path / "db.sqlite3"):
        pass
    with closing(sqlite3.connect(tmp_path / "db.sqlite3")) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        sqlite_columns = {(table, row[1]) for table in tables for row in db.execute(f"PRAGMA table_info({table})")}
    rows = postgres_server.admin_in(
        "reelhook_template",
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
        " AND table_name <> 'reelhook_migrations'",
    )
    postgres_columns = {(table, column) for table, column in rows}
    assert postgres_columns - sqlite_columns == POSTGRES_ONLY
    assert sqlite_columns - postgres_columns == set()


async def test_instances_starting_together_migrate_once(empty_database: str) -> None:
    async def start() -> None:
        async with await PostgresStore.open(empty_database):
            pass

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(start)
    with psycopg.connect(empty_database) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM reelhook_migrations ORDER BY version")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))


async def test_a_newer_postgres_schema_is_refused(empty_database: str) -> None:
    async with await PostgresStore.open(empty_database):
        pass
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("INSERT INTO reelhook_migrations (version) VALUES (%s)", (len(MIGRATIONS) + 1,))
    with pytest.raises(RuntimeError, match="upgrade reelhook"):
        await PostgresStore.open(empty_database)
