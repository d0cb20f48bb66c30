"""What a simulator remembers about its jobs, and where: in memory, or in a JSON file that outlives a restart.

A real provider keeps its jobs when our service restarts; so must a simulator started by `make run`, or every
fetch, extend or upsample of an earlier job fails with "job not found". With a state directory the table is
written through to `<dir>/<name>.json` after each change (atomically: a temporary file, then `os.replace`) and
read back at start-up. A JSON file rather than SQLite because nothing outside `storage/` opens a database, and a
simulator's table is small enough to rewrite whole.

A job's media URLs are not stored: they are derived from the base URL the simulator is served at, which changes
when `make run` restarts it on another port. `JobTable.rebase` moves the remembered jobs to the new address.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"


@dataclass(frozen=True)
class SimJob:
    job_id: str
    kind: str  # the provider's name for what was asked (generate, extend, imagine, upsample1, ...)
    body: dict[str, Any]
    hook_url: str | None
    prompt: str
    base_url: str
    count: int  # how many files it will have
    ext: str = "mp4"
    status: str = PENDING
    message: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)  # provider fields fixed at submit or finish time
    faults: Mapping[str, Any] = field(default_factory=dict)  # the fault switches on when it was taken

    @property
    def media(self) -> tuple[str, ...]:
        """Its files on the simulator's CDN, once it has succeeded."""
        if self.status != SUCCEEDED:
            return ()
        return tuple(f"{self.base_url}/cdn/{self.job_id}/{i}.{self.ext}" for i in range(self.count))

    @property
    def ended(self) -> bool:
        return self.status != PENDING


class JobTable:
    """The jobs of one simulator by id, optionally kept in `path` across restarts."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._jobs: dict[str, SimJob] = {}
        if path is not None and path.exists():
            for record in json.loads(path.read_text(encoding="utf-8")):
                job = SimJob(**record)
                self._jobs[job.job_id] = job

    def __iter__(self) -> Iterator[SimJob]:
        return iter(list(self._jobs.values()))

    def get(self, job_id: str) -> SimJob | None:
        return self._jobs.get(job_id)

    def __getitem__(self, job_id: str) -> SimJob:
        return self._jobs[job_id]

    def put(self, job: SimJob) -> None:
        self._jobs[job.job_id] = job
        self._save()

    def rebase(self, base_url: str, job_ids: Collection[str]) -> None:
        """Serve these jobs' files from `base_url` (the simulator came back on another address)."""
        stale = [job for job in map(self._jobs.get, job_ids) if job is not None and job.base_url != base_url]
        for job in stale:
            self._jobs[job.job_id] = dataclasses.replace(job, base_url=base_url)
        if stale:
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        records = [dataclasses.asdict(job) for job in self._jobs.values()]
        temporary.write_text(json.dumps(records), encoding="utf-8")
        os.replace(temporary, self.path)
