"""The promises of issue 12, checked where they show once several instances have settled: at the provider (what
the shared simulator observed), in the database, and in the bucket. Each check returns the broken promises as
sentences, so that a failing test names all of them at once (tests/e2e/test_instances.py).

Only one kind of failure is excused, and only as far as a SIGKILL explains it: a job the killed instance had
claimed and not yet sent is "outcome unknown" and never resent, so it ends given up as lost (at most the
provider's limit of them, and never a job the provider took); and the files the killed instance was fetching
may be fetched again (at most its download slots, each at most twice).
"""

from __future__ import annotations

import collections
import hashlib
from dataclasses import dataclass
from typing import Any

import obstore
import psycopg
from obstore.store import S3Store
from psycopg.rows import dict_row

from submitter.tokens import BadHookToken, HookSigner
from tests.e2e.conftest import SECRET, expected_sha256
from tests.seaweed import ACCESS_KEY, REGION, SECRET_KEY, S3Server

Row = dict[str, Any]
DOWNLOAD_SLOTS = 4  # downloads one instance runs at once (receiver/downloads.py)
HOOK_FIELDS = {"ttapi": "hookUrl", "acedata": "callback_url", "apimart": "webhook"}
ENDED = ("succeeded", "failed")


@dataclass(frozen=True)
class Promises:
    limit: int  # REELHOOK_<PROVIDER>_MAX_IN_FLIGHT
    roots: int  # jobs submitted through the API
    follows: dict[int, str]  # a succeeded job's depth -> the rule that must follow it up, once

    def at_the_provider(self, observed: dict[str, Row]) -> list[str]:
        """Never more than the limit in flight, no job of ours sent twice, no file fetched twice but the ones the
        killed instance was fetching."""
        problems = []
        for provider, seen in observed.items():
            if seen["peak_in_flight"] > self.limit:
                problems.append(f"{provider}: {seen['peak_in_flight']} jobs in flight at once, over {self.limit}")
            sent, strangers = sent_jobs(provider, seen)
            problems += strangers
            twice = {job_id: count for job_id, count in sent.items() if count > 1}
            if twice:
                problems.append(f"{provider}: jobs sent more than once (job id: times): {twice}")
            again = {path: hits for path, hits in seen["cdn_hits"].items() if hits > 1}
            if len(again) > DOWNLOAD_SLOTS or any(hits > 2 for hits in again.values()):
                problems.append(f"{provider}: {len(again)} files downloaded more than once (path: times): {again}")
        return problems

    def of_the_rules(self, jobs: list[Row], observed: dict[str, Row]) -> list[str]:
        """Every rule fired once per source: one follow-up per (rule, parent), none missing; no job failed but
        the killed instance's unsent ones."""
        per_source = collections.Counter((job["rule"], job["parent_id"]) for job in jobs if job["rule"])
        problems = [f"rule {rule} followed up {parent} {n} times" for (rule, parent), n in per_source.items() if n > 1]
        problems += self.missing_followups(jobs)
        roots = [job for job in jobs if job["depth"] == 0]
        if len(roots) != self.roots:
            problems.append(f"{len(roots)} submitted jobs recorded, not {self.roots}")
        for provider, seen in observed.items():
            sent, _ = sent_jobs(provider, seen)
            failed = [job for job in jobs if job["provider"] == provider and job["status"] == "failed"]
            unsent_lost = [job for job in failed if job["lost_at"] is not None and job["id"] not in sent]
            if len(unsent_lost) != len(failed) or len(unsent_lost) > self.limit:
                reasons = {job["id"]: job["error"] for job in failed}
                problems.append(f"{provider}: {len(failed)} jobs failed (job id: error): {reasons}")
        return problems

    def missing_followups(self, jobs: list[Row]) -> list[str]:
        """Succeeded jobs whose depth's rule has not followed them up (yet)."""
        children = {(job["parent_id"], job["rule"]) for job in jobs if job["rule"]}
        return [
            f"{job['id']} (depth {job['depth']}) has no {self.follows[job['depth']]} follow-up"
            for job in jobs
            if job["status"] == "succeeded"
            and job["depth"] in self.follows
            and (job["id"], self.follows[job["depth"]]) not in children
        ]


def sent_jobs(provider: str, seen: Row) -> tuple[collections.Counter[str], list[str]]:
    """Which of our jobs the simulator took, and how often: each submission's hook URL carries its job's token."""
    signer = HookSigner([SECRET], max_age=86400)
    sent: collections.Counter[str] = collections.Counter()
    strangers = []
    for submission in seen["submissions"]:
        if submission["status_code"] != 200:
            continue
        token = str(submission["body"].get(HOOK_FIELDS[provider], "")).rsplit("/", 1)[-1]
        try:
            sent[signer.verify_hook_token(token, provider).job_id] += 1
        except BadHookToken:
            strangers.append(f"{provider}: a submission whose hook URL names no job of ours: {submission['body']}")
    return sent, strangers


async def in_the_bucket(s3_server: S3Server, media_url: str, jobs: list[Row], videos: list[Row]) -> list[str]:
    """Every recorded file is in the bucket once, with the bytes the provider's CDN served and the sha256 the
    database records; the bucket holds no media file the database does not know (a second copy, a stray key).
    Staging keys (`.uploads/`) are not media: an upload killed before its copy leaves one, for a lifecycle rule."""
    problems = []
    provider_job_ids = {job["id"]: job["provider_job_id"] for job in jobs}
    listing = S3Store.from_url(
        media_url,
        config={"endpoint": s3_server.endpoint, "region": REGION, "access_key_id": ACCESS_KEY,
                "secret_access_key": SECRET_KEY},
        client_options={"allow_http": True},
    )  # fmt: skip
    keys = {meta["path"] for page in obstore.list(listing) for meta in page}
    media = {key for key in keys if key.endswith((".mp4", ".png")) and not key.startswith(".")}
    recorded = {video["path"] for video in videos if video["path"]}
    problems += [f"bucket: {key} is not a file the database records" for key in sorted(media - recorded)]
    reader = s3_server.store(media_url)
    for video in videos:
        key = video["path"]
        if video["status"] != "downloaded" or key not in media:
            problems.append(f"video {video['job_id']}/{video['idx']} is {video['status']}, not in the bucket ({key})")
            continue
        content = b"".join([piece async for piece in reader.read(key)])
        cdn_id = video["url"].split("/cdn/", 1)[1].split("/", 1)[0]
        actual = hashlib.sha256(content).hexdigest()
        if not str(provider_job_ids[video["job_id"]]).endswith(cdn_id):
            problems.append(f"bucket: {key} came from {video['url']}, not a file of its job")
        elif not actual == video["sha256"] == expected_sha256(cdn_id, video["idx"]):
            problems.append(f"bucket: {key} has sha256 {actual}, the database says {video['sha256']}")
    return problems


async def in_the_queues(database_url: str) -> list[str]:
    """Nothing left queued, in flight, pending or unclaimed in any queue."""
    jobs, videos = await database_rows(database_url)
    problems = [f"job {job['id']} is still {job['status']}" for job in jobs if job["status"] not in ENDED]
    problems += [f"video {v['job_id']}/{v['idx']} is still {v['status']}" for v in videos if v["status"] == "pending"]
    problems += [f"{count} {what}" for what, count in (await count_unfinished(database_url)).items() if count]
    return problems


async def database_rows(database_url: str) -> tuple[list[Row], list[Row]]:
    async with await psycopg.AsyncConnection.connect(database_url, row_factory=dict_row) as conn:
        jobs = await (await conn.execute("SELECT * FROM jobs ORDER BY created_at")).fetchall()
        videos = await (await conn.execute("SELECT * FROM videos ORDER BY job_id, idx")).fetchall()
    return jobs, videos


async def count_unfinished(database_url: str) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cursor = await conn.execute(
            """SELECT (SELECT count(*) FROM events WHERE processed_at IS NULL),
                      (SELECT count(*) FROM notifications WHERE delivered_at IS NULL)"""
        )
        row = await cursor.fetchone()
    assert row is not None
    return {"events unprocessed": int(row[0]), "notifications undelivered": int(row[1])}
