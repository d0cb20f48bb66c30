"""The migration that turns a downloaded video's absolute local path into its media key (`root/job/0.mp4`)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from storage import CallbackResult, JobStatus, NewJob, Store
from storage.schema import MIGRATIONS

pytestmark = pytest.mark.anyio

MEDIA_KEYS = next(script for script in MIGRATIONS if "UPDATE videos SET path" in script)


async def test_old_absolute_paths_become_media_keys_and_keys_stay_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    async with await Store.open(path) as store:
        job, _ = await store.create_job(NewJob("ttapi", "generate", {"prompt": "a cat", "image_url": "https://i/a"}))
        await store.claim_submission(job.id)
        urls = ("https://cdn/0.mp4", "https://cdn/1.png", "https://cdn/2.mp4")
        result = CallbackResult("p-1", JobStatus.SUCCEEDED, 100, urls)
        await store.record_callback(job.id, "ttapi", body=b"{}", headers=[], result=result)
        old = f"/home/studio/reelhook/data/media/{job.root_id}/{job.id}"
        await store.record_download(job.id, 0, path=f"{old}/0.mp4", sha256="a" * 64, size=1)  # before the change
        await store.record_download(job.id, 1, path=f"{old}/1.png", sha256="b" * 64, size=1)
        await store.record_download(job.id, 2, path=f"{job.root_id}/{job.id}/2.mp4", sha256="c" * 64, size=1)
    with closing(sqlite3.connect(path)) as db:
        db.executescript(MEDIA_KEYS)
        rows = db.execute("SELECT idx, path FROM videos ORDER BY idx").fetchall()
    assert rows == [
        (0, f"{job.root_id}/{job.id}/0.mp4"),
        (1, f"{job.root_id}/{job.id}/1.png"),
        (2, f"{job.root_id}/{job.id}/2.mp4"),
    ]
