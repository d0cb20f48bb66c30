"""The dashboard's templates: Jinja2 with autoescaping on for every template, and the filters they use."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates


def ago(iso: str | None, now: float | None = None) -> str:
    """`3 s`, `4 min`, `2 h`, `5 d` since an ISO time of the job JSON; `never` for none."""
    if not iso:
        return "never"
    seconds = max(0.0, (now or time.time()) - datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def seconds(value: float | None) -> str:
    if value is None:
        return "never"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if value >= size:
            return f"{int(value // size)} {unit}"
    return f"{int(value)} s"


_environment = Environment(
    loader=PackageLoader("receiver.web", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
)
_environment.filters["ago"] = ago
_environment.filters["seconds"] = seconds
templates = Jinja2Templates(env=_environment)


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    response: HTMLResponse = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers["cache-control"] = "no-store"
    response.headers["x-frame-options"] = "DENY"
    return response
