"""The sign-in routes: the form, the token, the one-time link, signing out, and the API that makes a link."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from receiver import api
from receiver.requests import TextSafeJSONResponse, error
from receiver.web.auth import COOKIE, LINK_MAX_AGE, client_address, read_form, safe_next, sessions_of, signed_in
from receiver.web.rendering import render


async def login_form(request: Request) -> Response:
    return render(request, "login.html", next=safe_next(request.query_params.get("next")))


async def sign_in(request: Request) -> Response:
    """`POST /login` with the API token: a session, or the form again."""
    sessions, client = sessions_of(request), client_address(request)
    form = await read_form(request)
    target = safe_next(form.get("next"))
    if sessions.limited(client):
        return render(request, "login.html", 429, next=target, problem="Too many failed sign-ins: wait a minute.")
    if not sessions.token_matches(form.get("token", "")):
        sessions.failed(client)
        return render(request, "login.html", 401, next=target, problem="That is not the API token.")
    return signed_in(request, target)


async def sign_in_link(request: Request) -> Response:
    """`GET /login/{token}`: a one-time link from `reelhook open`."""
    sessions, client = sessions_of(request), client_address(request)
    if sessions.limited(client):
        return render(request, "login.html", 429, next="/", problem="Too many failed sign-ins: wait a minute.")
    if not sessions.use_link(request.path_params["token"]):
        sessions.failed(client)
        problem = "That sign-in link has expired or was already used: run `reelhook open` again."
        return render(request, "login.html", 401, next="/", problem=problem)
    return signed_in(request, "/")


async def sign_out(request: Request) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax")
    return response


async def login_link(request: Request) -> Response:
    """`POST /api/login-link` (bearer token): a one-time sign-in link for a browser, valid for five minutes."""
    if not api.authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    sessions = sessions_of(request)
    url = f"{sessions.public_url}/login/{sessions.new_link()}"
    return TextSafeJSONResponse({"url": url, "expires_in": int(LINK_MAX_AGE)})
