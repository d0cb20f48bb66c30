"""Turning PostgreSQL rows into records: the same columns as SQLite's, so the same conversions (storage/rows.py),
read by name from psycopg's dict rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from psycopg.rows import DictRow

from storage import rows
from storage.records import Cost, Event, EventType, Job, Note, Notification, Video


def job_from_row(row: DictRow, videos: Sequence[Video], notes: Sequence[Note] = (), costs: Sequence[Cost] = ()) -> Job:
    return rows.job_from_row(cast(Any, row), videos, notes, costs)


def video_from_row(row: DictRow) -> Video:
    return rows.video_from_row(cast(Any, row))


def notification_from_row(row: DictRow) -> Notification:
    return rows.notification_from_row(cast(Any, row))


def event_from_row(row: DictRow) -> Event:
    return Event(row["id"], EventType(row["type"]), row["job_id"], row["video_index"], row["created_at"])
