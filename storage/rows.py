"""Turning SQLite rows into records."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from storage.records import Cost, Job, JobStatus, Note, Notification, Video, VideoStatus


def job_from_row(
    row: sqlite3.Row, videos: Sequence[Video], notes: Sequence[Note] = (), costs: Sequence[Cost] = ()
) -> Job:
    return Job(
        id=row["id"],
        provider=row["provider"],
        action=row["action"],
        status=JobStatus(row["status"]),
        params=json.loads(row["params"]),
        provider_job_id=row["provider_job_id"],
        parent_id=row["parent_id"],
        root_id=row["root_id"],
        depth=row["depth"],
        rule=row["rule"],
        origin=row["origin"],
        error=row["error"],
        progress=row["progress"],
        result=json.loads(row["result"]),
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        videos=tuple(videos),
        notes=tuple(notes),
        reconciled_at=row["reconciled_at"],
        sent_at=row["sent_at"],
        lookup_at=row["lookup_at"],
        lookups=row["lookups"],
        lost_at=row["lost_at"],
        costs=tuple(costs),
    )


def costs_by_job(rows: Iterable[sqlite3.Row | tuple[Any, ...]]) -> dict[str, list[Cost]]:
    """Rows of (job_id, unit, amount) as each job's costs, in the order read."""
    costs: dict[str, list[Cost]] = {}
    for row in rows:
        costs.setdefault(row[0], []).append(Cost(float(row[2]), row[1]))
    return costs


def video_from_row(row: sqlite3.Row) -> Video:
    return Video(
        job_id=row["job_id"],
        index=row["idx"],
        url=row["url"],
        status=VideoStatus(row["status"]),
        path=row["path"],
        sha256=row["sha256"],
        bytes=row["bytes"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        error=row["error"],
        updated_at=row["updated_at"],
    )


def notification_from_row(row: sqlite3.Row) -> Notification:
    return Notification(
        id=row["id"],
        event_id=row["event_id"],
        rule=row["rule"],
        url=row["url"],
        message_id=row["message_id"],
        body=row["body"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        delivered_at=row["delivered_at"],
        error=row["error"],
    )


def job_list_query(
    mark: str,
    *,
    status: object,
    before: tuple[float, str] | None,
    provider: str | None,
    action: str | None,
    rule: str | None,
    root: str | None,
    q: str | None,
) -> tuple[str, list[Any]]:
    """`Store.list_jobs`' SQL, newest first, up to its `LIMIT` placeholder, and its parameters but the limit: one
    query on both engines, whose placeholders differ (`mark`: SQLite's `?`, psycopg's `%s`)."""
    where: list[str] = []
    params: list[Any] = []
    filters = {"status": status, "provider": provider, "action": action, "rule": rule, "root_id": root}
    for column, value in filters.items():
        if value is not None:
            where.append(f"{column} = {mark}")
            params.append(str(value))
    if q is not None:
        # Job ids are lowercase hex, so a prefix needs no LIKE escaping once it is known to be hex.
        prefix = q.lower() if q and all(c in "0123456789abcdef" for c in q.lower()) else None
        where.append(f"(id = {mark} OR provider_job_id = {mark}" + (f" OR id LIKE {mark})" if prefix else ")"))
        params.extend([q, q] + ([prefix + "%"] if prefix else []))
    if before is not None:
        where.append(f"(created_at, id) < ({mark}, {mark})")
        params.extend(before)
    sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
    return sql + f" ORDER BY created_at DESC, id DESC LIMIT {mark}", params
