"""`python -m bench.static --fd N --directory DIR`: a static file server for the download benchmark.

The stdlib's threaded `http.server`, with two changes: HTTP/1.1, so a client keeps its connection for the next file
(as a CDN allows), and the body goes out with `socket.sendfile` (zero-copy from the page cache), so the server costs
almost no CPU and the clients under test, not the server, set the pace on a 2-core machine.
"""

from __future__ import annotations

import argparse
import functools
import socket
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def copyfile(self, source: Any, outputfile: Any) -> None:
        try:
            self.connection.sendfile(source)
        except OSError:  # a client that hung up mid-body; nothing to clean up
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.static", description=__doc__)
    parser.add_argument("--fd", type=int, required=True, help="an already-bound, listening TCP socket")
    parser.add_argument("--directory", required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=args.directory), bind_and_activate=False
    )
    server.socket.close()
    server.socket = socket.socket(fileno=args.fd)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
