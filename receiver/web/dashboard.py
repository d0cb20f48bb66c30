"""The dashboard's pages, the partials their live parts re-fetch, and their buttons.

Every page reads through receiver/web/reads.py, the functions behind `/api/*`, and every button calls the same
function its API endpoint does and shows that function's error text. `routes()` is the one place where each
route gets its guard (receiver/web/auth.py): a page redirects to the sign-in form, a partial answers 401, a button
also checks that it was pressed on one of our pages.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from receiver.api import no_query
from receiver.jobrequests import BadRequest
from receiver.service import Service
from receiver.web import live, login, reads
from receiver.web.auth import action, from_our_pages, page, partial, read_form
from receiver.web.rendering import render
from storage import JobStatus

FILTERS = ("status", "provider", "action", "rule", "root", "q")


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


async def _timeline(request: Request, job_id: str) -> dict[str, Any] | None:
    try:
        return await reads.job_timeline(_service(request), job_id)
    except BadRequest:  # an id prefix that fits several jobs: the jobs list's search shows them all
        return None


async def overview_page(request: Request) -> Response:
    return render(request, "overview.html", overview=await reads.overview(_service(request)))


async def overview_partial(request: Request) -> Response:
    return render(request, "_overview.html", overview=await reads.overview(_service(request)))


async def _jobs_context(request: Request) -> tuple[dict[str, Any], int]:
    try:
        query = reads.JobQuery.parse(request.query_params)
    except BadRequest as exc:
        return {"page": {"jobs": [], "next_cursor": None}, "problem": exc.detail, "filters": {}}, exc.status_code
    found = await reads.jobs_page(_service(request), query)
    filters = {name: request.query_params.get(name, "") for name in FILTERS}
    kept = {name: value for name, value in filters.items() if value}
    next_query = urlencode(kept | {"cursor": found["next_cursor"]}) if found["next_cursor"] else None
    query_string = urlencode(
        kept | ({"cursor": request.query_params["cursor"]} if "cursor" in request.query_params else {})
    )
    context = {
        "page": found, "filters": filters, "next_query": next_query, "query_string": query_string,
        "providers": list(_service(request).settings.providers), "statuses": [status.value for status in JobStatus],
    }  # fmt: skip
    return context, 200


async def jobs_page(request: Request) -> Response:
    context, status = await _jobs_context(request)
    return render(request, "jobs.html", status, **context)


async def jobs_partial(request: Request) -> Response:
    context, status = await _jobs_context(request)
    return render(request, "_jobs_table.html", status, **context)


async def job_page(request: Request) -> Response:
    return await _job_view(request, "job.html")


async def job_partial(request: Request) -> Response:
    return await _job_view(request, "_job.html")


async def _job_view(request: Request, template: str, refused: BadRequest | None = None) -> Response:
    """A job's page (or partial); after a refused button, with the API's words and status."""
    job_id = request.path_params["job_id"]
    status = refused.status_code if refused else 200
    found = await _timeline(request, job_id)
    if found is None:
        return render(request, "missing.html", status if refused else 404, job_id=job_id)
    return render(request, template, status, problem=refused.detail if refused else None, **found)


GALLERY_FILTERS = ("provider", "rule", "root", "day")


async def gallery_page(request: Request) -> Response:
    """Downloaded files of succeeded jobs, newest first; filtered by chain (`root`), provider, rule and day (UTC)."""
    filters = {name: request.query_params.get(name, "") for name in GALLERY_FILTERS}
    day = filters["day"]
    try:
        if day and not (len(day) == 10 and date.fromisoformat(day)):
            raise ValueError
        query = reads.JobQuery.parse(QueryParams({k: v for k, v in filters.items() if k != "day"} | {"limit": "200"}))
    except (BadRequest, ValueError) as exc:
        problem = exc.detail if isinstance(exc, BadRequest) else f"day must be YYYY-MM-DD, got {day!r}"
        return render(request, "gallery.html", 400, tiles=[], filters=filters, problem=problem, providers=[])
    found = await reads.jobs_page(_service(request), replace(query, status=JobStatus.SUCCEEDED))
    tiles = [
        {"job": job, "video": video}
        for job in found["jobs"]
        if not day or job["created_at"].startswith(day)
        for video in job["videos"]
        if video["status"] == "downloaded"
    ]
    providers = list(_service(request).settings.providers)
    return render(request, "gallery.html", tiles=tiles, filters=filters, providers=providers)


async def _follow_up(request: Request, body: dict[str, Any]) -> Response:
    job_id = request.path_params["job_id"]
    try:
        job = await reads.submit_job(_service(request), {**body, "parent_id": job_id})
    except BadRequest as exc:
        return await _job_view(request, "job.html", exc)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


async def extend(request: Request) -> Response:
    form = await read_form(request)
    index = form.get("index", "")
    return await _follow_up(request, {"action": "extend", "index": int(index) if index.isdigit() else index})


async def run_action(request: Request) -> Response:
    form = await read_form(request)
    return await _follow_up(request, {"action": form.get("name", "")})


async def _job_verb(request: Request, verb: Any) -> Response:
    job_id = request.path_params["job_id"]
    try:
        await verb(_service(request), job_id)
    except BadRequest as exc:
        return await _job_view(request, "job.html", exc)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


async def cancel(request: Request) -> Response:
    return await _job_verb(request, reads.cancel)


async def retry(request: Request) -> Response:
    return await _job_verb(request, reads.retry_downloads)


async def look_up(request: Request) -> Response:
    await reads.reconcile(_service(request))
    back = request.path_params.get("job_id")
    return RedirectResponse(f"/jobs/{back}" if back else "/", status_code=303)


async def pause(request: Request) -> Response:
    reason = (await read_form(request)).get("reason", "").strip() or "paused from the dashboard"
    await reads.pause(_service(request), reason)
    return RedirectResponse("/", status_code=303)


async def resume(request: Request) -> Response:
    await reads.resume(_service(request))
    return RedirectResponse("/", status_code=303)


def routes() -> list[BaseRoute]:
    return [
        Route("/login", login.login_form, methods=["GET"]),
        Route("/login", from_our_pages(login.sign_in), methods=["POST"]),
        Route("/login/{token}", login.sign_in_link, methods=["GET"]),
        Route("/logout", from_our_pages(login.sign_out), methods=["POST"]),
        Route("/api/login-link", no_query(login.login_link), methods=["POST"]),
        Route("/", page(overview_page), methods=["GET"]),
        Route("/jobs", page(jobs_page), methods=["GET"]),
        Route("/jobs/{job_id}", page(job_page), methods=["GET"]),
        Route("/gallery", page(gallery_page), methods=["GET"]),
        Route("/partials/overview", partial(overview_partial), methods=["GET"]),
        Route("/partials/jobs", partial(jobs_partial), methods=["GET"]),
        Route("/partials/jobs/{job_id}", partial(job_partial), methods=["GET"]),
        Route("/events", partial(live.events), methods=["GET"]),
        Route("/jobs/{job_id}/extend", action(extend), methods=["POST"]),
        Route("/jobs/{job_id}/action", action(run_action), methods=["POST"]),
        Route("/jobs/{job_id}/lookup", action(look_up), methods=["POST"]),
        Route("/jobs/{job_id}/cancel", action(cancel), methods=["POST"]),
        Route("/jobs/{job_id}/retry", action(retry), methods=["POST"]),
        Route("/lookup", action(look_up), methods=["POST"]),
        Route("/pause", action(pause), methods=["POST"]),
        Route("/resume", action(resume), methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("receiver.web", "static")]), name="static"),
    ]
