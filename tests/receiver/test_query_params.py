"""Issue 11.5b: an API route answers 400 to a query parameter it does not read, naming it and the ones it does, so a
misspelt filter (`?provder=`) is never quietly answered as if there were none."""

from __future__ import annotations

import pytest
from starlette.routing import Route

from tests.receiver.conftest import AUTH, Harness

pytestmark = pytest.mark.anyio

JOBS_TAKES = "GET /api/jobs takes status, limit, cursor, provider, action, rule, root, q"


async def test_an_unknown_jobs_filter_is_a_400_naming_it_and_the_known_ones(harness: Harness) -> None:
    response = await harness.client.get("/api/jobs?provder=ttapi&limit=5&zz=1", headers=AUTH)
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_query",
        "detail": f"unknown query parameters provder, zz; {JOBS_TAKES}",
    }
    assert (await harness.client.get("/api/jobs?provider=ttapi&limit=5&q=", headers=AUTH)).status_code == 200


def api_routes(harness: Harness) -> list[tuple[str, str]]:
    routes = [route for route in harness.app.routes if isinstance(route, Route) and route.path.startswith("/api/")]
    return [(method, route.path) for route in routes for method in sorted(route.methods or ()) if method != "HEAD"]


async def test_every_other_api_route_refuses_any_query_and_records_nothing(harness: Harness) -> None:
    job_id = await harness.submitted_job()
    routes = [(method, path) for method, path in api_routes(harness) if (method, path) != ("GET", "/api/jobs")]
    assert len(routes) >= 12  # every route is asked: a new one that forgot the check fails here
    before = harness.snapshot()
    for method, path in routes:
        url = path.replace("{job_id}", job_id)
        response = await harness.client.request(method, f"{url}?dry_run=1", headers=AUTH, json={})
        assert response.status_code == 400, (method, path, response.text)
        assert response.json() == {
            "error": "invalid_query",
            "detail": f"unknown query parameter dry_run; {method} {url} takes no query parameters",
        }
    assert harness.snapshot() == before


async def test_without_the_token_it_is_still_401(harness: Harness) -> None:
    response = await harness.client.post("/api/pause?dry_run=1")
    assert response.status_code == 401
    assert (await harness.client.get("/api/status", headers=AUTH)).json()["paused"] is None
