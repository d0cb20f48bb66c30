"""What reaches a simulator: the submissions it was sent, every request's method and path, and the address it is
reached at (which tells a restarted simulator where its remembered jobs' files now live)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send


@dataclass(frozen=True)
class Submission:
    path: str
    body: dict[str, Any]  # {} when the body was not a JSON object
    status_code: int
    job_id: str | None = None
    query: Mapping[str, str] = field(default_factory=dict)


class Taken(Exception):
    """The job was taken, but the submit is answered `status_code` (the `taken_then_status` fault)."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


class RequestLog:
    """Records each HTTP request's method and path, and tells the simulator the address it is reached at."""

    def __init__(self, app: ASGIApp, requests: list[tuple[str, str]], reached_at: Callable[[str], None]) -> None:
        self.app = app
        self.requests = requests
        self.reached_at = reached_at

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.requests.append((scope["method"], scope["path"]))
            self.reached_at(str(Request(scope).base_url).rstrip("/"))
        await self.app(scope, receive, send)
