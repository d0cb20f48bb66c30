"""What a simulator saw, over HTTP: `GET /_simulator/observed`, for a test whose simulator runs in another process.

A test that runs the simulator in its own process (several `reelhook serve` instances sharing one provider, so
that one simulator sees the total) cannot read its attributes; this answers them. It reports, never changes: the
slots in use now and at most (`peak_in_flight`, the provider's view of reelhook's in-flight limit), every
submission with its body and the job it created (a job sent twice shows up as two), every callback delivery, and
how often each CDN file was fetched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from submitter.simulators.base import Simulator

ROUTE = "/_simulator/observed"


def observation_route(simulator: Simulator) -> Route:
    async def observed(request: Request) -> Response:
        return JSONResponse(observed_by(simulator))

    return Route(ROUTE, observed, methods=["GET"])


def observed_by(simulator: Simulator) -> dict[str, object]:
    return {
        "provider": simulator.name,
        "max_in_flight": simulator.max_in_flight,
        "in_flight": simulator.in_flight,
        "peak_in_flight": simulator.peak_in_flight,
        "idle": simulator.idle,
        "submissions": [
            {"path": s.path, "status_code": s.status_code, "job_id": s.job_id, "body": s.body}
            for s in simulator.submissions
        ],
        "deliveries": [{"job_id": d.job_id, "url": d.url, "status_code": d.status_code} for d in simulator.deliveries],
        "cdn_hits": dict(simulator.cdn_hits),
    }
