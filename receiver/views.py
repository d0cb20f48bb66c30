"""How records look from outside: the job JSON of the API, the CLI and notifications."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from receiver.posters import poster_path
from storage import Event, Job

MediaURL = Callable[[str], "str | None"]


def job_json(job: Job, *, media_url: MediaURL | None = None) -> dict[str, Any]:
    """The job as the API shows it. With `media_url` (see `media.media_urls`), each downloaded file also gets a
    signed, expiring `media_url`, and a `poster_url` once its poster exists; without it (notifications) both are null.
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
                "path": video.path,
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


def _poster_url(path: str | None, media_url: MediaURL | None) -> str | None:
    if media_url is None or path is None:
        return None
    poster = poster_path(Path(path))
    return media_url(str(poster)) if poster.is_file() else None


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
