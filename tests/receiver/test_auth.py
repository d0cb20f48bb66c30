"""Every `/api/*` route refuses a request without the API token, and records nothing for it.

The routes come from the app itself, so a route added tomorrow is in this test without anyone remembering it."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from starlette.routing import BaseRoute, Mount, Route

from receiver.app import create_app
from receiver.rules import RuleSet
from tests.receiver.conftest import API_TOKEN, Harness, make_settings

pytestmark = pytest.mark.anyio

ANY_METHOD = ("GET", "POST", "PUT", "PATCH", "DELETE")
BODY = {"provider": "ttapi", "action": "generate", "prompt": "a cat", "image_url": "https://img.example/a.png"}


def api_routes(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path template) of every HTTP route under /api/, through any Mount (a mounted app without routes of
    its own counts as one route at its prefix)."""
    for route in routes:
        if isinstance(route, Mount) and route.routes:
            yield from api_routes(route.routes, prefix + route.path)
        elif isinstance(route, Route | Mount) and (prefix + route.path).startswith("/api/"):
            methods = (isinstance(route, Route) and route.methods) or ANY_METHOD
            for method in sorted(set(methods) - {"HEAD"}):  # Starlette adds HEAD to every GET
                yield method, prefix + route.path


ROUTES = sorted(set(api_routes(create_app(make_settings(Path("unused")), rules=RuleSet.empty()).routes)))


def wrong_credentials(harness: Harness, job_id: str) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """name -> (headers, query) of a request that must not pass. The last is a valid credential of reelhook's other
    scheme: a job's own hook token."""
    hook_token = harness.hook_path(job_id).rsplit("/", 1)[1]
    return {
        "no header": ({}, {}),
        "an empty header": ({"Authorization": ""}, {}),
        "a wrong token": ({"Authorization": "Bearer wrong"}, {}),
        "the token and more": ({"Authorization": f"Bearer {API_TOKEN}x"}, {}),
        "the token without a scheme": ({"Authorization": API_TOKEN}, {}),
        "the token under Basic": ({"Authorization": f"Basic {API_TOKEN}"}, {}),
        "the token in the query": ({}, {"token": API_TOKEN, "access_token": API_TOKEN}),
        "a hook token": ({"Authorization": f"Bearer {hook_token}"}, {}),
    }


def test_the_api_routes_are_found() -> None:
    # Not vacuous: the enumeration sees the routes known today (and so would see one added later).
    assert {
        ("POST", "/api/jobs"),
        ("GET", "/api/jobs/{job_id}"),
        ("POST", "/api/pause"),
        ("GET", "/api/status"),
    } <= set(ROUTES)


@pytest.mark.parametrize(("method", "template"), ROUTES)
async def test_every_api_route_needs_the_token(harness: Harness, method: str, template: str) -> None:
    job_id = await harness.submitted_job()  # a real job, so a route that forgot the check would find something
    path = re.sub(r"\{[^}]+\}", job_id, template)
    before = harness.snapshot()
    for credential, (headers, params) in wrong_credentials(harness, job_id).items():
        response = await harness.client.request(method, path, headers=headers, params=params, json=BODY)
        assert (response.status_code, response.json().get("error")) == (401, "unauthorized"), (
            credential,
            response.text,
        )
        assert harness.snapshot() == before, credential
    assert harness.provider.requests == []  # nothing was submitted either
