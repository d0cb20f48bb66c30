"""The PostgreSQL schema, as an ordered list of migrations, and the step that brings a database forward.

`reelhook_migrations` records each migration run. A migration is appended, never edited. Several instances may
start at once against one database, so migrating takes a transaction-scoped advisory lock first: one instance
migrates, the others wait and then find nothing left to do. DDL is transactional in PostgreSQL, so a step that
fails leaves nothing half-made.

The tables mirror SQLite's (storage/schema.py: its 1-5 are this 1, its 6 this 2, its 8 this 3) column for column,
so that both engines hold the same records, with PostgreSQL's types: identity ids, `bytea` for the bytes a
provider or a rule sent, `double precision` epoch seconds for times (passed from Python, as on SQLite, so that
"due" means the store's clock on both). JSON is kept as text, as on SQLite: jsonb refuses the `\\u0000` a
provider's JSON may carry.
SQLite's 7 (media keys for local paths) has no twin here: no PostgreSQL database ever held local paths.
"""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import DictRow

MIGRATIONS: tuple[str, ...] = (
    # 1: everything SQLite's migrations 1-5 made, and the events' lease.
    """
    CREATE TABLE jobs (
        id text PRIMARY KEY,
        provider text NOT NULL,
        action text NOT NULL,
        status text NOT NULL,
        params text NOT NULL,
        provider_job_id text,
        parent_id text REFERENCES jobs(id),
        root_id text NOT NULL,
        depth integer NOT NULL,
        rule text,
        origin text UNIQUE,
        error text,
        progress integer,
        result text NOT NULL DEFAULT '{}',
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at double precision,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL,
        reconciled_at double precision,
        sent_at double precision,
        lookup_at double precision,
        lookups integer NOT NULL DEFAULT 0,
        lost_at double precision,
        UNIQUE (provider, provider_job_id)
    );
    CREATE INDEX jobs_status_provider ON jobs (status, provider, next_attempt_at);
    CREATE INDEX jobs_created ON jobs (created_at, id);
    CREATE INDEX jobs_root ON jobs (root_id);
    CREATE INDEX jobs_followups_created ON jobs (created_at) WHERE rule IS NOT NULL;
    CREATE INDEX jobs_status_created ON jobs (status, created_at, id);
    CREATE INDEX jobs_lookup_due ON jobs (lookup_at) WHERE status IN ('submitted', 'running');

    CREATE TABLE callbacks (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        job_id text NOT NULL REFERENCES jobs(id),
        provider text NOT NULL,
        received_at double precision NOT NULL,
        headers text NOT NULL,
        body bytea NOT NULL,
        status text NOT NULL,
        effect text NOT NULL,
        body_sha256 text,
        delivery_id text,
        deliveries integer NOT NULL DEFAULT 1,
        last_received_at double precision,
        replaced integer NOT NULL DEFAULT 0,
        pruned_at double precision
    );
    CREATE INDEX callbacks_job ON callbacks (job_id);
    CREATE INDEX callbacks_job_digest ON callbacks (job_id, body_sha256);
    CREATE INDEX callbacks_received ON callbacks (received_at) WHERE pruned_at IS NULL;

    CREATE TABLE videos (
        job_id text NOT NULL REFERENCES jobs(id),
        idx integer NOT NULL,
        url text NOT NULL,
        status text NOT NULL,
        path text,
        sha256 text,
        bytes bigint,
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at double precision,
        error text,
        updated_at double precision NOT NULL,
        PRIMARY KEY (job_id, idx)
    );
    CREATE INDEX videos_due ON videos (status, next_attempt_at);
    CREATE INDEX videos_pending_order ON videos (status, updated_at, job_id, idx);

    CREATE TABLE events (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        type text NOT NULL,
        job_id text NOT NULL REFERENCES jobs(id),
        video_index integer,
        created_at double precision NOT NULL,
        processed_at double precision,
        claimed_until double precision
    );
    CREATE INDEX events_pending ON events (id) WHERE processed_at IS NULL;
    CREATE INDEX events_job ON events (job_id);

    CREATE TABLE notifications (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id bigint NOT NULL REFERENCES events(id),
        rule text NOT NULL,
        url text NOT NULL,
        message_id text NOT NULL UNIQUE,
        body bytea NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at double precision,
        delivered_at double precision,
        error text,
        created_at double precision NOT NULL,
        UNIQUE (event_id, rule)
    );
    CREATE INDEX notifications_due ON notifications (id) WHERE delivered_at IS NULL;

    CREATE TABLE flags (
        name text PRIMARY KEY,
        value text NOT NULL,
        updated_at double precision NOT NULL
    );
    CREATE TABLE job_notes (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        job_id text NOT NULL REFERENCES jobs(id),
        rule text,
        message text NOT NULL,
        created_at double precision NOT NULL
    );
    CREATE INDEX job_notes_job ON job_notes (job_id, id);
    """,
    # 2: SQLite's 6, what a job cost as its provider reported it (storage/schema.py says why it is shaped so).
    """
    CREATE TABLE job_costs (
        job_id text NOT NULL REFERENCES jobs(id),
        provider text NOT NULL,
        unit text NOT NULL,
        amount double precision NOT NULL,
        recorded_at double precision NOT NULL,
        PRIMARY KEY (job_id, unit)
    );
    CREATE INDEX job_costs_day ON job_costs (recorded_at, provider, unit, amount);
    CREATE INDEX job_costs_total ON job_costs (provider, unit, amount);
    """,
    # 3: SQLite's 8, claims fenced by a claim id (storage/postgres/claims.py).
    """
    ALTER TABLE videos ADD COLUMN claim_id text;
    ALTER TABLE notifications ADD COLUMN claim_id text;
    ALTER TABLE events ADD COLUMN claim_id text;
    """,
)


async def migrate(conn: AsyncConnection[DictRow]) -> int:
    """Run the migrations this database has not seen, all in one transaction; return the schema version."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('reelhook:migrate', 0))")
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS reelhook_migrations (
                   version integer PRIMARY KEY,
                   applied_at timestamptz NOT NULL DEFAULT now()
               )"""
        )
        cursor = await conn.execute("SELECT coalesce(max(version), 0) AS version FROM reelhook_migrations")
        row = await cursor.fetchone()
        version = int(row["version"]) if row else 0
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"database schema version {version} is newer than this reelhook ({len(MIGRATIONS)}): upgrade reelhook"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await conn.execute(script.encode())  # bytes: several statements, sent as one simple query
            await conn.execute("INSERT INTO reelhook_migrations (version) VALUES (%s)", (number,))
    return len(MIGRATIONS)
