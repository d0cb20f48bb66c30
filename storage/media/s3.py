"""Media in an S3-compatible bucket (AWS, R2, MinIO, SeaweedFS), through obstore.

Create-only and flat memory pull in different directions on S3. A conditional PUT (`If-None-Match: *`, obstore's
`mode="create"`) refuses to overwrite, but it is a single request: obstore holds the whole body in memory to send
it (measured here: 256 MiB streamed with mode="create" took the process from 30 to 288 MiB). A multipart upload
streams in parts of `PART_SIZE`, `CONCURRENCY` at a time, but obstore cannot make one conditional. So a write is
two steps: a multipart upload to a staging key `.uploads/<random>` (flat memory), then a server-side copy to the
real key that succeeds only if nothing is there (`copy_if_not_exists`, "multipart" by default: a multipart copy
completed with `If-None-Match: *`, which AWS S3 and SeaweedFS honour; R2 wants
`header:cf-copy-destination-if-none-match:*`, set through AWS_COPY_IF_NOT_EXISTS). The staging key is deleted
either way. The bucket never shows a half-written object at a real key, and a stream that fails midway aborts its
upload (a lifecycle rule that aborts incomplete multipart uploads cleans up after a process killed mid-upload).

Reads ask for bounded ranges (`READ_PIECE` each) rather than hold one long response open, so a paused player
costs no connection and no request outlives the client's timeout.
"""

from __future__ import annotations

import hashlib
import tempfile
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import obstore
from obstore.exceptions import AlreadyExistsError, BaseError, NotFoundError
from obstore.store import S3Store

from storage.media import AlreadyExists, MediaError, ObjectInfo, Written, check_key

PART_SIZE = 5 * 1024 * 1024  # S3's smallest part
CONCURRENCY = 2  # parts in flight: memory is about PART_SIZE * (CONCURRENCY + 1)
READ_PIECE = 4 * 1024 * 1024
STAGING = ".uploads"
# obstore raises the builtin FileNotFoundError for a missing object, though its stubs name NotFoundError.
_MISSING = (NotFoundError, FileNotFoundError)


class S3MediaStore:
    def __init__(self, store: S3Store, url: str) -> None:
        self._store = store
        self._url = url.rstrip("/")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        copy_if_not_exists: str = "multipart",
    ) -> S3MediaStore:
        """A store for `s3://bucket/prefix`. What is not given here obstore reads from the AWS_* variables."""
        config: dict[str, Any] = {"copy_if_not_exists": copy_if_not_exists}
        for name, value in (
            ("endpoint", endpoint),
            ("region", region),
            ("access_key_id", access_key_id),
            ("secret_access_key", secret_access_key),
        ):
            if value:
                config[name] = value
        options: dict[str, Any] = {"allow_http": bool(endpoint and endpoint.startswith("http://"))}
        return cls(S3Store.from_url(url, config=config, client_options=options), url)  # type: ignore[arg-type]

    def describe(self, key: str) -> str:
        return f"{self._url}/{key}"

    async def write(self, key: str, chunks: AsyncIterable[bytes]) -> Written:
        check_key(key)
        if await self.exists(key):  # saves an upload that the copy would refuse
            raise AlreadyExists(f"{self.describe(key)} already exists")
        digest = hashlib.sha256()
        size = 0
        failure: BaseException | None = None

        async def hashed() -> AsyncIterator[bytes]:
            nonlocal size, failure
            try:
                async for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    yield chunk
            except BaseException as exc:  # obstore wraps what the stream raises: keep it to raise as itself
                failure = exc
                raise

        staging = f"{STAGING}/{uuid.uuid4().hex}"
        try:
            try:
                await obstore.put_async(
                    self._store, staging, hashed(), use_multipart=True, chunk_size=PART_SIZE,
                    max_concurrency=CONCURRENCY,
                )  # fmt: skip
            except BaseError as exc:
                if failure is not None:
                    raise failure from None
                raise MediaError(f"cannot upload {self.describe(key)}: {_first_line(exc)}") from None
            if failure is not None:
                raise failure
            try:
                await obstore.copy_async(self._store, staging, key, overwrite=False)
            except AlreadyExistsError:
                raise AlreadyExists(f"{self.describe(key)} already exists") from None
            except BaseError as exc:
                raise MediaError(f"cannot store {self.describe(key)}: {_first_line(exc)}") from None
        finally:
            with anyio.CancelScope(shield=True):
                await self._forget(staging)
        return Written(size=size, sha256=digest.hexdigest())

    async def _forget(self, staging: str) -> None:
        try:
            await obstore.delete_async(self._store, staging)
        except BaseError:  # never created (the upload failed), or a cleanup the lifecycle rule will do
            pass

    async def discard_partial(self, key: str) -> None:
        """Nothing to do: an unfinished multipart upload never becomes an object (a lifecycle rule aborts it)."""

    async def stat(self, key: str) -> ObjectInfo | None:
        try:
            meta = await obstore.head_async(self._store, check_key(key))
        except _MISSING:
            return None
        except BaseError as exc:
            raise MediaError(f"cannot look at {self.describe(key)}: {_first_line(exc)}") from None
        return ObjectInfo(size=meta["size"])

    async def exists(self, key: str) -> bool:
        return await self.stat(key) is not None

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        if end is None:
            info = await self.stat(key)
            if info is None:
                raise FileNotFoundError(self.describe(key))
            end = info.size
        position = start
        while position < end:
            piece_end = min(end, position + READ_PIECE)
            try:
                piece = await obstore.get_range_async(self._store, key, start=position, end=piece_end)
            except _MISSING:
                raise FileNotFoundError(self.describe(key)) from None
            except BaseError as exc:
                raise MediaError(f"cannot read {self.describe(key)}: {_first_line(exc)}") from None
            data = bytes(piece)
            if not data:
                return
            position += len(data)
            yield data

    async def delete(self, key: str) -> None:
        try:
            await obstore.delete_async(self._store, check_key(key))
        except _MISSING:
            pass

    async def put_bytes(self, key: str, data: bytes) -> None:
        try:
            await obstore.put_async(self._store, check_key(key), data)  # one PUT: atomic, replaces the old one
        except BaseError as exc:
            raise MediaError(f"cannot store {self.describe(key)}: {_first_line(exc)}") from None

    async def get_bytes(self, key: str) -> bytes | None:
        try:
            result = await obstore.get_async(self._store, check_key(key))
            return bytes(await result.bytes_async())
        except _MISSING:
            return None
        except BaseError as exc:
            raise MediaError(f"cannot read {self.describe(key)}: {_first_line(exc)}") from None

    @asynccontextmanager
    async def local_file(self, key: str) -> AsyncIterator[Path]:
        """The object copied to a temporary file (streamed, a piece at a time), removed when the block ends."""
        with tempfile.TemporaryDirectory(prefix="reelhook-media-") as folder:
            path = Path(folder) / key.rsplit("/", 1)[-1]
            async with await anyio.open_file(path, "wb") as file:
                async for piece in self.read(key):
                    await file.write(piece)
            yield path


def _first_line(exc: BaseException) -> str:
    """obstore's messages carry a multi-line debug dump after the first line; a person needs the first."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
