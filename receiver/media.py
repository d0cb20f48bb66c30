"""`GET /media/{key}`: the downloaded files, for the dashboard's `<video>` and `<img>` and for remote clients.

Media are served through reelhook whichever store holds them (a folder here, or a bucket: `open_media`), so a
client never needs a local path it cannot open, nor credentials for the bucket. The route is reachable through the
tunnel, so a request needs one of three passes (`media_allowed`):
- the API's `Authorization: Bearer <token>`;
- `?sig=…`, a short-lived signed URL: an itsdangerous timed signature over the file's key (its path relative to
  the media store, salt "reelhook.media"), made by `MediaLinks` for the job JSON's `media_url` and `poster_url`. A
  `<video src>` cannot send a header, so this is what lets a browser or a remote player open a file;
- a dashboard session, through the `session_ok` function the app passes in (the dashboard owns its cookie).
Without one the answer is 401, before the key is looked at, so a stranger learns nothing about which files exist.

Only what the downloader stored is served: a key is refused (404) unless its name ends in one of the media
extensions below, which leaves out `.part` files, `.tmp` files and the `.json` sidecars; it is refused if any
segment is empty, `.` or `..`, or holds a NUL or a backslash (Starlette has already percent-decoded the path, so
`%2e%2e` and `%2f` arrive here as `..` and `/`); in a local folder, after resolving symlinks it must still lie
inside the folder and keep its kind (`LocalMediaStore.resolved`). A single `Range` is answered 206 (and 416 with
`Content-Range: bytes */size` when it starts past the end); several ranges, or a malformed one, get the whole file,
as RFC 9110 allows. The body streams a piece at a time. Files never change once stored (writes are create-only),
so they may be cached, privately, for a day.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from pathlib import PurePosixPath
from urllib.parse import quote

from itsdangerous import BadData, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from receiver.requests import error
from receiver.settings import Settings
from storage.media import MediaError, MediaStore, check_key
from storage.media.local import LocalMediaStore

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


def open_media(settings: Settings) -> MediaStore:
    """The media store REELHOOK_MEDIA_URL names: a bucket, or the media folder in the data dir."""
    s3 = settings.media_s3
    if s3 is None:
        return LocalMediaStore(settings.media_dir)
    from storage.media.s3 import S3MediaStore  # obstore's Rust core loads only for a bucket

    return S3MediaStore.from_url(
        s3.url,
        endpoint=s3.endpoint,
        region=s3.region,
        access_key_id=s3.access_key_id,
        secret_access_key=str(s3.secret_access_key) if s3.secret_access_key else None,
        copy_if_not_exists=s3.copy_if_not_exists,
    )


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

    def sign(self, key: str) -> str:
        return self._serializer.dumps(key)

    def verify(self, key: str, sig: str) -> bool:
        if not sig.isascii():
            return False
        try:
            return bool(self._serializer.loads(sig, max_age=self._max_age) == key)
        except BadData:
            return False

    def url(self, key: str) -> str:
        """`/media/<root>/<job>/<name>?sig=…` for a media key."""
        return f"/media/{quote(key)}?sig={self.sign(key)}"  # Starlette unquotes it before verify


def media_urls(settings: Settings) -> Callable[[str], str | None]:
    """For the job JSON: a media key → its signed `/media/…` URL; None for a key the local folder does not hold.

    A bucket is not asked (a listing would cost a request per file): its keys always get a URL, and a poster that
    could not be made answers 404, which a `<video poster>` shows as no poster."""
    links = MediaLinks.from_settings(settings)
    if settings.media_s3 is not None:
        return links.url
    local = LocalMediaStore(settings.media_dir)
    return lambda key: links.url(key) if local.resolved(key) is not None else None


def media_allowed(request: Request, settings: Settings, *, session_ok: SessionCheck | None = None) -> bool:
    """The API token, a valid signature over this very key, or (when the app passes one) a dashboard session."""
    expected = f"Bearer {settings.api_token}".encode()
    if secrets.compare_digest(request.headers.get("authorization", "").encode(), expected):
        return True
    sig = request.query_params.get("sig")
    if sig is not None and MediaLinks.from_settings(settings).verify(request.path_params["path"], sig):
        return True
    return session_ok is not None and session_ok(request)


class Unsatisfiable(Exception):
    pass


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one range `header` asks for as (start, end exclusive), clamped to `size`; None to send the whole file
    (no header, several ranges, or one that does not parse); Unsatisfiable when it starts past the end."""
    if header is None or not header.startswith("bytes="):
        return None
    spec = header.removeprefix("bytes=").strip()
    first, dash, last = spec.partition("-")
    if "," in spec or not dash or not (first.isdigit() or last.isdigit()) or (first and not first.isdigit()):
        return None
    if last and not last.isdigit():
        return None
    if not first:  # bytes=-N: the last N bytes
        if int(last) == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - int(last)), size
    start = int(first)
    end = size if not last else min(size, int(last) + 1)
    if last and int(last) < start:
        return None
    if start >= size:
        raise Unsatisfiable
    return start, end


def media_endpoint(
    settings: Settings, media: MediaStore, *, session_ok: SessionCheck | None = None
) -> Callable[[Request], Awaitable[Response]]:
    """The handler of `GET /media/{path:path}` for this app's settings, media store and session check."""

    async def serve_media(request: Request) -> Response:
        if not media_allowed(request, settings, session_ok=session_ok):
            return error(
                401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN> or use a signed media_url"
            )
        key = request.path_params["path"]
        try:
            check_key(key)
        except ValueError:
            return error(404, "not_found", "no such media file")
        content_type = CONTENT_TYPES.get(PurePosixPath(key).suffix.lower())
        if content_type is None:
            return error(404, "not_found", "no such media file")
        try:
            info = await media.stat(key)
        except MediaError as exc:
            return error(503, "media_unavailable", f"the media store did not answer: {exc}")
        if info is None:
            return error(404, "not_found", "no such media file")
        headers = {
            "Accept-Ranges": "bytes",
            "Cache-Control": CACHE_CONTROL,
            "Content-Type": content_type,
            "X-Content-Type-Options": "nosniff",
        }
        try:
            wanted = byte_range(request.headers.get("range"), info.size)
        except Unsatisfiable:
            return Response(status_code=416, headers=headers | {"Content-Range": f"bytes */{info.size}"})
        start, end = wanted or (0, info.size)
        status = 200 if wanted is None else 206
        if wanted is not None:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{info.size}"
        headers["Content-Length"] = str(end - start)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers)
        return StreamingResponse(media.read(key, start, end), status_code=status, headers=headers)

    return serve_media
