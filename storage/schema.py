"""The database schema, as an ordered list of migrations.

`PRAGMA user_version` records how many have run. A migration is appended, never edited: a database written by
an older reelhook is brought forward on open, inside one transaction per step.
"""

from __future__ import annotations

import aiosqlite

MIGRATIONS: tuple[str, ...] = (
    # 1: jobs, callbacks, videos, events.
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        provider TEXT NOT NULL,
        action TEXT NOT NULL,
        status TEXT NOT NULL,
        params TEXT NOT NULL,               -- JSON: what was asked for (prompt, image_url, index, ...)
        provider_job_id TEXT,
        parent_id TEXT REFERENCES jobs(id),
        root_id TEXT NOT NULL,
        depth INTEGER NOT NULL,
        rule TEXT,
        origin TEXT UNIQUE,                 -- "rule:source-job:index" for follow-ups: at most one job each
        error TEXT,
        progress INTEGER,
        result TEXT NOT NULL DEFAULT '{}',  -- JSON: provider fields kept from the final callback
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (provider, provider_job_id)
    );
    CREATE INDEX jobs_status_provider ON jobs (status, provider, next_attempt_at);
    CREATE INDEX jobs_created ON jobs (created_at, id);
    CREATE INDEX jobs_root ON jobs (root_id);

    CREATE TABLE callbacks (
        id INTEGER PRIMARY KEY,
        job_id TEXT NOT NULL REFERENCES jobs(id),
        provider TEXT NOT NULL,
        received_at REAL NOT NULL,
        headers TEXT NOT NULL,              -- JSON list of [name, value]
        body BLOB NOT NULL,                 -- exactly the bytes received
        status TEXT NOT NULL,               -- what the provider reported
        effect TEXT NOT NULL                -- applied | progress | duplicate
    );
    CREATE INDEX callbacks_job ON callbacks (job_id);

    CREATE TABLE videos (
        job_id TEXT NOT NULL REFERENCES jobs(id),
        idx INTEGER NOT NULL,
        url TEXT NOT NULL,
        status TEXT NOT NULL,
        path TEXT,
        sha256 TEXT,
        bytes INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        error TEXT,
        updated_at REAL NOT NULL,
        PRIMARY KEY (job_id, idx)
    );
    CREATE INDEX videos_due ON videos (status, next_attempt_at);

    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        type TEXT NOT NULL,
        job_id TEXT NOT NULL REFERENCES jobs(id),
        video_index INTEGER,
        created_at REAL NOT NULL,
        processed_at REAL
    );
    CREATE INDEX events_pending ON events (processed_at, id);
    """,
    # 2: the notification outbox (rules' `notify`): each is recorded with its event, sent until answered 2xx.
    """
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY,
        event_id INTEGER NOT NULL REFERENCES events(id),
        rule TEXT NOT NULL,
        url TEXT NOT NULL,
        message_id TEXT NOT NULL UNIQUE,    -- webhook-id: the same on every retry, so receivers can deduplicate
        body BLOB NOT NULL,                 -- fixed when recorded: a retry sends the same bytes
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        delivered_at REAL,
        error TEXT,
        created_at REAL NOT NULL,
        UNIQUE (event_id, rule)
    );
    CREATE INDEX notifications_due ON notifications (delivered_at, next_attempt_at);
    """,
    # 3: money guards and missed-callback recovery: service flags (pause), notes on jobs (why a follow-up was
    # stopped), and when a job's provider was asked about a callback that never came.
    """
    ALTER TABLE jobs ADD COLUMN reconciled_at REAL;
    CREATE TABLE flags (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE job_notes (
        id INTEGER PRIMARY KEY,
        job_id TEXT NOT NULL REFERENCES jobs(id),
        rule TEXT,
        message TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX job_notes_job ON job_notes (job_id, id);
    CREATE INDEX jobs_followups_created ON jobs (created_at) WHERE rule IS NOT NULL;
    CREATE INDEX jobs_awaiting ON jobs (status, reconciled_at, updated_at);
    """,
    # 4: indexes the queries need at scale (bench/scale.py, bench/ingest.py): a status's newest jobs without sorting
    # all of them, and the next due download without sorting every pending video.
    """
    CREATE INDEX jobs_status_created ON jobs (status, created_at, id);
    CREATE INDEX videos_pending_order ON videos (status, updated_at, job_id, idx);
    """,
    # 5: every job that left has a deadline (receiver/reconcile.py): when it was sent, when it is next looked up,
    # how often it was, and when it was given up on as lost. Callbacks keep a digest and a delivery id, so a
    # re-delivery is counted instead of stored again, and a pruned body leaves its digest behind.
    """
    ALTER TABLE jobs ADD COLUMN sent_at REAL;
    ALTER TABLE jobs ADD COLUMN lookup_at REAL;
    ALTER TABLE jobs ADD COLUMN lookups INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN lost_at REAL;
    UPDATE jobs SET sent_at = updated_at, lookup_at = updated_at + 900 WHERE status IN ('submitted', 'running');
    CREATE INDEX jobs_lookup_due ON jobs (lookup_at) WHERE status IN ('submitted', 'running');
    DROP INDEX jobs_awaiting;

    ALTER TABLE callbacks ADD COLUMN body_sha256 TEXT;
    ALTER TABLE callbacks ADD COLUMN delivery_id TEXT;       -- webhook-id (Standard Webhooks): same on every retry
    ALTER TABLE callbacks ADD COLUMN deliveries INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE callbacks ADD COLUMN last_received_at REAL;
    ALTER TABLE callbacks ADD COLUMN replaced INTEGER NOT NULL DEFAULT 0;  -- distinct bodies this row stands for
    ALTER TABLE callbacks ADD COLUMN pruned_at REAL;
    CREATE INDEX callbacks_job_digest ON callbacks (job_id, body_sha256);
    CREATE INDEX callbacks_received ON callbacks (received_at) WHERE pruned_at IS NULL;
    """,
    # 6: what a job cost, as its provider reported it (TTAPI `quota`; APIMart `cost` in usd and `credits_cost` in
    # credits: one row per unit, never added across units). Set, not added, with the result that reports it, so a
    # re-delivered result counts once; `recorded_at` is the UTC day it is summed on. The job's provider is copied
    # so that the sums read covering indexes alone (bench: 1M costs, totals 4.3 s with a join to jobs, 0.12 s so).
    """
    CREATE TABLE job_costs (
        job_id TEXT NOT NULL REFERENCES jobs(id),
        provider TEXT NOT NULL,
        unit TEXT NOT NULL,
        amount REAL NOT NULL,
        recorded_at REAL NOT NULL,
        PRIMARY KEY (job_id, unit)
    );
    CREATE INDEX job_costs_day ON job_costs (recorded_at, provider, unit, amount);
    CREATE INDEX job_costs_total ON job_costs (provider, unit, amount);
    """,
    # 7: a downloaded video's `path` holds its media key (`root/job/0.mp4`, the same in a folder or a bucket), not
    # an absolute local path: the key is the last three segments of the old path (the dirname is cut off with the
    # rtrim idiom: rtrim by every character but '/' leaves the dirname and its trailing slash).
    """
    UPDATE videos SET path = (SELECT root_id FROM jobs WHERE jobs.id = videos.job_id) || '/' || job_id || '/'
                             || replace(path, rtrim(path, replace(path, '/', '')), '')
     WHERE path LIKE '/%';
    """,
    # 8: claims fenced by a claim id (storage/claims.py). A claimed download, notification or event carries the id
    # of its claim; its outcome is recorded only under that id, so a worker whose lease ran out and was taken over
    # cannot overwrite the new claimer's work. Events gain their lease as a column, as on PostgreSQL.
    """
    ALTER TABLE videos ADD COLUMN claim_id TEXT;
    ALTER TABLE notifications ADD COLUMN claim_id TEXT;
    ALTER TABLE events ADD COLUMN claimed_until REAL;
    ALTER TABLE events ADD COLUMN claim_id TEXT;
    """,
)


async def migrate(db: aiosqlite.Connection) -> int:
    """Run the migrations this database has not seen; return the schema version."""
    async with db.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    version = int(row[0]) if row else 0
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema version {version} is newer than this reelhook ({len(MIGRATIONS)}): upgrade reelhook"
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        # executescript commits first, so the step and its version bump are wrapped explicitly.
        await db.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    return len(MIGRATIONS)
