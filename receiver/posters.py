"""Poster frames: a small JPEG beside each downloaded file, `{index}.poster.jpg`, for the dashboard's `<video poster>`.

FFmpeg wants a file it can seek in. With local media that is the file itself; with media in a bucket the object
is first copied, a piece at a time, to a temporary file that is removed once the poster is made (one read of each
object after its download; the upload path stays a plain stream). The poster goes into the same media store.

PyAV (FFmpeg inside the wheel) decodes the first keyframe, scales it to at most `MAX_WIDTH` pixels wide and encodes
it as one MJPEG frame, so no Pillow is needed. Image results (PNG tiles) go through the same code: FFmpeg reads a
still image as a one-frame video, so they get a thumbnail rather than serving the full tile as their own poster.

A poster is a nicety. Making one never fails a download, nor holds up one: the posters worker (`posterqueue`) makes
it after the download is recorded, and any error means no poster (logged), and the dashboard shows a placeholder.
Whether a poster exists is the file itself, written atomically, so no schema records it. Decoding runs in worker
threads, at most `CONCURRENCY` at once, so a burst of downloads cannot fill every core with FFmpeg.
"""

from __future__ import annotations

import logging
import threading
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import anyio

from storage.media import MediaStore

if TYPE_CHECKING:
    import av.video.frame

logger = logging.getLogger("reelhook.posters")

MAX_WIDTH = 480
MAX_PIXELS = 8192 * 8192  # a first frame larger than this is refused before it is scaled
SUFFIX = ".poster.jpg"
CONCURRENCY = 2

# A thread semaphore rather than an anyio.CapacityLimiter: it belongs to no event loop, so one module-level bound
# holds for every app and test in the process.
_decoding = threading.BoundedSemaphore(CONCURRENCY)


def poster_key(key: str) -> str:
    """`root/job/0.mp4` → `root/job/0.poster.jpg`."""
    path = PurePosixPath(key)
    return str(path.with_name(path.name.partition(".")[0] + SUFFIX))


def make_poster_bytes(media: Path, *, max_width: int = MAX_WIDTH) -> bytes:
    """The JPEG poster of a video's first keyframe, or of a still image. Raises on anything FFmpeg cannot read."""
    with _decoding:
        return _first_frame_as_jpeg(media, max_width)


def _first_frame_as_jpeg(media: Path, max_width: int) -> bytes:
    # Imported on first use: FFmpeg's libraries take ~50 ms to load, which the CLI and every process that only
    # imports the download worker need not pay.
    import av

    with av.open(str(media)) as container:
        if not container.streams.video:
            raise ValueError(f"{media.name}: no video stream")
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONKEY"  # the first keyframe is all a poster needs
        frame = next(iter(container.decode(stream)), None)
    if frame is None:
        raise ValueError(f"{media.name}: no frame decodes")
    return _encode_jpeg(frame, max_width)


def _encode_jpeg(frame: av.video.frame.VideoFrame, max_width: int) -> bytes:
    if frame.width < 1 or frame.height < 1 or frame.width * frame.height > MAX_PIXELS:
        raise ValueError(f"unreasonable frame size {frame.width}x{frame.height}")
    # yuvj420p wants even sides; round the scaled height to keep the aspect ratio.
    width = max(2, min(max_width, frame.width) // 2 * 2)
    height = max(2, round(frame.height * width / frame.width / 2) * 2)
    scaled = frame.reformat(width=width, height=height, format="yuvj420p")
    import av

    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    packets = [*encoder.encode(scaled), *encoder.encode(None)]
    data = b"".join(bytes(packet) for packet in packets)
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("the MJPEG encoder did not produce a JPEG")
    return data


async def make_poster(media: MediaStore, key: str) -> str | None:
    """Store the poster of the object at `key` beside it and return its key, or None (logged) if it cannot be made."""
    target = poster_key(key)
    try:
        async with media.local_file(key) as path:
            data = await anyio.to_thread.run_sync(make_poster_bytes, path)
        await media.put_bytes(target, data)
    except Exception as exc:  # FFmpeg's errors, a full disk, a bucket that fails, a bug: never the download's problem
        logger.warning(
            "no poster for %s: %s: %s",
            media.describe(key),
            type(exc).__name__,
            exc,
            extra={"event": "poster.failed", "job_id": key.split("/")[1] if key.count("/") >= 2 else None},
        )
        return None
    return target
