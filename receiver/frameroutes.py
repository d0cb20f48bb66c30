"""`POST /api/frames` (upload a start or end frame, behind the API token) and `GET /frames/<name>?sig=…` (a provider
fetching it through the tunnel, with the signature the submitter put in its request). What a frame is, where it is
kept and how its URL is signed: receiver/frames.py.
"""

from __future__ import annotations

import os

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from receiver.api import authorized, no_query
from receiver.frames import CONTENT_TYPES, MAX_FRAME_BYTES, FrameLinks, NotAFrame, frame_dir, served_frame, store_frame
from receiver.requests import BodyTooLarge, TextSafeJSONResponse, error, read_body
from receiver.service import Service

MIB = 1024 * 1024


@no_query
async def upload_frame(request: Request) -> Response:
    """The body is the image's bytes (any Content-Type); the answer names the `frame:<sha256>` to send as
    `image_url` or `end_image_url`. 201 for a new frame, 200 for one already stored."""
    if not authorized(request):
        return error(401, "unauthorized", "send Authorization: Bearer <REELHOOK_API_TOKEN>")
    service: Service = request.app.state.service
    try:
        data = await read_body(request, MAX_FRAME_BYTES)
    except BodyTooLarge:
        return error(413, "too_large", f"a frame may be at most {MAX_FRAME_BYTES // MIB} MiB")
    if not data:
        return error(400, "invalid_request", "the body is empty: send the image's bytes (PNG, JPEG or WebP)")
    try:
        frame, new = await store_frame(frame_dir(service.settings.data_dir), data)
    except NotAFrame as exc:
        return error(415, "unsupported_media_type", str(exc))
    body = {"frame": frame.reference, "sha256": frame.sha256, "bytes": frame.size,
            "content_type": CONTENT_TYPES[frame.kind]}  # fmt: skip
    return TextSafeJSONResponse(body, status_code=201 if new else 200)


async def serve_frame(request: Request) -> Response:
    service: Service = request.app.state.service
    name = request.path_params["name"]
    links = FrameLinks([str(secret) for secret in service.settings.secrets])
    if not links.verify(name, request.query_params.get("sig", "")):
        return error(403, "forbidden", "this frame URL's signature is missing, wrong or expired")
    path = served_frame(frame_dir(service.settings.data_dir), name)
    try:
        stat = os.stat(path) if path is not None else None
    except OSError:
        stat = None
    if path is None or stat is None:
        return error(404, "not_found", "no such frame")
    return FileResponse(
        path,
        media_type=CONTENT_TYPES[path.suffix.lstrip(".")],
        stat_result=stat,
        headers={"Cache-Control": "private, max-age=86400, immutable", "X-Content-Type-Options": "nosniff"},
    )
