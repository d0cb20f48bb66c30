"""Both engines give the same answers: one scripted history of jobs, callbacks, downloads, events, notifications and
deadlines is played on SQLite (the reference) and on PostgreSQL, and every read of the protocol is compared.

This is what holds the PostgreSQL engine's own SQL (FILTER for SQLite's summed booleans, bytea, identity ids, row
locks) to the SQLite engine's meaning, verb by verb, without a second set of expectations to keep in step.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from storage import CallbackResult, Cost, JobStatus, NewJob, NewNotification, Note, StoreProtocol, open_store
from tests.postgres import PostgresServer

pytestmark = pytest.mark.anyio

URLS = ("https://cdn.example/0.mp4", "https://cdn.example/1.mp4")


async def history(url: str) -> dict[str, Any]:
    """Play the history on the store at `url`; every read, with job ids named by creation order."""
    now = [1000.0]
    async with await open_store(url, clock=lambda: now[0]) as store:
        ids, moves = await play(store, now)
        reads = await read_everything(store, ids, now[0]) | {"moves": moves}
    names = {job_id: f"job{number}" for number, job_id in enumerate(ids)}
    return rename(reads, names)


async def play(store: StoreProtocol, now: list[float]) -> tuple[list[str], list[Any]]:
    def later(seconds: float = 1.0) -> None:
        now[0] += seconds

    ids = []
    for provider, prompt in (("ttapi", "a cat"), ("ttapi", "a dog"), ("acedata", "a fox")):
        job, _ = await store.create_job(NewJob(provider, "generate", {"prompt": prompt}))
        ids.append(job.id)
        later()
    a, b, c = ids
    moves = [await store.use_public_url("https://one.example", providers=["ttapi"], note=moved)]
    later()
    await store.claim_submission(a, look_up_after=100)
    await store.record_submitted(a, "tt-a")
    await store.claim_submission(b, look_up_after=50)
    await store.record_unknown_outcome(b, "read timeout")
    later()
    moves.append(await store.use_public_url("https://one.example", providers=["ttapi"], note=moved))  # the same
    moves.append(await store.use_public_url("https://two.example", providers=["ttapi"], note=moved))
    later()
    costs = (Cost(30.0, "quota"),)
    success = CallbackResult("tt-a", JobStatus.SUCCEEDED, 100, URLS, result={"quota": "30"}, costs=costs)
    headers = [("content-type", "application/json"), ("webhook-id", "msg-1")]
    await store.record_callback(a, "ttapi", body=b'{"a": 1}\x00', headers=headers, result=success)
    later()
    await store.record_callback(a, "ttapi", body=b'{"a": 1}\x00', headers=headers, result=success)  # re-delivered
    await store.record_callback(a, "ttapi", body=b'{"a": 2}', headers=[], result=success)  # a late duplicate
    later()
    await store.record_download(a, 0, path="/m/a-0.mp4", sha256="ab" * 32, size=1234)
    await store.retry_download(a, 1, error="503 from the CDN", retry_at=now[0] + 50)
    later()
    await store.fail_download(a, 1, error="gave up")
    events = await store.pending_events()
    followup = NewJob("ttapi", "extend", {"index": 0}, parent_id=a, rule="extend-first", origin=f"extend-first:{a}:0")
    notify = [NewNotification("tell-me", "https://hooks.example/n", b'{"type": "job.succeeded"}')]
    created = await store.complete_event(
        events[0].id, [followup], notify, [Note(a, "extend-first", "max_depth 1 reached")]
    )
    ids.extend(created)
    later()
    [notification] = await store.due_notifications(limit=10)
    await store.record_notification(notification.id, error="500 from the receiver", retry_at=now[0] + 30)
    await store.cancel_job(c)
    later(60)  # b's deadline passes
    await store.give_up(b, "lost: no result after 50 s", note="given up on")
    await store.schedule_lookup(a, at=now[0] + 10, looked_up=True)  # a settled: no deadline to move
    await store.set_flag("paused", "by a test")
    later()
    await store.retry_downloads(a)
    later(86400)  # the next UTC day
    apimart = CallbackResult("am-c", JobStatus.SUCCEEDED, 100, URLS, costs=(Cost(0.2, "usd"), Cost(2.0, "credits")))
    job, _ = await store.create_job(NewJob("apimart", "generate", {"prompt": "an owl"}))
    ids.append(job.id)
    await store.claim_submission(job.id, look_up_after=100)
    await store.record_submitted(job.id, "am-c")
    await store.record_callback(job.id, "apimart", body=b"{}", headers=[], result=apimart)
    return ids, moves


def moved(old: str) -> str:
    return f"callback URL {old}/hooks/… is no longer reachable"


async def read_everything(store: StoreProtocol, ids: list[str], now: float) -> dict[str, Any]:
    a = ids[0]
    return {
        "jobs": await store.list_jobs(),
        "page": await store.list_jobs(limit=2, before=(1001.5, "z" * 32)),
        "filtered": [
            await store.list_jobs(status=JobStatus.FAILED),
            await store.list_jobs(provider="acedata"),
            await store.list_jobs(rule="extend-first"),
            await store.list_jobs(root=a),
            await store.list_jobs(q="tt-a"),
            await store.list_jobs(q=a[:6]),
        ],
        "job": await store.get_job(a),
        "in_flight": await store.in_flight("ttapi"),
        "queued_providers": sorted(await store.queued_providers()),
        "due_submissions": await store.due_submissions("ttapi", limit=10),
        "next_submission_at": await store.next_submission_at(),
        "callbacks": await store.job_callbacks(a),
        "callback_count": await store.callback_count(a),
        "events": [await store.job_events(job_id) for job_id in ids],
        "pending_events": await store.pending_events(),
        "notifications": await store.job_notifications(a),
        "due_notifications": [dataclasses.replace(n, message_id="") for n in await store.due_notifications(limit=9)],
        "next_notification_at": await store.next_notification_at(),
        "due_downloads": await store.due_downloads(limit=10),
        "next_download_at": await store.next_download_at(),
        "due_lookups": await store.due_lookups(),
        "next_lookup_at": await store.next_lookup_at(),
        "overdue": await store.overdue_jobs(sent_before=now),
        "chain": await store.chain(a),
        "counts": await store.provider_counts(["ttapi", "acedata", "wavespeed"], since=1000.0, now=now),
        "waiting": await store.waiting_counts(),
        "oldest": await store.oldest_waiting(),
        "root_jobs": await store.count_root_jobs(a),
        "followups": await store.count_followups_since(0.0),
        "flag": await store.get_flag("paused"),
        "notes": await store.get_notes(ids[1]),
        "notes_b": await store.get_notes(ids[1]),
        "spend_by_day": await store.spend_by_day(since=0.0),
        "spend_today": await store.spend_by_day(since=now - 10),
        "spend_totals": await store.spend_totals(),
        "pruned": await store.prune_callbacks(older_than=now),
        "callbacks_pruned": await store.job_callbacks(a),
    }


def rename(value: Any, names: dict[str, str]) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return rename(dataclasses.asdict(value), names)
    if isinstance(value, dict):
        return {rename(key, names): rename(item, names) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [rename(item, names) for item in value]
    if isinstance(value, str):
        for job_id, name in names.items():
            value = value.replace(job_id, name)
    return value


async def test_both_engines_answer_alike(tmp_path: Path, postgres_server: PostgresServer) -> None:
    on_sqlite = await history(str(tmp_path / "reelhook.sqlite3"))
    name = postgres_server.new_database()
    try:
        on_postgres = await history(postgres_server.url(name))
    finally:
        postgres_server.drop_database(name)
    assert on_sqlite["jobs"] and on_sqlite["callbacks"] and on_sqlite["pruned"]  # the history did happen
    assert len(on_sqlite["spend_by_day"]) == 3 and on_sqlite["notes_b"] and on_sqlite["moves"][2][1]
    for key in on_sqlite:
        assert on_postgres[key] == on_sqlite[key], key
