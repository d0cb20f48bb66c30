"""Which responses and which first bytes pass for media (the Downloader's own tests show where they are applied)."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiver.filekinds import why_not_kind, why_not_media_type
from receiver.mediafiles import MEDIA_EXTENSIONS

SIMULATORS = Path(__file__).parents[2] / "submitter" / "simulators"


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",  # as good as none
        "video/mp4",
        "video/webm",
        "Video/QuickTime",
        "image/png",
        "image/jpeg; q=1",
        "application/octet-stream",
        "binary/octet-stream",
        "application/mp4",
    ],
)
def test_media_types_and_raw_bytes_pass(content_type: str | None) -> None:
    assert why_not_media_type(content_type) is None


@pytest.mark.parametrize(
    ("content_type", "named"),
    [
        ("text/html; charset=utf-8", "text/html"),
        ("TEXT/PLAIN", "text/plain"),
        ("application/json", "application/json"),
        ("text/xml", "text/xml"),
        ("application/problem+json", "application/problem+json"),
    ],
)
def test_other_types_are_refused_by_name(content_type: str, named: str) -> None:
    assert why_not_media_type(content_type) == f"the server sent {named}, not a video or an image"


GOOD = {
    "mp4": (SIMULATORS / "sample.mp4").read_bytes()[:64],
    "mov": b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00",
    "webm": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01",
    "png": (SIMULATORS / "sample.png").read_bytes()[:64],
    "jpg": b"\xff\xd8\xff\xdb\x00\x43",
    "jpeg": b"\xff\xd8\xff\xe1\x00\x10Exif",
    "webp": b"RIFF\x1a\x00\x00\x00WEBPVP8L",
    "gif": b"GIF87a\x01\x00\x01\x00",
}


def test_every_extension_the_downloader_keeps_has_a_signature() -> None:
    assert set(GOOD) == MEDIA_EXTENSIONS


@pytest.mark.parametrize("extension", sorted(GOOD))
def test_each_kind_passes_with_its_own_signature_and_no_other(extension: str) -> None:
    assert why_not_kind(extension, GOOD[extension]) is None
    same = {"mp4": {"mov"}, "mov": {"mp4"}, "jpg": {"jpeg"}, "jpeg": {"jpg"}}.get(extension, set())
    for other, head in GOOD.items():
        if other != extension and other not in same:
            assert why_not_kind(extension, head) is not None, other


@pytest.mark.parametrize(
    ("extension", "head", "reason"),
    [
        ("mp4", b"<!DOCTYPE html>", "the body is not an MP4 video ('ftyp' at byte 4): it starts with b'<!DOCTYPE ht'"),
        ("png", b'{"error": 1}', "the body is not a PNG image: it starts with b'{\"error\": 1}'"),
        ("webp", b"RIFF\x00\x00\x00\x00WAVE", "the body is not a WebP image (RIFF....WEBP)"),
        ("gif", b"GIF88a", "the body is not a GIF image (GIF87a or GIF89a)"),
        ("mov", b"ftyp", "the body is not a QuickTime video ('ftyp' at byte 4): it starts with b'ftyp'"),
        ("jpg", b"\xff\xd8", "the body is not a JPEG image (FF D8 FF)"),
    ],
)
def test_a_wrong_or_short_head_is_refused_and_shown(extension: str, head: bytes, reason: str) -> None:
    assert (why_not_kind(extension, head) or "").startswith(reason)
