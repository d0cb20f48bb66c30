"""Start and end frames a person uploads (`reelhook submit --image FILE`), kept until a provider fetches them.

Every provider takes a frame as a URL it fetches itself, so a local file must be served from somewhere it can
reach: reelhook's own public URL, through the tunnel. The CLI uploads the file (`POST /api/frames`), gets back a
reference `frame:<sha256>`, and sends that as the job's `image_url`; the job records the reference, not a URL, and
the submitter turns it into a signed URL (`frame_link`) when it builds the provider request. A URL signed then is
fresh when the provider fetches it, whatever time the job waited in the queue.

A frame is stored once, under its content's sha256, at `data_dir/frames/<sha256>.<png|jpg|webp>`: written to a
`.part` of its own, fsynced, renamed into place, and the folder fsynced, so a name is either the whole file or
absent. Only PNG, JPEG and WebP are kept, judged by their first bytes (a name or a Content-Type proves nothing).

`GET /frames/<sha256>.<ext>?sig=…` needs no token: the signature is an itsdangerous timed signature over that very
file name (salt "reelhook.frames"), so a URL signed for one frame opens no other, and it expires after a day.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer

from receiver.filekinds import HEAD_BYTES, why_not_kind

SALT = "reelhook.frames"
PREFIX = "frame:"
MAX_FRAME_BYTES = 10 * 1024 * 1024  # under every provider's cap (APIMart's is 12 MiB)
MAX_AGE = 86400  # seconds a signed frame URL stays valid: a queued job may wait, a provider may fetch late
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}
FRAME_FIELDS = ("image_url", "end_image_url")
_REFERENCE = re.compile(r"frame:([0-9a-f]{64})")
_NAME = re.compile(r"([0-9a-f]{64})\.(png|jpg|webp)")


class NotAFrame(ValueError):
    """An upload that is not a PNG, JPEG or WebP image."""


@dataclass(frozen=True)
class Frame:
    sha256: str
    kind: str  # png, jpg or webp
    size: int

    @property
    def name(self) -> str:
        return f"{self.sha256}.{self.kind}"

    @property
    def reference(self) -> str:
        return PREFIX + self.sha256


def frame_dir(data_dir: Path) -> Path:
    return data_dir / "frames"


def frame_kind(data: bytes) -> str:
    """png, jpg or webp, from the file's first bytes; NotAFrame for anything else."""
    head = data[:HEAD_BYTES]
    for kind in CONTENT_TYPES:
        if why_not_kind(kind, head) is None:
            return kind
    raise NotAFrame(f"a frame must be a PNG, JPEG or WebP image; this file starts with {head!r}")


def frame_sha256(reference: object) -> str | None:
    """The sha256 a `frame:<sha256>` reference names; None for any other value."""
    match = _REFERENCE.fullmatch(reference) if isinstance(reference, str) else None
    return match.group(1) if match else None


def find_frame(directory: Path, sha256: str) -> Path | None:
    """The stored file of frame `sha256`, or None when it was never uploaded."""
    for kind in CONTENT_TYPES:
        path = directory / f"{sha256}.{kind}"
        if path.is_file():
            return path
    return None


def served_frame(directory: Path, name: str) -> Path | None:
    """The file `/frames/<name>` serves: only a stored `<sha256>.<kind>`, never a `.part`, never another path."""
    if _NAME.fullmatch(name) is None:
        return None
    path = directory / name
    return path if path.is_file() else None


async def store_frame(directory: Path, data: bytes) -> tuple[Frame, bool]:
    """Keep `data` as a frame; returns it and whether it is new (the same bytes are stored once)."""
    frame = Frame(hashlib.sha256(data).hexdigest(), frame_kind(data), len(data))
    return frame, await anyio.to_thread.run_sync(_write_once, directory / frame.name, data)


def _write_once(path: Path, data: bytes) -> bool:
    if path.is_file():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    # A .part of its own: two uploads of the same file at once must not write into each other's.
    part = path.with_name(f"{path.name}.{secrets.token_hex(4)}.part")
    try:
        with open(part, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(part, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the new name is durable too, not only the bytes behind it
        finally:
            os.close(directory)
    finally:
        part.unlink(missing_ok=True)
    return True


class FrameLinks:
    """Signs and checks the `?sig=` of frame URLs. New signatures use the first secret; any of them verifies."""

    def __init__(
        self, secrets: Sequence[str], *, max_age: int = MAX_AGE, clock: Callable[[], float] = time.time
    ) -> None:
        if not secrets:
            raise ValueError("FrameLinks needs at least one secret")

        class Signer(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(clock())

        # itsdangerous signs with the last key and verifies with all of them.
        self._serializer = URLSafeTimedSerializer(list(reversed(secrets)), salt=SALT, signer=Signer)
        self._max_age = max_age

    def sign(self, name: str) -> str:
        return self._serializer.dumps(name)

    def verify(self, name: str, sig: str) -> bool:
        if not sig.isascii():
            return False
        try:
            return bool(self._serializer.loads(sig, max_age=self._max_age) == name)
        except BadData:
            return False

    def link(self, directory: Path, reference: str) -> str | None:
        """`/frames/<sha256>.<kind>?sig=…` for a stored frame's reference; None when no such frame is stored."""
        sha256 = frame_sha256(reference)
        path = find_frame(directory, sha256) if sha256 else None
        if path is None:
            return None
        return f"/frames/{path.name}?sig={self.sign(path.name)}"
