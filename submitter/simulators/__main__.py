"""One provider simulator in a process of its own: `python -m submitter.simulators ttapi --port 9001 --api-key K`.

`reelhook serve` starts a simulator inside itself for each provider without a key. Several instances behind one
load balancer need the opposite: ONE simulator that all of them call, as they would call the real provider, so
that it sees the total in flight and every submission. Point each instance at it with
`REELHOOK_<PROVIDER>_BASE_URL` and `REELHOOK_<PROVIDER>_API_KEY` (the key makes the instances treat it as real).
`--fd` serves on a socket the caller bound, so a test knows the address before the process starts.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

import uvicorn

from submitter.simulators.registry import SIMULATORS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m submitter.simulators", description=__doc__)
    parser.add_argument("provider", choices=sorted(SIMULATORS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fd", type=int, help="serve on an already-bound socket (file descriptor)")
    parser.add_argument("--api-key", help="the key callers must send (none: any caller is let in)")
    parser.add_argument("--delay", type=float, default=2.0, help="seconds a job takes (REELHOOK_SIMULATOR_DELAY)")
    parser.add_argument("--max-in-flight", type=int, default=10, help="jobs the provider works on at once")
    parser.add_argument("--videos-per-job", type=int, default=4)
    parser.add_argument("--state-dir", type=Path, help="keep the jobs in <dir>/<provider>.json across restarts")
    args = parser.parse_args(argv)

    simulator = SIMULATORS[args.provider](
        api_key=args.api_key,
        delay=args.delay,
        max_in_flight=args.max_in_flight,
        videos_per_job=args.videos_per_job,
        state_dir=args.state_dir,
    )
    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)
    else:
        sock = socket.create_server((args.host, args.port))
    host, port = sock.getsockname()[:2]
    print(f"the {args.provider} simulator at http://{host}:{port}", flush=True)
    config = uvicorn.Config(simulator.app, lifespan="on", log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])  # until SIGINT or SIGTERM
    return 0


if __name__ == "__main__":
    sys.exit(main())
