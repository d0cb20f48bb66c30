"""The ASGI application: `create_app(settings)` for uvicorn.

The I/O boundaries are arguments: tests hand in a store on a temporary file and an `httpx.AsyncClient` of their
choosing; by default the app opens its own in the lifespan and closes them at shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver import api, frameroutes, hooks, media, openapi
from receiver.deadlines import BodyDeadline
from receiver.metrics import metrics_response
from receiver.overload import HookSlots
from receiver.process import instance_name
from receiver.requests import error
from receiver.rules import RuleSet
from receiver.service import Service
from receiver.settings import Settings, SettingsError
from receiver.web import auth, dashboard
from receiver.web.auth import Sessions
from storage import StoreProtocol, open_store


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def metrics(request: Request) -> Response:
    """`GET /metrics` behind the API token (Prometheus sends it with `authorization: {credentials: ...}`)."""
    if not api.authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    return await metrics_response(request.app.state.service)


def create_app(
    settings: Settings,
    *,
    store: StoreProtocol | None = None,
    http: httpx.AsyncClient | None = None,
    rules: RuleSet | None = None,
    trusted_origins: Collection[str] = (),
    session_ok: Callable[[Request], bool] | None = None,
) -> Starlette:
    """Build the app. Raises SettingsError or RuleError at once for a bad setting or rules file.

    `session_ok` tells whether a request carries a dashboard session; when given, it opens `/media/*` too.
    """
    if not settings.secrets or settings.api_token is None:
        raise SettingsError("REELHOOK_SECRET and REELHOOK_API_TOKEN must be set (or use Settings.with_local_secrets)")
    if rules is None:
        rules = RuleSet.load(settings.rules_path) if settings.rules_path else RuleSet.empty()
    media_store = media.open_media(settings)  # one store for the downloads and the /media route

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            own_store = store
            if own_store is None:
                settings.data_dir.mkdir(parents=True, exist_ok=True)
                claimant = instance_name(settings.data_dir)
                own_store = await stack.enter_async_context(await open_store(settings.database, claimant=claimant))
            own_http = http
            if own_http is None:
                own_http = await stack.enter_async_context(
                    httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0), follow_redirects=False)
                )
            service = Service(settings, own_store, own_http, rules, media=media_store, trusted_origins=trusted_origins)
            app.state.service = await stack.enter_async_context(service.running())
            yield

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/hooks/{provider}/{token}", hooks.receive_callback, methods=["POST"]),
        Route("/hooks/{provider}/{token}/callback", hooks.receive_callback, methods=["POST"]),
        Route("/api/jobs", api.create_job, methods=["POST"]),
        Route("/api/jobs", api.list_jobs, methods=["GET"]),
        Route("/api/jobs/{job_id}", api.get_job, methods=["GET"]),
        Route("/api/jobs/{job_id}/timeline", api.timeline, methods=["GET"]),
        Route("/api/jobs/{job_id}/cancel", api.cancel, methods=["POST"]),
        Route("/api/jobs/{job_id}/retry", api.retry, methods=["POST"]),
        Route("/api/frames", frameroutes.upload_frame, methods=["POST"]),
        Route("/frames/{name}", frameroutes.serve_frame, methods=["GET", "HEAD"]),
        Route("/api/overview", api.overview, methods=["GET"]),
        Route("/api/reconcile", api.reconcile, methods=["POST"]),
        Route("/api/prune", api.prune, methods=["POST"]),
        Route("/api/pause", api.pause, methods=["POST"]),
        Route("/api/resume", api.resume, methods=["POST"]),
        Route("/api/status", api.status, methods=["GET"]),
        Route("/api/openapi.json", openapi.openapi_json, methods=["GET"]),
        # With REELHOOK_METRICS_ADDR, /metrics is served there instead (receiver.metrics.metrics_app), without a token.
        *([] if settings.metrics_addr else [Route("/metrics", metrics, methods=["GET"])]),
        *dashboard.routes(),
        Route(
            "/media/{path:path}",
            media.media_endpoint(settings, media_store, session_ok=session_ok or auth.session_ok),
            methods=["GET", "HEAD"],
        ),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.sessions = Sessions(settings)
    # The handler takes a slot once the token verifies; the middleware frees it however the request ends.
    app.add_middleware(HookSlots, limit=settings.max_hook_requests, per_job=settings.max_hook_requests_per_job)
    # Outermost, so the deadline covers every body any route reads.
    app.add_middleware(BodyDeadline, timeout=settings.body_timeout)
    return app
