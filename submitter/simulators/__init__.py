"""Fake providers that speak each provider's wire contract, for tests and `make run`.

Every simulator serves its "CDN" from one real sample file per kind: `sample.mp4` (H.264, 1 s, 64x64) for videos,
`sample.png` (64x64) for images. To give each file its own bytes, and so its own sha256, the job and index are
written into a chunk the format defines as skippable: a top-level ISO-BMFF `free` box after the MP4, a `tEXt`
chunk before the PNG's `IEND`. Players and decoders skip both, so every file stays valid.
"""

from __future__ import annotations

import json
import struct
import zlib
from importlib import resources
from typing import Any

from starlette.requests import Request

SAMPLE_MP4: bytes = resources.files(__name__).joinpath("sample.mp4").read_bytes()
SAMPLE_PNG: bytes = resources.files(__name__).joinpath("sample.png").read_bytes()


def video_bytes(job_id: str, index: int) -> bytes:
    """The sample MP4 followed by a `free` box whose payload is `f"{job_id}/{index}"`."""
    payload = f"{job_id}/{index}".encode()
    return SAMPLE_MP4 + struct.pack(">I", 8 + len(payload)) + b"free" + payload


def image_bytes(job_id: str, index: int) -> bytes:
    """The sample PNG with a `tEXt` chunk `reelhook\\0{job_id}/{index}` before its IEND chunk."""
    data = b"tEXt" + b"reelhook\0" + f"{job_id}/{index}".encode()
    chunk = struct.pack(">I", len(data) - 4) + data + struct.pack(">I", zlib.crc32(data))
    end = SAMPLE_PNG.rindex(b"IEND") - 4
    return SAMPLE_PNG[:end] + chunk + SAMPLE_PNG[end:]


def media_bytes(job_id: str, index: int, ext: str) -> bytes:
    return image_bytes(job_id, index) if ext == "png" else video_bytes(job_id, index)


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object; {} when the body is not one (each simulator then refuses it its own way)."""
    try:
        value = json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


__all__ = ["SAMPLE_MP4", "SAMPLE_PNG", "image_bytes", "media_bytes", "read_json", "video_bytes"]
