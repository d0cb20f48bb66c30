"""The PostgreSQL engine: the same domain verbs as the SQLite store (storage.StoreProtocol), for several reelhook
instances sharing one database. Imported only when a postgresql:// URL is opened (storage.open_store)."""

from storage.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
