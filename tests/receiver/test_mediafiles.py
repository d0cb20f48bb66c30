"""Durable file writing, seen through its `Disk`: each file's bytes are fsynced whole before the link (media,
create-only) or rename (sidecars) that gives it its name, and the folder is fsynced after it. A crash test cannot
see this order (a killed process loses nothing the page cache holds; only power loss does), so the test records
the system calls instead."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from receiver.mediafiles import checked_body, save_body
from storage.media.local import Disk, LocalMediaStore, write_atomically

pytestmark = pytest.mark.anyio

SAMPLE = (Path(__file__).parents[2] / "submitter" / "simulators" / "sample.mp4").read_bytes()
BODY = SAMPLE * (1 + 3 * 1024 * 1024 // len(SAMPLE))  # over WRITE_BLOCK several times: the writer thread takes part
HEADERS = {"content-type": "video/mp4", "content-length": str(len(BODY))}
FOLDER = "<folder>"


async def streamed(data: bytes) -> AsyncIterator[bytes]:
    # A streamed body, as from a socket: bytes content would be read whole before save_body saw it.
    for start in range(0, len(data), 100_000):
        yield data[start : start + 100_000]


@dataclass
class Ledger:
    """A disk that makes the real calls and writes each one down: what was fsynced (a file with its size then, or a
    folder), and what was renamed to what. Files are known by inode, which a rename keeps."""

    calls: list[tuple[str, int | str, int | str | None]] = field(default_factory=list)

    def fsync(self, fd: int) -> None:
        info = os.fstat(fd)
        self.calls.append(("fsync", info.st_ino, info.st_size if stat.S_ISREG(info.st_mode) else None))
        os.fsync(fd)

    def replace(self, source: Path, target: Path) -> None:
        self.calls.append(("replace", Path(source).name, Path(target).name))
        os.replace(source, target)

    def link(self, source: Path, target: Path) -> None:
        self.calls.append(("link", Path(source).name, Path(target).name))
        os.link(source, target)

    @property
    def disk(self) -> Disk:
        return Disk(fsync=self.fsync, replace=self.replace, link=self.link)

    def named(self, path: Path) -> list[tuple[str, int | str, int | str | None]]:
        """The calls, with the inodes of `path` and its folder given their names."""
        names: dict[int | str, int | str] = {path.stat().st_ino: path.name, path.parent.stat().st_ino: FOLDER}
        return [(op, names.get(what, what) if op == "fsync" else what, extra) for op, what, extra in self.calls]


async def test_a_media_file_is_fsynced_whole_then_linked_then_its_folder_fsynced(tmp_path: Path) -> None:
    ledger = Ledger()
    media = LocalMediaStore(tmp_path / "media", disk=ledger.disk)
    path = tmp_path / "media" / "r" / "0.mp4"
    cdn = httpx.MockTransport(lambda request: httpx.Response(200, headers=HEADERS, content=streamed(BODY)))
    async with httpx.AsyncClient(transport=cdn) as http, http.stream("GET", "https://cdn.test/0.mp4") as response:
        written = await save_body(response, media, "r/0.mp4", lambda point: None, max_bytes=len(BODY))

    assert written.size == len(BODY) and path.read_bytes() == BODY
    assert ledger.named(path) == [
        ("fsync", "0.mp4", len(BODY)),  # every byte, while it is still 0.mp4.part
        ("link", "0.mp4.part", "0.mp4"),  # a link, not a rename: it fails when the name is taken
        ("fsync", FOLDER, None),  # the new name itself
    ]
    assert sorted(p.name for p in path.parent.iterdir()) == ["0.mp4"]  # the .part unlinked


async def test_a_sidecar_is_fsynced_whole_then_renamed_then_its_folder_fsynced(tmp_path: Path) -> None:
    ledger = Ledger()
    path = tmp_path / "0.json"
    path.write_bytes(b'{"old": true}')  # a retry writes over the last attempt's sidecar
    data = json.dumps({"sha256": "ab" * 32, "bytes": len(BODY)}).encode()
    await write_atomically(path, data, disk=ledger.disk)

    assert path.read_bytes() == data
    assert ledger.named(path) == [
        ("fsync", "0.json", len(data)),
        ("replace", "0.json.tmp", "0.json"),
        ("fsync", FOLDER, None),
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.json"]  # no .tmp left behind


async def test_the_blocks_of_a_body_reach_the_store_as_they_came_not_cut_into_pieces() -> None:
    # The reader hands on blocks of up to a MiB; cutting each into 64 KiB pieces (and the store gluing them back)
    # cost the event loop a fifth of a download's CPU. The very objects go on: no byte is copied on the way.
    blocks = [SAMPLE[:32] + bytes(1024 * 1024 - 32), bytes(700 * 1024)]

    async def body() -> AsyncIterator[bytes]:
        for block in blocks:
            yield block

    headers = {"content-type": "video/mp4", "content-length": str(sum(map(len, blocks)))}
    response = httpx.Response(
        200, headers=headers, stream=AsyncBody(body()), request=httpx.Request("GET", "https://cdn.test/0.mp4")
    )
    seen = [chunk async for chunk in checked_body(response, "r/0.mp4", lambda point: None, max_bytes=10 * 1024 * 1024)]
    assert len(seen) == 2 and all(chunk is block for chunk, block in zip(seen, blocks, strict=True))


class AsyncBody(httpx.AsyncByteStream):
    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            yield chunk
