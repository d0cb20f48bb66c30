"""How records look from outside: the job JSON of the API, the CLI and notifications."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from receiver.posters import poster_key
from storage import Event, Job
from storage.reports import CallbackRecord, ChainNode, EventRecord, NotificationRecord, ProviderCounts, Spend

MediaURL = Callable[[str], "str | None"]


def job_json(job: Job, *, media_url: MediaURL | None = None) -> dict[str, Any]:
    """The job as the API shows it. With `media_url` (see `media.media_urls`), each downloaded file also gets a
    signed, expiring `media_url`, and a `poster_url` once its poster exists (`media_url` answers None for a key the
    store does not hold); without it (notifications) both are null. `key` is the file's place in the media store,
    never a local path: a client opens the file through `media_url`.
    """
    return {
        "id": job.id,
        "provider": job.provider,
        "action": job.action,
        "status": job.status.value,
        "provider_job_id": job.provider_job_id,
        "parent_id": job.parent_id,
        "root_id": job.root_id,
        "depth": job.depth,
        "rule": job.rule,
        "prompt": job.prompt,
        "params": job.params,
        "progress": job.progress,
        "error": job.error,
        "attempts": job.attempts,
        "created_at": _iso(job.created_at),
        "updated_at": _iso(job.updated_at),
        "videos": [
            {
                "index": video.index,
                "url": video.url,
                "status": video.status.value,
                "key": video.path,  # where it is in the media store (the videos table's path column holds the key)
                "media_url": media_url(video.path) if media_url and video.path else None,
                "poster_url": _poster_url(video.path, media_url),
                "sha256": video.sha256,
                "bytes": video.bytes,
                "error": video.error,
            }
            for video in job.videos
        ],
        # Why a rule's follow-up of this job did not happen (a limit, a pause, a provider that would refuse it), or
        # what of a rule's request this job was made without.
        "notes": [{"rule": note.rule, "message": note.message, "at": _iso(note.created_at)} for note in job.notes],
        "result": result_json(job.result),
        # What the provider said the job cost, per unit ({"quota": 30.0}; APIMart {"usd": 0.2, "credits": 2.0});
        # null when it said nothing (AceData, WaveSpeed, a job not finished), which is not a cost of 0.
        "cost": {cost.unit: cost.amount for cost in job.costs} or None,
    }


def result_json(result: Mapping[str, Any]) -> dict[str, Any]:
    """What the provider returned that a user acts on, by name, each null until the provider says it.

    `seed` (a seed job's), `prompts` (a describe's four), `actions` (what an image job offers next: the names
    `reelhook action JOB NAME` takes) and `cover_url` (the cover of a video, the grid of an image job). Only these:
    the rest of a stored result (quota, costs, AceData's video_id) is bookkeeping, not something to act on.
    """
    seed, prompts, actions, cover = (result.get(key) for key in ("seed", "prompts", "components", "cover_url"))
    return {
        "seed": str(seed) if isinstance(seed, str | int) and not isinstance(seed, bool) and str(seed) else None,
        "prompts": [p for p in prompts if isinstance(p, str)] if isinstance(prompts, list) else None,
        "actions": [a for a in actions if isinstance(a, str)] if isinstance(actions, list) else None,
        "cover_url": cover if isinstance(cover, str) and cover else None,
    }


def _poster_url(key: str | None, media_url: MediaURL | None) -> str | None:
    return None if media_url is None or key is None else media_url(poster_key(key))


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_json(event: Event, job: Job) -> bytes:
    """A notification's body: the Standard Webhooks envelope (type, timestamp, data) around the job."""
    payload = {
        "type": event.type.value,
        "timestamp": _iso(event.created_at),
        "data": {"event_id": event.id, "video_index": event.video_index, "job": job_json(job)},
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def timeline_json(
    job: Job,
    callbacks: Sequence[CallbackRecord],
    events: Sequence[EventRecord],
    chain: Sequence[ChainNode] = (),
    notifications: Sequence[NotificationRecord] = (),
) -> list[dict[str, Any]]:
    """What happened to a job, oldest first: its creation and sending, each callback (its body as text), the events
    it emitted, its lookups, its files, the follow-ups its rules fired and the notes on those they did not, and the
    notifications its events sent."""
    items: list[tuple[float, dict[str, Any]]] = []

    def add(at: float | None, kind: str, **fields: Any) -> None:
        if at is not None:
            items.append((at, {"at": _iso(at), "kind": kind, **fields}))

    by = f"rule {job.rule}" if job.rule else "a person (API)"
    add(job.created_at, "created", by=by, parent_id=job.parent_id, action=job.action)
    # What was asked of the provider (the job's parameters, from which its module builds the request) and what its
    # answer told us: the id it gave, or why the outcome is unknown.
    answer = job.provider_job_id or (job.error if job.error and job.error.startswith("outcome unknown") else None)
    add(job.sent_at, "sent", attempts=job.attempts, provider_job_id=job.provider_job_id, params=job.params,
        answer=answer)  # fmt: skip
    for callback in callbacks:
        body = None if callback.pruned_at is not None else callback.body.decode("utf-8", "replace")
        add(callback.received_at, "callback", status=callback.status, effect=callback.effect,
            deliveries=callback.deliveries, body=body)  # fmt: skip
    for event in events:
        add(event.created_at, "event", type=event.type, video_index=event.video_index)
    if job.lookups:
        add(job.reconciled_at or job.updated_at, "lookup", lookups=job.lookups, next_at=_iso_or_none(job.lookup_at))
    add(job.lost_at, "lost", error=job.error)
    for video in job.videos:
        add(video.updated_at, "download", index=video.index, status=video.status.value, attempts=video.attempts,
            bytes=video.bytes, sha256=video.sha256, error=video.error)  # fmt: skip
    for note in job.notes:
        add(note.created_at, "note", rule=note.rule, message=note.message)
    for node in chain:
        if node.parent_id == job.id:
            add(node.created_at, "fired", rule=node.rule, child_id=node.id, action=node.action)
    for sent in notifications:  # the receiver's host only: a notify URL's path or query may carry a credential
        add(sent.created_at, "notification", rule=sent.rule, host=urlsplit(sent.url).hostname, attempts=sent.attempts,
            delivered_at=_iso_or_none(sent.delivered_at), error=sent.error)  # fmt: skip
    return [item for _, item in sorted(items, key=lambda pair: pair[0])]


def chain_json(nodes: Sequence[ChainNode]) -> list[dict[str, Any]]:
    """A chain as a tree: the root's entry with `children`, each child likewise, oldest first. `pending_events`
    counts a job's events the rules have not handled yet (while it is not 0, a follow-up may still appear)."""
    entries: dict[str, dict[str, Any]] = {
        node.id: {"id": node.id, "action": node.action, "status": node.status.value, "depth": node.depth,
                  "created_at": _iso(node.created_at), "pending_events": node.pending_events, "children": []}
        for node in nodes
    }  # fmt: skip
    roots: list[dict[str, Any]] = []
    for node in nodes:
        parent = entries.get(node.parent_id) if node.parent_id else None
        (parent["children"] if parent is not None else roots).append(entries[node.id])
    return roots


def overview_json(
    counts: Mapping[str, ProviderCounts],
    limits: Mapping[str, int],
    paused: str | None,
    now: float,
    waiting: tuple[int, int] = (0, 0),
    spend: Sequence[Spend] = (),
) -> dict[str, Any]:
    """Per provider: slots in use of its limit (and how many of those are overdue), the queue, today's (UTC) outcomes
    (given up on included) and spend, downloads, the last callback;
    notifications not yet delivered, and the rules' follow-ups waiting (held, while paused);
    `spend`: what jobs cost per UTC day, provider and unit, newest day first (units are never added together)."""
    today = datetime.fromtimestamp(now, UTC).date().isoformat()
    spent_today: dict[str, dict[str, float]] = {}
    for item in spend:
        if item.day == today:
            spent_today.setdefault(item.provider, {})[item.unit] = _amount(item.amount)
    return {
        "paused": paused,
        "notifications_pending": waiting[0],
        "followups_queued": waiting[1],
        "spend": [
            {
                "day": item.day,
                "provider": item.provider,
                "unit": item.unit,
                "amount": _amount(item.amount),
                "jobs": item.jobs,
            }
            for item in spend
        ],
        "providers": [
            {
                "provider": name,
                "in_flight": c.in_flight,
                "limit": limits.get(name),
                "queued": c.queued,
                "overdue": c.overdue,
                "lost_today": c.lost_since,
                "succeeded_today": c.succeeded_since,
                "failed_today": c.failed_since,
                "downloads_pending": c.downloads_pending,
                "downloads_failed": c.downloads_failed,
                "last_callback_at": _iso_or_none(c.last_callback_at),
                "last_callback_seconds_ago": None if c.last_callback_at is None else round(now - c.last_callback_at, 1),
                "spent_today": spent_today.get(name, {}),
            }
            for name, c in counts.items()
        ],
    }


def _amount(amount: float) -> float:
    # A sum of decimal prices in binary floats (0.2 * 3 = 0.6000000000000001): no provider prices below 1e-9.
    return round(amount, 9)


def _iso_or_none(timestamp: float | None) -> str | None:
    return None if timestamp is None else _iso(timestamp)
