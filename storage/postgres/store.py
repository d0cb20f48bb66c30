"""The PostgreSQL engine of the store: storage.StoreProtocol over a psycopg pool, for several reelhook instances
on one database. Each concern's SQL is in its own module, as on SQLite."""

from __future__ import annotations

from storage.postgres.claims import Claims
from storage.postgres.deadlines import Deadlines
from storage.postgres.inbox import Inbox
from storage.postgres.jobs import Jobs
from storage.postgres.reports import Reports


class PostgresStore(Jobs, Inbox, Deadlines, Claims, Reports):
    pass
