"""Opening the store: the engine comes from the database's address.

A path (or a `sqlite:` URL) opens the SQLite engine, the default: one process, one file in the data dir. A
`postgresql://` (or `postgres://`) URL opens the PostgreSQL engine, for several instances on one database; psycopg
is imported only then. Either way the caller gets a `StoreProtocol` and never learns which.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from storage.protocol import StoreProtocol

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(url: str) -> bool:
    return url.startswith(POSTGRES_SCHEMES)


async def open_store(url_or_path: str | Path, *, clock: Callable[[], float] = time.time) -> StoreProtocol:
    """Open (and migrate) the store at `url_or_path`. Close it with `await store.close()` or `async with`."""
    if isinstance(url_or_path, str) and is_postgres_url(url_or_path):
        from storage.postgres import PostgresStore

        return await PostgresStore.open(url_or_path, clock=clock)
    path = str(url_or_path).removeprefix("sqlite://") if isinstance(url_or_path, str) else url_or_path
    from storage.store import Store

    return await Store.open(path, clock=clock)
