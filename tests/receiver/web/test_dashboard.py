"""The dashboard over HTTP, in process: signing in, the guards on every route, escaping, buttons, live events."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from starlette.routing import Route

from receiver.web import dashboard
from receiver.web.auth import COOKIE
from tests.receiver.conftest import API_TOKEN, AUTH, Harness, ttapi_callback

pytestmark = pytest.mark.anyio

ORIGIN = {"origin": "http://testserver"}
GUARDED = [r for r in dashboard.routes() if isinstance(r, Route) and not r.path.startswith(("/login", "/api/"))]


async def sign_in(harness: Harness) -> None:
    response = await harness.client.post("/login", data={"token": API_TOKEN, "next": "/jobs"}, headers=ORIGIN)
    assert response.status_code == 303 and response.headers["location"] == "/jobs"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=lax" in cookie


def concrete(path: str, job_id: str) -> str:
    return path.replace("{job_id}", job_id)


@pytest.mark.parametrize("forged", [None, "forged.value.sig"])
async def test_every_route_needs_a_session(harness: Harness, forged: str | None) -> None:
    job_id = await harness.submitted_job()
    if forged:
        harness.client.cookies.set(COOKIE, forged)
    for route in GUARDED:
        assert route.methods is not None
        path = concrete(route.path, job_id)
        if "POST" in route.methods:
            response = await harness.client.post(path, headers=ORIGIN, data={})
            expected = 303 if path == "/logout" else 401
        else:
            response = await harness.client.get(path)
            expected = 401 if path.startswith(("/partials", "/events")) else 303
        assert response.status_code == expected, path
        if expected == 303 and path != "/logout":
            assert response.headers["location"].startswith("/login?next="), path


async def test_a_session_signed_with_another_secret_is_refused(harness: Harness) -> None:
    from itsdangerous import URLSafeTimedSerializer

    other = URLSafeTimedSerializer("not-our-secret", salt="reelhook.session").dumps("x")
    harness.client.cookies.set(COOKIE, other)
    assert (await harness.client.get("/")).status_code == 303


async def test_sign_in_good_bad_and_rate_limited(harness: Harness) -> None:
    form = await harness.client.get("/login")
    assert form.status_code == 200 and 'id="login"' in form.text and 'name="token"' in form.text
    for _ in range(5):
        bad = await harness.client.post("/login", data={"token": "wrong"}, headers=ORIGIN)
        assert bad.status_code == 401 and COOKIE not in harness.client.cookies
    limited = await harness.client.post("/login", data={"token": API_TOKEN}, headers=ORIGIN)
    assert limited.status_code == 429 and COOKIE not in harness.client.cookies
    harness.app.state.sessions._failures.clear()  # a minute later
    await sign_in(harness)
    assert (await harness.client.get("/")).status_code == 200
    out = await harness.client.post("/logout", headers=ORIGIN)
    assert out.status_code == 303
    assert (await harness.client.get("/")).status_code == 303


async def test_sign_in_from_another_site_is_refused(harness: Harness) -> None:
    evil = {"origin": "https://evil.example"}
    assert (await harness.client.post("/login", data={"token": API_TOKEN}, headers=evil)).status_code == 403
    assert (await harness.client.post("/login", data={"token": API_TOKEN})).status_code == 403  # neither header
    referer = {"referer": "http://testserver/login"}
    assert (await harness.client.post("/login", data={"token": API_TOKEN}, headers=referer)).status_code == 303


async def test_one_time_link_signs_in_once(harness: Harness) -> None:
    assert (await harness.client.post("/api/login-link")).status_code == 401
    made = await harness.client.post("/api/login-link", headers=AUTH)
    url = made.json()["url"]
    assert url.startswith("http://testserver/login/")
    path = url.removeprefix("http://testserver")
    first = await harness.client.get(path)
    assert first.status_code == 303 and COOKIE in harness.client.cookies
    harness.client.cookies.clear()
    again = await harness.client.get(path)
    assert again.status_code == 401 and COOKIE not in harness.client.cookies
    assert (await harness.client.get("/login/garbage")).status_code == 401


async def test_a_button_from_another_origin_is_refused(harness: Harness) -> None:
    await sign_in(harness)
    response = await harness.client.post("/pause", data={"reason": "x"}, headers={"origin": "https://evil.example"})
    assert response.status_code == 403
    assert (await harness.client.get("/api/status", headers=AUTH)).json()["paused"] is None
    response = await harness.client.post("/pause", data={"reason": "budget"}, headers=ORIGIN)
    assert response.status_code == 303
    assert (await harness.client.get("/api/status", headers=AUTH)).json()["paused"] == "budget"
    page = await harness.client.get("/")
    assert 'data-paused="true"' in page.text and "budget" in page.text
    assert (await harness.client.post("/resume", headers=ORIGIN)).status_code == 303
    assert (await harness.client.get("/api/status", headers=AUTH)).json()["paused"] is None


async def test_pages_escape_job_data(harness: Harness) -> None:
    job_id = await harness.submitted_job("tt-1", prompt="<script>alert(1)</script>")
    body = ttapi_callback("tt-1", videos=2, message="<img src=x onerror=alert(2)>")
    assert (await harness.client.post(harness.hook_path(job_id), content=body)).status_code == 200
    await sign_in(harness)
    for path in ("/jobs", f"/jobs/{job_id}", f"/partials/jobs/{job_id}", "/partials/jobs", "/gallery", "/"):
        page = await harness.client.get(path)
        assert page.status_code == 200, path
        assert "<script>alert" not in page.text and "<img src=x" not in page.text, path
    jobs = (await harness.client.get("/jobs")).text
    assert 'id="jobs-table"' in jobs and f'data-job-id="{job_id}"' in jobs and 'data-status="succeeded"' in jobs
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in jobs
    job = (await harness.client.get(f"/jobs/{job_id}")).text
    assert 'id="timeline"' in job and 'id="chain"' in job and "&lt;img src=x onerror=alert(2)&gt;" in job
    assert 'data-action="extend" data-index="0"' in job and 'data-action="extend" data-index="1"' in job


async def test_filters_and_search_on_the_jobs_page(harness: Harness) -> None:
    first = await harness.submitted_job("tt-first")
    second = await harness.submitted_job("tt-second")
    await sign_in(harness)

    async def rows(**params: str) -> int:
        page = await harness.client.get("/partials/jobs", params=params)
        return sum(page.text.count(f'data-job-id="{job_id}"') for job_id in (first, second))

    assert await rows() == 2
    assert await rows(q="tt-second") == 1 and second in (await harness.client.get("/jobs?q=tt-second")).text
    assert await rows(q=first[:8]) == 1
    assert await rows(status="queued") == 0
    assert await rows(limit="1") == 1
    bad = await harness.client.get("/jobs", params={"status": "<b>nope</b>"})
    assert bad.status_code == 400 and "<b>nope" not in bad.text


async def test_extend_button_runs_the_api_path_and_shows_its_error(harness: Harness) -> None:
    job_id = await harness.submitted_job("tt-1")
    await sign_in(harness)
    refused = await harness.client.post(f"/jobs/{job_id}/extend", data={"index": "0"}, headers=ORIGIN)
    assert refused.status_code == 409 and "only a succeeded job can be followed up" in refused.text
    await harness.client.post(harness.hook_path(job_id), content=ttapi_callback("tt-1", videos=2))
    made = await harness.client.post(f"/jobs/{job_id}/extend", data={"index": "1"}, headers=ORIGIN)
    assert made.status_code == 303
    child_id = made.headers["location"].removeprefix("/jobs/")
    child = (await harness.client.get(f"/api/jobs/{child_id}", headers=AUTH)).json()
    assert child["parent_id"] == job_id and child["action"] == "extend" and child["params"]["index"] == 1
    page = (await harness.client.get(f"/jobs/{child_id}")).text
    assert 'class="current"' in page and f'data-job-id="{job_id}"' in page
    bad = await harness.client.post(f"/jobs/{job_id}/extend", data={"index": "7"}, headers=ORIGIN)
    assert bad.status_code == 400 and "index must be 0-1" in bad.text


async def read_events(harness: Harness, until: str, trigger: Any = None, timeout: float = 5.0) -> str:
    """Run GET /events in process and return what it sent once `until` appears (httpx's ASGITransport would wait
    for the end of an endless stream)."""
    cookie = harness.client.cookies[COOKIE]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": "/events", "raw_path": b"/events", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver"), (b"cookie", f"{COOKIE}={cookie}".encode())],
        "client": ("127.0.0.1", 1), "server": ("testserver", 80), "state": {},
    }  # fmt: skip
    received = b""
    done = anyio.Event()
    started = anyio.Event()

    async def receive() -> dict[str, Any]:
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal received
        if message["type"] == "http.response.start":
            assert message["status"] == 200
        received += message.get("body", b"")
        if b": connected" in received:
            started.set()
        if until.encode() in received:
            done.set()

    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as tg:
            tg.start_soon(harness.app, scope, receive, send)
            await started.wait()
            if trigger is not None:
                await trigger()
            await done.wait()
            tg.cancel_scope.cancel()
    return received.decode()


async def test_events_send_a_change_after_a_callback_is_stored(harness: Harness) -> None:
    job_id = await harness.submitted_job("tt-1")
    await sign_in(harness)

    async def callback() -> None:
        response = await harness.client.post(harness.hook_path(job_id), content=ttapi_callback("tt-1", videos=1))
        assert response.status_code == 200 and json.loads(response.content)["effect"] == "applied"

    stream = await read_events(harness, "event: change", callback)
    assert stream.count("event: change") == 1  # the callback's burst of wake-ups is one message


async def test_events_need_a_session(harness: Harness) -> None:
    assert (await harness.client.get("/events")).status_code == 401
