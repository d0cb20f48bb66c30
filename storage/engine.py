"""Opening the store: the engine comes from the database's address.

A path (or a `sqlite:` URL) opens the SQLite engine, the default: one process, one file in the data dir. A
`postgresql://` (or `postgres://`) URL opens the PostgreSQL engine, for several instances on one database; psycopg
is imported only then. Either way the caller gets a `StoreProtocol` and never learns which.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from storage.protocol import StoreProtocol

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(url: str) -> bool:
    return url.startswith(POSTGRES_SCHEMES)


async def open_store(
    url_or_path: str | Path, *, clock: Callable[[], float] = time.time, claimant: str = ""
) -> StoreProtocol:
    """Open (and migrate) the store at `url_or_path`. Close it with `await store.close()` or `async with`.
    `claimant` names this instance in the claims it makes, so that it can take back its own after a restart."""
    if isinstance(url_or_path, str) and is_postgres_url(url_or_path):
        from storage.postgres import PostgresStore

        return await PostgresStore.open(url_or_path, clock=clock, claimant=claimant)
    path = str(url_or_path).removeprefix("sqlite://") if isinstance(url_or_path, str) else url_or_path
    from storage.store import Store

    return await Store.open(path, clock=clock, claimant=claimant)


def wakeup_listener(
    url_or_path: str | Path, on_hint: Callable[[str], None], *, backstop: float = 60.0
) -> Callable[..., Coroutine[Any, Any, None]] | None:
    """What listens for work other instances record on this database, calling `on_hint(queue)` for each: a task to
    run with `TaskGroup.start` (it reports started once listening). None for SQLite: one process, nothing to hear."""
    if not (isinstance(url_or_path, str) and is_postgres_url(url_or_path)):
        return None
    from storage.postgres.wakeups import Wakeups

    return Wakeups(url_or_path, on_hint, backstop=backstop).run
