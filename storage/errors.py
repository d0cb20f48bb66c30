"""The one error type the engines raise for a database that failed (locked, gone, full, refused), so that nothing
outside `storage/` catches `sqlite3.Error` or `psycopg.Error`. The driver's own error stays as its `__cause__`.

Domain errors are not StoreErrors: a missing job is a LookupError, a refused status change an InvalidTransition,
a callback for another job a JobMismatch, whichever engine runs.
"""

from __future__ import annotations


class LeaseLost(Exception):
    """A claimed item's lease ran out and another claimer took it over: the outcome of the stale claim was not
    recorded (nothing of that call was committed). A domain error, not a StoreError: the database is fine."""


class StoreError(Exception):
    """The database could not do what was asked; nothing of that call was committed."""
