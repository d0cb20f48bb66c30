"""Signing in to the dashboard: a session cookie, one-time sign-in links, and the checks every page runs.

A person signs in once with the API token (`POST /login`) or with a one-time link that `reelhook open` prints
(`GET /login/{token}`), and gets `reelhook_session`: an itsdangerous-signed, HttpOnly, SameSite=Lax cookie whose
payload is a digest of the API token, so rotating the token signs every browser out. `session_ok(request)` is the
one question every page, partial, event stream (and `/media/...`) asks.

The port is exposed through a tunnel, so guessing is limited: five failed sign-ins a minute per client address,
then 429. Every POST must come from a page of ours (its Origin, or else its Referer, names our host), which with
SameSite=Lax is what stops another site from pressing the dashboard's buttons for a signed-in person.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, urlencode, urlsplit

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from receiver.requests import BodyTooLarge, error, read_body
from receiver.settings import Settings

COOKIE = "reelhook_session"
SESSION_MAX_AGE = 7 * 24 * 3600
LINK_MAX_AGE = 300
FAILURES_PER_MINUTE = 5
MAX_FORM = 16 * 1024

Endpoint = Callable[[Request], Awaitable[Response]]


class Sessions:
    """What signing in needs: the serializers, the links already used, and the failures per client address."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        secret = str(settings.secrets[0])
        self._session = URLSafeTimedSerializer(secret, salt="reelhook.session")
        self._link = URLSafeTimedSerializer(secret, salt="reelhook.login-link")
        self._token = str(settings.api_token)
        self._mark = hashlib.sha256(b"reelhook.session:" + self._token.encode()).hexdigest()[:32]
        self.secure = urlsplit(settings.public_url).scheme == "https"
        self.public_url = settings.public_url.rstrip("/")
        self._clock = clock
        self._used_links: dict[str, float] = {}
        self._failures: dict[str, deque[float]] = {}

    def token_matches(self, token: str) -> bool:
        return secrets.compare_digest(token.encode(), self._token.encode())

    def new_session(self) -> str:
        return self._session.dumps(self._mark)

    def valid_session(self, cookie: str) -> bool:
        try:
            mark = self._session.loads(cookie, max_age=SESSION_MAX_AGE)
        except BadSignature:  # also SignatureExpired
            return False
        return isinstance(mark, str) and secrets.compare_digest(mark, self._mark)

    def new_link(self) -> str:
        return self._link.dumps(secrets.token_urlsafe(16))

    def use_link(self, token: str) -> bool:
        """True once for a link signed here less than LINK_MAX_AGE ago; it is spent from then on."""
        try:
            nonce = self._link.loads(token, max_age=LINK_MAX_AGE)
        except BadSignature:
            return False
        now = self._clock()
        self._used_links = {n: at for n, at in self._used_links.items() if at > now - LINK_MAX_AGE}
        if not isinstance(nonce, str) or nonce in self._used_links:
            return False
        self._used_links[nonce] = now
        return True

    def limited(self, client: str) -> bool:
        failures = self._failures.get(client)
        now = self._clock()
        while failures and failures[0] <= now - 60:
            failures.popleft()
        return failures is not None and len(failures) >= FAILURES_PER_MINUTE

    def failed(self, client: str) -> None:
        self._failures.setdefault(client, deque()).append(self._clock())
        if len(self._failures) > 10_000:  # a flood of addresses: forget the oldest rather than grow without end
            self._failures.pop(next(iter(self._failures)))


def sessions_of(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


def session_ok(request: Request) -> bool:
    """Whether the request carries a valid dashboard session cookie."""
    cookie = request.cookies.get(COOKIE)
    return cookie is not None and sessions_of(request).valid_session(cookie)


def same_origin(request: Request) -> bool:
    """Whether a POST came from one of our pages: its Origin (or, without one, its Referer) names our host."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return False
    netloc = urlsplit(source).netloc.lower()
    ours = {request.headers.get("host", "").lower(), urlsplit(sessions_of(request).public_url).netloc.lower()}
    return bool(netloc) and netloc in ours


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def page(endpoint: Endpoint) -> Endpoint:
    """A page: without a session, to the sign-in form and back here afterwards."""

    async def guarded(request: Request) -> Response:
        if not session_ok(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?{_encode_next(target)}", status_code=303)
        return await endpoint(request)

    return guarded


def partial(endpoint: Endpoint) -> Endpoint:
    """A fragment or an event stream: 401 without a session (the page around it handles signing in)."""

    async def guarded(request: Request) -> Response:
        if not session_ok(request):
            return error(401, "unauthorized", "sign in at /login")
        return await endpoint(request)

    return guarded


def from_our_pages(endpoint: Endpoint) -> Endpoint:
    """A POST from one of our pages, else 403."""

    async def guarded(request: Request) -> Response:
        if not same_origin(request):
            return error(403, "forbidden", "cross-origin request refused: use the dashboard's own buttons")
        return await endpoint(request)

    return guarded


def action(endpoint: Endpoint) -> Endpoint:
    """A button: from one of our pages (else 403), by someone signed in (else 401)."""
    return from_our_pages(partial(endpoint))


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the first value of each), or {} for a body that is too large or unreadable."""
    try:
        raw = await read_body(request, MAX_FORM)
        fields = parse_qs(raw.decode("utf-8", "strict"), keep_blank_values=True, max_num_fields=50)
    except (BodyTooLarge, UnicodeDecodeError, ValueError):
        return {}
    return {name: values[0] for name, values in fields.items()}


def signed_in(request: Request, target: str) -> Response:
    """A redirect to `target` that sets a fresh session cookie."""
    response = RedirectResponse(target, status_code=303)
    secure = sessions_of(request).secure or request.url.scheme == "https"
    response.set_cookie(
        COOKIE, sessions_of(request).new_session(), max_age=int(SESSION_MAX_AGE), path="/", secure=secure,
        httponly=True, samesite="lax",
    )  # fmt: skip
    return response


def safe_next(target: str | None) -> str:
    """Where to go after signing in: one of our paths, never another site (`//evil`, `/\\evil`)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")) or not target.isprintable():
        return "/"
    return target


def _encode_next(target: str) -> str:
    return urlencode({"next": target})
