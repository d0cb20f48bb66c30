"""bench/wrk.py drives Debian's wrk with requests written beforehand: in "once" mode every line reaches the server
exactly once (a benchmark of distinct signed callbacks depends on it), and the report counts those and no more."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench import wrk

pytestmark = pytest.mark.skipif(wrk.available() is None, reason="wrk is not installed (make bench installs it)")


class Recorder(BaseHTTPRequestHandler):
    """Answers every POST 200 on a kept-alive connection and records its path and body; a GET is answered 405, as
    reelhook's POST-only hook route does."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # the head and body go out in two writes
    seen: Counter[tuple[str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.seen[(self.path, body)] += 1  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_GET(self) -> None:
        self.send_response(405)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.daemon_threads = True
    server.seen = Counter()  # type: ignore[attr-defined]
    server.lock = threading.Lock()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("connections", [1, 16])
def test_once_sends_every_line_exactly_once(tmp_path: Path, recorder: ThreadingHTTPServer, connections: int) -> None:
    lines = [(f"/hooks/ttapi/token-{i}", json.dumps({"task_id": f"job-{i}", "note": "a b"})) for i in range(300)]
    requests = wrk.write_lines(tmp_path / "lines.txt", lines)
    url = "http://{}:{}".format(*recorder.server_address[:2])

    report = wrk.load(url, requests, connections=connections, seconds=20, mode="once", workdir=tmp_path)

    seen = recorder.seen  # type: ignore[attr-defined]
    assert seen == Counter((path, body.encode()) for path, body in lines)
    # Connections that asked for a request as the last lines went out got the 405 GET: not counted as callbacks.
    assert report["requests"] == 300 and report["tail"] < connections
    assert report["errors"] == {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    assert 0 < report["elapsed_s"] < 20 and report["generator_cpu_s"] > 0


def test_a_line_with_a_tab_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no tab or newline"):
        wrk.write_lines(tmp_path / "lines.txt", [("/hooks/a", '{"a": "\t"}')])
