"""The sidecar JSON stored beside each downloaded file: where it came from and what it is, readable without the
database (a folder or a bucket copied elsewhere still says which job, prompt and rule made each file)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from storage import Job, Video
from storage.media import Written


def sidecar_json(job: Job, video: Video, written: Written, now: float) -> bytes:
    fields: dict[str, Any] = {
        "provider": job.provider,
        "job_id": job.id,
        "provider_job_id": job.provider_job_id,
        "root_id": job.root_id,
        "parent_id": job.parent_id,
        "rule": job.rule,
        "action": job.action,
        "prompt": job.prompt,
        "index": video.index,
        "source_url": video.url,
        "sha256": written.sha256,
        "bytes": written.size,
        "downloaded_at": _iso(now),
        "created_at": _iso(job.created_at),
    }
    return (json.dumps(fields, indent=2, ensure_ascii=False) + "\n").encode()


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
