"""`GET /media/{path}`: the downloaded files, for the dashboard's `<video>` and `<img>` and for remote clients.

The route is reachable through the tunnel, so a request needs one of three passes (`media_allowed`):
- the API's `Authorization: Bearer <token>`;
- `?sig=…`, a short-lived signed URL: an itsdangerous timed signature over the file's path relative to the media
  directory (salt "reelhook.media"), made by `MediaLinks` for the job JSON's `media_url` and `poster_url`. A
  `<video src>` cannot send a header, so this is what lets a browser or a remote player open a file;
- a dashboard session, through the `session_ok` function the app passes in (the dashboard owns its cookie).
Without one the answer is 401, before the path is looked at, so a stranger learns nothing about which files exist.

Only what the downloader renamed into place is served: a path is refused (404) unless its name ends in one of the
media extensions below, which leaves out `.part` files, `.tmp` files and the `.json` sidecars; it is refused if any
segment is empty, `.` or `..`, or holds a NUL or a backslash (Starlette has already percent-decoded the path, so
`%2e%2e` and `%2f` arrive here as `..` and `/`); and after resolving symlinks it must still lie inside the media
directory. Starlette's FileResponse answers Range requests (206, and 416 with `Content-Range: bytes */size`).
Files never change once renamed into place, so they may be cached, privately, for a day.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from itsdangerous import BadData, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from receiver.requests import error
from receiver.settings import Settings

SALT = "reelhook.media"
MAX_AGE = 3600  # seconds a signed media URL stays valid
CACHE_CONTROL = "private, max-age=86400, immutable"
CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
}

SessionCheck = Callable[[Request], bool]


class MediaLinks:
    """Signs and checks the `?sig=` of media URLs. New signatures use the first secret; any of them verifies."""

    def __init__(self, secrets: Sequence[str], *, max_age: int = MAX_AGE) -> None:
        if not secrets:
            raise ValueError("MediaLinks needs at least one secret")
        # itsdangerous signs with the last key and verifies with all of them.
        self._serializer = URLSafeTimedSerializer(list(reversed(secrets)), salt=SALT)
        self._max_age = max_age

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaLinks:
        return cls([str(secret) for secret in settings.secrets])

    def sign(self, relative: str) -> str:
        return self._serializer.dumps(relative)

    def verify(self, relative: str, sig: str) -> bool:
        if not sig.isascii():
            return False
        try:
            return bool(self._serializer.loads(sig, max_age=self._max_age) == relative)
        except BadData:
            return False

    def url(self, media_dir: Path, file: str | Path) -> str | None:
        """`/media/<root>/<job>/<name>?sig=…` for a file under `media_dir`, or None for one elsewhere."""
        try:
            relative = Path(file).relative_to(media_dir).as_posix()
        except ValueError:
            return None
        return f"/media/{quote(relative)}?sig={self.sign(relative)}"  # Starlette unquotes it before verify


def media_urls(settings: Settings) -> Callable[[str], str | None]:
    """For the job JSON: a downloaded file's local path → its signed `/media/…` URL (None outside the media dir)."""
    links, media_dir = MediaLinks.from_settings(settings), settings.media_dir.absolute()
    return lambda path: links.url(media_dir, path)


def media_allowed(request: Request, settings: Settings, *, session_ok: SessionCheck | None = None) -> bool:
    """The API token, a valid signature over this very path, or (when the app passes one) a dashboard session."""
    expected = f"Bearer {settings.api_token}".encode()
    if secrets.compare_digest(request.headers.get("authorization", "").encode(), expected):
        return True
    sig = request.query_params.get("sig")
    if sig is not None and MediaLinks.from_settings(settings).verify(request.path_params["path"], sig):
        return True
    return session_ok is not None and session_ok(request)


def media_file(media_dir: Path, relative: str) -> Path | None:
    """The file `relative` names inside `media_dir`, resolved; None for anything not to be served."""
    parts = relative.split("/")
    if any(part in ("", ".", "..") or "\x00" in part or "\\" in part for part in parts):
        return None
    if PurePosixPath(parts[-1]).suffix.lower() not in CONTENT_TYPES:
        return None
    try:
        root = media_dir.resolve(strict=True)
        path = root.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, a symlink loop, a name too long
        return None
    # Checked again after resolving: a symlink inside the folder must not lead out of it, or to a sidecar.
    if not path.is_relative_to(root) or path.suffix.lower() not in CONTENT_TYPES or not path.is_file():
        return None
    return path


def media_endpoint(
    settings: Settings, *, session_ok: SessionCheck | None = None
) -> Callable[[Request], Awaitable[Response]]:
    """The handler of `GET /media/{path:path}` for this app's settings and session check."""

    async def serve_media(request: Request) -> Response:
        if not media_allowed(request, settings, session_ok=session_ok):
            return error(
                401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN> or use a signed media_url"
            )
        path = media_file(settings.media_dir, request.path_params["path"])
        if path is None:
            return error(404, "not_found", "no such media file")
        try:
            stat = os.stat(path)
        except OSError:
            return error(404, "not_found", "no such media file")
        return FileResponse(
            path,
            media_type=CONTENT_TYPES[path.suffix.lower()],
            stat_result=stat,
            headers={"Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"},
        )

    return serve_media
