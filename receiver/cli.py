"""The `reelhook` command: `serve` runs the service; the other commands talk to a running one over its API."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import httpx

from receiver.rules import RuleError, RuleSet, check_rules_file
from receiver.serving import bind_socket, make_server, running, socket_url
from receiver.settings import ProviderSettings, Settings, SettingsError

log = logging.getLogger("reelhook")


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args, environ) or 0)
    except (SettingsError, RuleError) as exc:
        print(f"reelhook: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"reelhook: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reelhook", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the service (and the provider simulator when no key is set)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--fd", type=int, help="serve on an already-bound socket (file descriptor)")
    serve.set_defaults(run=_serve)

    submit = commands.add_parser("submit", help="animate an image")
    submit.add_argument("--provider", default="ttapi")
    submit.add_argument("--prompt", required=True)
    submit.add_argument("--image-url", required=True)
    submit.add_argument("--end-image-url")
    submit.add_argument("--motion", choices=["low", "high"])
    submit.add_argument("--resolution")
    submit.add_argument("--batch-size", type=int)
    submit.add_argument("--json", action="store_true", help="print the job as JSON")
    submit.set_defaults(run=_submit)

    extend = commands.add_parser("extend", help="extend one video of a finished job")
    extend.add_argument("parent_id")
    extend.add_argument("--index", type=int, required=True)
    extend.add_argument("--prompt")
    extend.add_argument("--motion", choices=["low", "high"])
    extend.add_argument("--json", action="store_true")
    extend.set_defaults(run=_extend)

    jobs = commands.add_parser("jobs", help="list jobs, newest first")
    jobs.add_argument("--status", choices=["queued", "submitted", "running", "succeeded", "failed"])
    jobs.add_argument("--limit", type=int, default=20)
    jobs.add_argument("--json", action="store_true")
    jobs.set_defaults(run=_jobs)

    show = commands.add_parser("show", help="show one job and its videos")
    show.add_argument("job_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=_show)

    rules = commands.add_parser("rules", help="rules file tools").add_subparsers(required=True, metavar="COMMAND")
    check = rules.add_parser("check", help="validate a rules file without starting the service")
    check.add_argument("file", type=Path)
    check.set_defaults(run=_rules_check)
    return parser


# -- serve ----------------------------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs each request's full URL at INFO; a hook URL's token is a credential, so keep those out of the log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = Settings.from_env(environ).with_local_secrets()
    rules = RuleSet.load(settings.rules_path) if settings.rules_path else RuleSet.empty()  # refuse before binding
    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)
        sock.setblocking(False)
    else:
        sock = bind_socket(args.host, args.port)
    if "REELHOOK_PUBLIC_URL" not in environ:
        settings = replace(settings, public_url=socket_url(sock))
    try:
        anyio.run(_serve_async, settings, rules, sock)
    finally:
        sock.close()
    return 0


async def _serve_async(settings: Settings, rules: RuleSet, sock: socket.socket) -> None:
    from receiver.app import create_app  # the client commands need none of the server's imports
    from submitter.simulators.registry import SIMULATORS

    async with AsyncExitStack() as stack:
        trusted: set[str] = set()
        providers = dict(settings.providers)
        for name, config in settings.providers.items():
            if config.simulated and name in SIMULATORS:
                simulator = SIMULATORS[name](delay=settings.simulator_delay)
                url = await stack.enter_async_context(running(simulator.app))
                providers[name] = ProviderSettings(api_key=None, base_url=url)
                trusted.add(url)
                log.info("no REELHOOK_%s_API_KEY: the built-in %s simulator answers at %s", name.upper(), name, url)
        settings = replace(settings, providers=providers)
        app = create_app(settings, rules=rules, trusted_origins=trusted)
        log.info("reelhook listening on %s (public URL %s); data in %s", socket_url(sock), settings.public_url,
                 settings.data_dir)  # fmt: skip
        await make_server(app, log_level="info", handle_signals=True).serve([sock])


# -- client commands ------------------------------------------------------------------------------------------------


class ApiError(Exception):
    pass


def _client(environ: Mapping[str, str]) -> httpx.Client:
    token = environ.get("REELHOOK_API_TOKEN")
    if not token:
        stored = Path(environ.get("REELHOOK_DATA_DIR") or "./data") / "api-token"
        if not stored.exists():
            raise ApiError("set REELHOOK_API_TOKEN (or run from the folder whose ./data the server uses)")
        token = stored.read_text().strip()
    base = environ.get("REELHOOK_SERVER_URL", "http://127.0.0.1:8000").rstrip("/")
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30.0)


def _call(environ: Mapping[str, str], method: str, path: str, **kwargs: Any) -> Any:
    with _client(environ) as client:
        try:
            response = client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach the server at {client.base_url}: {exc}") from None
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code >= 400:
        raise ApiError(f"{response.status_code} {body.get('error', '')}: {body.get('detail', response.text)}")
    return body


def _submit(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    body = {
        "provider": args.provider,
        "action": "generate",
        "prompt": args.prompt,
        "image_url": args.image_url,
        "end_image_url": args.end_image_url,
        "motion": args.motion,
        "resolution": args.resolution,
        "batch_size": args.batch_size,
    }
    job = _call(environ, "POST", "/api/jobs", json={k: v for k, v in body.items() if v is not None})
    _print_job(job, args.json)


def _extend(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    body = {"action": "extend", "parent_id": args.parent_id, "index": args.index, "prompt": args.prompt,
            "motion": args.motion}  # fmt: skip
    job = _call(environ, "POST", "/api/jobs", json={k: v for k, v in body.items() if v is not None})
    _print_job(job, args.json)


def _jobs(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    params: dict[str, str | int] = {"limit": args.limit}
    if args.status:
        params["status"] = args.status
    jobs = _call(environ, "GET", "/api/jobs", params=params)["jobs"]
    if args.json:
        print(json.dumps(jobs, indent=2))
        return
    for job in jobs:
        done = sum(video["status"] == "downloaded" for video in job["videos"])
        print(f"{job['id']}  {job['status']:<9}  {job['provider']:<8} {job['action']:<8} depth {job['depth']}  "
              f"videos {done}/{len(job['videos'])}  {job['prompt'] or ''}"[:160])  # fmt: skip


def _show(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    _print_job(_call(environ, "GET", f"/api/jobs/{args.job_id}"), args.json)


def _print_job(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(job, indent=2))
        return
    print(f"job {job['id']}: {job['status']} ({job['provider']} {job['action']}, depth {job['depth']})")
    for key in ("provider_job_id", "parent_id", "rule", "prompt", "error"):
        if job.get(key):
            print(f"  {key}: {job[key]}")
    for video in job["videos"]:
        print(f"  video {video['index']}: {video['status']}  {video['path'] or video['url']}")


def _rules_check(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    print(check_rules_file(args.file))


if __name__ == "__main__":
    sys.exit(main())
