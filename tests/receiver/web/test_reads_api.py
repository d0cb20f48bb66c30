"""The API the dashboard reads: job filters and search, a job's timeline, the overview."""

from __future__ import annotations

import json

import pytest

from storage import NewJob, NewNotification
from tests.receiver.conftest import AUTH, Harness, ttapi_callback
from tests.receiver.web.test_dashboard import sign_in

pytestmark = pytest.mark.anyio


async def test_jobs_filter_by_provider_action_rule_root_and_search(harness: Harness) -> None:
    store = harness.store
    first = await harness.submitted_job("tt-first")
    await harness.store.fail_job(first, "gone")  # keeps it out of the submitter's way
    other, _ = await store.create_job(NewJob("ttapi", "imagine", {"prompt": "a dog"}, rule="extend-all"))
    await store.fail_job(other.id, "not wanted")

    async def ids(**params: str) -> list[str]:
        response = await harness.client.get("/api/jobs", headers=AUTH, params=params)
        assert response.status_code == 200, response.text
        return [job["id"] for job in response.json()["jobs"]]

    assert await ids() == [other.id, first]
    assert await ids(action="imagine") == [other.id]
    assert await ids(action="generate") == [first]
    assert await ids(rule="extend-all") == [other.id]
    assert await ids(root=first) == [first]
    assert await ids(provider="acedata") == []
    assert await ids(q="tt-first") == [first]  # the provider's job id
    assert await ids(q=first) == [first]  # the whole id
    assert await ids(q=first[:6].upper()) == [first]  # a prefix, any case
    assert await ids(q="%") == []  # LIKE patterns are not wildcards
    assert await ids(status="", q="") == [other.id, first]  # an empty form field is no filter
    bad = await harness.client.get("/api/jobs", headers=AUTH, params={"q": "a\x00b"})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_query"


async def test_timeline_lists_what_happened_in_order_with_the_callback_body(harness: Harness) -> None:
    job_id = await harness.submitted_job("tt-1")
    body = ttapi_callback("tt-1", videos=1, note="<script>alert(1)</script>")
    assert (await harness.client.post(harness.hook_path(job_id), content=body)).status_code == 200
    response = await harness.client.get(f"/api/jobs/{job_id}/timeline", headers=AUTH)
    assert response.status_code == 200
    found = response.json()
    kinds = [item["kind"] for item in found["timeline"]]
    assert kinds[:2] == ["created", "sent"] and "callback" in kinds and "download" in kinds
    assert found["timeline"][0]["by"] == "a person (API)"
    sent = found["timeline"][1]
    assert sent["params"]["prompt"] == "a cat" and sent["answer"] == "tt-1"  # what was asked, what it answered
    callback = next(item for item in found["timeline"] if item["kind"] == "callback")
    assert callback["status"] == "succeeded" and callback["effect"] == "applied"
    assert callback["body"] == body.decode()
    assert [item["at"] for item in found["timeline"]] == sorted(item["at"] for item in found["timeline"])
    [node] = found["chain"]
    assert isinstance(node.pop("pending_events"), int)  # how many the events worker has handled yet is its business
    assert node == {"id": job_id, "action": "generate", "status": "succeeded", "depth": 0,
                    "created_at": found["job"]["created_at"], "children": []}  # fmt: skip
    assert (await harness.client.get(f"/api/jobs/{job_id}/timeline")).status_code == 401
    assert (await harness.client.get("/api/jobs/nope/timeline", headers=AUTH)).status_code == 404


async def test_chain_is_a_tree_from_the_root(harness: Harness) -> None:
    root = await harness.submitted_job("tt-1")
    await harness.client.post(harness.hook_path(root), content=ttapi_callback("tt-1", videos=2))
    child, _ = await harness.store.create_job(NewJob("ttapi", "extend", {"index": 0}, parent_id=root))
    grandchild, _ = await harness.store.create_job(NewJob("ttapi", "extend", {"index": 0}, parent_id=child.id))
    found = (await harness.client.get(f"/api/jobs/{grandchild.id}/timeline", headers=AUTH)).json()
    [tree] = found["chain"]
    assert tree["id"] == root
    assert [c["id"] for c in tree["children"]] == [child.id]
    assert [c["id"] for c in tree["children"][0]["children"]] == [grandchild.id]


async def test_overview_counts_per_provider_and_the_last_callback(harness: Harness) -> None:
    empty = (await harness.client.get("/api/overview", headers=AUTH)).json()
    assert empty["paused"] is None
    assert empty["providers"][0] | {"limit": None} == {
        "provider": "ttapi", "in_flight": 0, "limit": None, "queued": 0, "overdue": 0, "lost_today": 0,
        "succeeded_today": 0, "failed_today": 0,
        "downloads_pending": 0, "downloads_failed": 0, "last_callback_at": None, "last_callback_seconds_ago": None,
        "spent_today": {},
    }  # fmt: skip
    job_id = await harness.submitted_job("tt-1")
    in_flight = (await harness.client.get("/api/overview", headers=AUTH)).json()["providers"][0]
    assert in_flight["in_flight"] == 1 and in_flight["limit"] >= 1
    await harness.client.post(harness.hook_path(job_id), content=ttapi_callback("tt-1", videos=2))
    await harness.client.post("/api/pause", headers=AUTH, json={"reason": "budget"})
    after = (await harness.client.get("/api/overview", headers=AUTH)).json()
    ttapi = after["providers"][0]
    assert after["paused"] == "budget"
    assert ttapi["in_flight"] == 0 and ttapi["succeeded_today"] == 1
    assert ttapi["downloads_pending"] + ttapi["downloads_failed"] == 2
    assert ttapi["last_callback_at"] is not None and 0 <= ttapi["last_callback_seconds_ago"] < 60
    assert (await harness.client.get("/api/overview")).status_code == 401
    assert (after["notifications_pending"], after["followups_queued"]) == (0, 0)
    await harness.store.create_job(NewJob("ttapi", "extend", {"index": 0}, parent_id=job_id, rule="r", origin="r:x"))
    held = (await harness.client.get("/api/overview", headers=AUTH)).json()
    assert held["followups_queued"] == 1
    await sign_in(harness)
    page = (await harness.client.get("/")).text
    assert "1 rule follow-ups held by the pause" in page


async def test_the_timeline_shows_the_follow_ups_rules_fired_and_the_notifications_sent(harness: Harness) -> None:
    root = await harness.submitted_job("tt-1")
    await harness.client.post(harness.hook_path(root), content=ttapi_callback("tt-1", videos=1))
    [event] = [e for e in await harness.store.pending_events() if e.job_id == root and e.type == "job.succeeded"]
    followup = NewJob("ttapi", "extend", {"index": 0}, parent_id=root, rule="extend-first", origin="extend-first:x:0")
    notify = NewNotification("tell-me", "https://hooks.example.com/in?key=secret-in-query", b"{}")
    [child] = await harness.store.complete_event(event.id, [followup], [notify])
    timeline = (await harness.client.get(f"/api/jobs/{root}/timeline", headers=AUTH)).json()["timeline"]
    fired = [item for item in timeline if item["kind"] == "fired"]
    assert [(f["rule"], f["child_id"], f["action"]) for f in fired] == [("extend-first", child, "extend")]
    [sent] = [item for item in timeline if item["kind"] == "notification"]
    assert (sent["rule"], sent["host"], sent["delivered_at"]) == ("tell-me", "hooks.example.com", None)
    assert "secret-in-query" not in json.dumps(timeline)
