"""How records look from outside: the job JSON of the API, the CLI and notifications."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from storage import Event, Job


def job_json(job: Job) -> dict[str, Any]:
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
                "sha256": video.sha256,
                "bytes": video.bytes,
                "error": video.error,
            }
            for video in job.videos
        ],
        # Why a rule's follow-up of this job did not happen (a limit, a pause, a provider that would refuse it).
        "notes": [{"rule": note.rule, "message": note.message, "at": _iso(note.created_at)} for note in job.notes],
    }


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
