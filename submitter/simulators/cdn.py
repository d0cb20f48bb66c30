"""The simulators' CDN: a finished job's files, each the sample with the job and index written into it."""

from __future__ import annotations

from starlette.responses import Response

from submitter.simulators import media_bytes
from submitter.simulators.state import SUCCEEDED, SimJob


def media_file(job: SimJob | None, filename: str) -> Response:
    """`<index>.<ext>` of `job`, or 404 while the job has not succeeded or never had that file."""
    stem, _, ext = filename.partition(".")
    if job is None or job.status != SUCCEEDED or not stem.isdigit() or ext != job.ext or int(stem) >= job.count:
        return Response(b"not found", status_code=404, media_type="text/plain")
    media_type = "image/png" if ext == "png" else "video/mp4"
    return Response(media_bytes(job.job_id, int(stem), ext), media_type=media_type)
