"""A job is named by its id or a unique prefix of at least six hex characters, the same for the API's reads, its
follow-ups' parent_id, cancel and the dashboard's job page (receiver/web/reads.py `find_job`)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from tests.receiver.conftest import AUTH, Harness, ttapi_callback
from tests.receiver.web.test_dashboard import sign_in
from tests.receiver.web.test_job_verbs import queued

pytestmark = pytest.mark.anyio

FIRST, SECOND, THIRD = "abcdef00" + "0" * 23 + "1", "abcdef00" + "0" * 23 + "2", "abcdef11" + "0" * 24


def rename_job(db_path: Path, old: str, new: str) -> None:
    """Give a job a chosen id (ids are random uuid hex), everywhere it is referred to."""
    with closing(sqlite3.connect(db_path)) as db:
        db.execute("PRAGMA foreign_keys = OFF")
        with db:
            for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                for column in {"job_id", "root_id", "parent_id"} & columns:
                    db.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", (new, old))
            db.execute("UPDATE jobs SET id = ? WHERE id = ?", (new, old))


async def three_jobs(harness: Harness) -> None:
    """FIRST and SECOND share the prefix abcdef00; THIRD alone starts abcdef11 and is queued."""
    rename_job(harness.db_path, await harness.submitted_job("tt-a"), FIRST)
    rename_job(harness.db_path, await harness.submitted_job("tt-b"), SECOND)
    rename_job(harness.db_path, await queued(harness), THIRD)


async def test_a_unique_prefix_names_the_job_an_ambiguous_one_is_409_a_short_one_404(harness: Harness) -> None:
    await three_jobs(harness)
    found = await harness.client.get("/api/jobs/abcdef11", headers=AUTH)
    assert found.status_code == 200 and found.json()["id"] == THIRD
    assert (await harness.client.get("/api/jobs/ABCDEF1", headers=AUTH)).json()["id"] == THIRD
    assert (await harness.client.get("/api/jobs/abcdef11/timeline", headers=AUTH)).json()["job"]["id"] == THIRD

    ambiguous = await harness.client.get("/api/jobs/abcdef00", headers=AUTH)
    assert ambiguous.status_code == 409 and ambiguous.json()["error"] == "ambiguous"
    assert FIRST in ambiguous.json()["detail"] and SECOND in ambiguous.json()["detail"]
    assert (await harness.client.get("/api/jobs/abcdef00/timeline", headers=AUTH)).status_code == 409
    assert (await harness.client.get(f"/api/jobs/{FIRST}", headers=AUTH)).json()["id"] == FIRST  # whole id: exact

    assert (await harness.client.get("/api/jobs/abcde", headers=AUTH)).status_code == 404  # under six characters
    assert (await harness.client.get("/api/jobs/fedcba", headers=AUTH)).status_code == 404
    assert (await harness.client.get("/api/jobs/tt-a", headers=AUTH)).status_code == 404  # provider ids are q's


async def test_cancel_and_a_follow_up_take_a_prefix(harness: Harness) -> None:
    await three_jobs(harness)
    cancelled = await harness.client.post("/api/jobs/abcdef1/cancel", headers=AUTH)
    assert cancelled.status_code == 200 and cancelled.json() == {"cancelled": THIRD}
    assert (await harness.client.post("/api/jobs/abcdef0/retry", headers=AUTH)).status_code == 409

    parent = "bbbbbb" + "0" * 26
    rename_job(harness.db_path, await harness.submitted_job("tt-parent"), parent)  # hook tokens sign the new id
    assert (
        await harness.client.post(harness.hook_path(parent), content=ttapi_callback("tt-parent"))
    ).status_code == 200
    body = {"action": "extend", "parent_id": "bbbbbb", "index": 0}
    extend = await harness.client.post("/api/jobs", headers=AUTH, json=body)
    assert extend.status_code == 201 and extend.json()["parent_id"] == parent
    body = {"action": "extend", "parent_id": "abcdef00", "index": 0}
    assert (await harness.client.post("/api/jobs", headers=AUTH, json=body)).status_code == 409


async def test_the_dashboard_job_page_takes_a_prefix(harness: Harness) -> None:
    await three_jobs(harness)
    await sign_in(harness)
    page = await harness.client.get("/jobs/abcdef11")
    assert page.status_code == 200 and THIRD in page.text
    assert (await harness.client.get("/jobs/abcdef00")).status_code == 404  # ambiguous: the jobs search lists both
