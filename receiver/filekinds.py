"""Is this response the kind of file its URL promised?

A CDN that answers 200 with an HTML error page, a JSON message or a login form would otherwise leave that page in
the media directory under a video's name, and the rules would chain follow-ups onto it. Two checks stop it, both
before a file is kept: the Content-Type header, before a byte of the body is read, and the first bytes themselves
(each format's magic number), which a mislabelled response cannot fake.
"""

from __future__ import annotations

from collections.abc import Callable

# Enough of the head of a file for every signature below.
HEAD_BYTES = 12

_BINARY_TYPES = frozenset({"application/octet-stream", "binary/octet-stream", "application/mp4"})

_SIGNATURES: dict[str, tuple[str, Callable[[bytes], bool]]] = {
    "mp4": ("an MP4 video ('ftyp' at byte 4)", lambda head: head[4:8] == b"ftyp"),
    "mov": ("a QuickTime video ('ftyp' at byte 4)", lambda head: head[4:8] == b"ftyp"),
    "webm": ("a WebM video (1A 45 DF A3)", lambda head: head.startswith(b"\x1a\x45\xdf\xa3")),
    "png": ("a PNG image", lambda head: head.startswith(b"\x89PNG\r\n\x1a\n")),
    "jpg": ("a JPEG image (FF D8 FF)", lambda head: head.startswith(b"\xff\xd8\xff")),
    "jpeg": ("a JPEG image (FF D8 FF)", lambda head: head.startswith(b"\xff\xd8\xff")),
    "webp": ("a WebP image (RIFF....WEBP)", lambda head: head[:4] == b"RIFF" and head[8:12] == b"WEBP"),
    "gif": ("a GIF image (GIF87a or GIF89a)", lambda head: head[:6] in (b"GIF87a", b"GIF89a")),
}


def why_not_media_type(content_type: str | None) -> str | None:
    """Why a response with this Content-Type is not media; None for video/*, image/*, raw bytes, or no type."""
    if content_type is None:
        return None
    media_type = content_type.split(";", 1)[0].strip().lower()
    if not media_type or media_type.startswith(("video/", "image/")) or media_type in _BINARY_TYPES:
        return None
    return f"the server sent {media_type}, not a video or an image"


def why_not_kind(extension: str, head: bytes) -> str | None:
    """Why a file that starts with `head` is not a `.{extension}` file; None when its signature matches."""
    kind, matches = _SIGNATURES[extension]
    if matches(head[:HEAD_BYTES]):
        return None
    return f"the body is not {kind}: it starts with {head[:HEAD_BYTES]!r}"
