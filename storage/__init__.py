"""Durable state: the SQLite inbox and outbox, and the records read from it.

`storage` imports nothing else of reelhook's: it is the bottom of the house.
"""

from storage.inbox import CallbackOutcome, JobMismatch
from storage.lifecycle import InvalidTransition, check_transition
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
    "EventType",
    "InvalidTransition",
    "Job",
    "JobMismatch",
    "JobStatus",
    "NewJob",
    "NewNotification",
    "Note",
    "Notification",
    "Store",
    "Video",
    "VideoStatus",
    "check_transition",
]
