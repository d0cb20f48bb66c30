"""Fake providers that speak each provider's wire contract, for tests and `make run`.

Every simulator serves its "CDN" from one real sample video: `sample.mp4` (H.264, 1 s, 64x64). To give each video
its own bytes, and so its own sha256, `video_bytes` appends a top-level ISO-BMFF `free` box naming the job and the
index: players skip `free` boxes, so every video stays a valid MP4.
"""

from __future__ import annotations

import struct
from importlib import resources

SAMPLE_MP4: bytes = resources.files(__name__).joinpath("sample.mp4").read_bytes()


def video_bytes(job_id: str, index: int) -> bytes:
    """The sample MP4 followed by a `free` box whose payload is `f"{job_id}/{index}"`."""
    payload = f"{job_id}/{index}".encode()
    return SAMPLE_MP4 + struct.pack(">I", 8 + len(payload)) + b"free" + payload


__all__ = ["SAMPLE_MP4", "video_bytes"]
