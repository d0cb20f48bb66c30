"""Durable state: the inbox and outbox, and the records read from it, on SQLite (`Store`) or PostgreSQL
(`storage.postgres`), both behind `StoreProtocol`; `open_store` picks one from the database's address.

`storage` imports nothing else of reelhook's: it is the bottom of the house.
"""

from storage.engine import open_store, wakeup_listener
from storage.errors import LeaseLost, StoreError
from storage.inbox import CallbackOutcome, JobMismatch
from storage.lifecycle import InvalidTransition, check_transition
from storage.protocol import EventOutcome, FollowupGuard, StoreProtocol
from storage.records import (
    Action,
    CallbackResult,
    Cost,
    Event,
    EventType,
    Job,
    JobStatus,
    NewJob,
    NewNotification,
    Note,
    Notification,
    Video,
    VideoStatus,
)
from storage.store import Store

__all__ = [
    "Action",
    "CallbackOutcome",
    "CallbackResult",
    "Cost",
    "Event",
    "EventOutcome",
    "EventType",
    "FollowupGuard",
    "InvalidTransition",
    "Job",
    "JobMismatch",
    "JobStatus",
    "LeaseLost",
    "NewJob",
    "NewNotification",
    "Note",
    "Notification",
    "Store",
    "StoreError",
    "StoreProtocol",
    "Video",
    "VideoStatus",
    "check_transition",
    "open_store",
    "wakeup_listener",
]
