"""The client commands of `reelhook`: each one call to a running service's API (REELHOOK_SERVER_URL)."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from receiver import watch

MOTIONS = ["low", "high"]
STATUSES = ["queued", "submitted", "running", "succeeded", "failed"]
RECONCILE_TIMEOUT = 300.0
SERVER = "http://127.0.0.1:8000"
PAGE, ALL_PAGE = 20, 500
TOKEN_FROM = "reelhook:token-from"  # not an environment variable: where --token put the token, for the 401 message


class ApiError(Exception):
    """A client command that failed: `error` is a short code, `detail` says what happened and what to do."""

    def __init__(self, detail: str, error: str = "failed", status: int | None = None) -> None:
        super().__init__(f"{status} {error}: {detail}" if status else detail)
        self.error, self.detail = error, detail


def add_client_commands(commands: Any) -> None:
    """Register the client commands on `reelhook`'s subparsers."""
    submit = _command(commands, "submit", "animate an image (any provider)", _submit)
    submit.add_argument("--provider", default="ttapi")
    submit.add_argument("--prompt")
    start, end = submit.add_mutually_exclusive_group(), submit.add_mutually_exclusive_group()
    start.add_argument("--image-url", help="the first frame, at a URL the provider can fetch")
    start.add_argument("--image", metavar="FILE", type=_file_bytes, help="the first frame, a local PNG, JPEG or WebP")
    end.add_argument("--end-image-url", help="the last frame, at a URL the provider can fetch")
    end.add_argument("--end-image", metavar="FILE", type=_file_bytes, help="the last frame, a local image file")
    submit.add_argument("--task-id", help="APIMart: animate this finished imagine instead of an image URL")
    submit.add_argument("--index", type=int, help="APIMart: which tile of --task-id (0-3)")
    submit.add_argument("--motion", choices=MOTIONS)
    submit.add_argument("--resolution", help="480p or 720p")
    submit.add_argument("--batch-size", type=int)
    submit.add_argument("--loop", action="store_true", default=None, help="AceData: a looping video")
    option_help = "a provider option, such as aspect_ratio=16:9 (repeatable; JSON values allowed)"
    submit.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help=option_help)

    extend = _command(commands, "extend", "extend one video of a finished job", _follow_up)
    extend.add_argument("parent_id")
    extend.add_argument("--index", type=int, required=True)
    extend.add_argument("--prompt")
    extend.add_argument("--motion", choices=MOTIONS)
    extend.set_defaults(action="extend")

    imagine = _command(commands, "imagine", "make four images from a prompt (TTAPI)", _fresh)
    imagine.add_argument("--prompt", required=True)
    imagine.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    imagine.set_defaults(action="imagine")

    act = _command(commands, "action", "run an action a finished image job lists (upsample1, variation2, ...)", _act)
    act.add_argument("parent_id")
    act.add_argument("name")

    seed = _command(commands, "seed", "get the seed of a finished image job (TTAPI)", _follow_up)
    seed.add_argument("parent_id")
    seed.set_defaults(action="seed")

    blend = _command(commands, "blend", "blend 2-5 image files into new images (TTAPI)", _fresh)
    blend.add_argument("--image", dest="images_base64", type=_base64_file, action="append", required=True)
    blend.add_argument("--dimensions", choices=["PORTRAIT", "SQUARE", "LANDSCAPE"])
    blend.set_defaults(action="blend")

    describe = _command(commands, "describe", "four prompts for an image file (TTAPI)", _fresh)
    describe.add_argument("--image", dest="image_base64", type=_base64_file, required=True)
    describe.set_defaults(action="describe")

    inpaint = _command(commands, "inpaint", "repaint a masked region of a finished image job (TTAPI)", _follow_up)
    inpaint.add_argument("parent_id")
    inpaint.add_argument("--mask", dest="mask_base64", type=_base64_file, required=True)
    inpaint.add_argument("--prompt")
    inpaint.set_defaults(action="inpaint")

    jobs = _command(commands, "jobs", "list jobs, newest first", _jobs)
    jobs.add_argument("--status", choices=STATUSES)
    jobs.add_argument("--limit", type=int, help=f"jobs per page (default {PAGE}; {ALL_PAGE} with --all)")
    jobs.add_argument("--cursor", help="start after the page that gave this next_cursor")
    jobs.add_argument("--all", action="store_true", help="follow next_cursor to the last job")

    show = _command(commands, "show", "show one job and its files", _show)
    show.add_argument("job_id")

    _command(commands, "reconcile", "look up now the jobs whose results are overdue", _reconcile)
    cancel = _command(commands, "cancel", "fail a queued job before it is sent", _job_verb)
    cancel.add_argument("job_id")
    cancel.set_defaults(verb="cancel")
    retry = _command(commands, "retry", "try a job's failed downloads again now", _job_verb)
    retry.add_argument("job_id")
    retry.set_defaults(verb="retry")
    prune = _command(commands, "prune", "drop old raw callback bodies of finished jobs (their digests stay)", _prune)
    prune.add_argument("--callbacks-older-than", dest="days", type=float, required=True, metavar="DAYS")

    pause = _command(commands, "pause", "kill switch: rules stop submitting (callbacks are still stored)", _switch)
    pause.add_argument("--reason", default="paused from the command line")
    pause.set_defaults(path="/api/pause")
    _command(commands, "resume", "let rules submit again; what waited goes out now", _switch).set_defaults(
        path="/api/resume"
    )
    _command(
        commands, "status", "whether the service is paused; per provider its queue, slots, downloads and spend", _status
    )
    _command(commands, "open", "print a one-time link that signs a browser in to the dashboard (5 minutes)", _open)
    follow = _command(commands, "watch", "follow a job and its follow-ups until downloaded and settled", _watch)
    follow.add_argument("job_id")


def _command(commands: Any, name: str, help: str, run: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help)
    parser.add_argument("--json", action="store_true", help="print JSON (errors too, on stderr)")
    parser.add_argument("--server", metavar="URL", help="the service's URL (default $REELHOOK_SERVER_URL or " + SERVER)
    parser.add_argument("--token", help="the API token (default $REELHOOK_API_TOKEN or the data dir's api-token)")
    parser.set_defaults(run=_with_flags(run))
    if run in (_submit, _fresh, _follow_up, _act, _watch):  # the commands that create a job, and watch itself
        if run is not _watch:
            parser.add_argument("--wait", action="store_true", help="follow the job and its follow-ups until settled")
        parser.add_argument("--interval", type=float, default=watch.INTERVAL, help="seconds between looks (0.5)")
        parser.add_argument("--timeout", type=float, metavar="SECONDS", help="stop waiting after this long (exit 1)")
    return parser


def _with_flags(run: Any) -> Any:
    """`run` with --server and --token laid over the environment, which every command reads its connection from."""

    def run_with_flags(args: argparse.Namespace, environ: Mapping[str, str]) -> Any:
        flags = {
            "REELHOOK_SERVER_URL": args.server,
            "REELHOOK_API_TOKEN": args.token,
            TOKEN_FROM: args.token and "--token",
        }
        return run(args, {**environ, **{key: value for key, value in flags.items() if value}})

    return run_with_flags


def _base64_file(path: str) -> str:
    try:
        return base64.b64encode(Path(path).read_bytes()).decode()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc.strerror}") from None


def _file_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc.strerror}") from None


def _token(environ: Mapping[str, str]) -> tuple[str, str]:
    """The API token and where it was read from: --token, REELHOOK_API_TOKEN, or the data dir's api-token."""
    if token := environ.get("REELHOOK_API_TOKEN"):
        return token, environ.get(TOKEN_FROM, "REELHOOK_API_TOKEN")
    where = f"{(environ.get('REELHOOK_DATA_DIR') or './data').rstrip('/')}/api-token"
    try:
        return Path(where).read_text().strip(), where
    except OSError:
        detail = f"no API token: pass --token, set REELHOOK_API_TOKEN, or run where {where} is the server's"
        raise ApiError(detail, "no_token") from None


def _call(environ: Mapping[str, str], method: str, path: str, **kwargs: Any) -> Any:
    token, where = _token(environ)
    base = _server(environ)
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30.0) as client:
        try:
            response = client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach the server at {base}: {exc}", "unreachable") from None
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code == 401:
        # The usual cause is a token from another server's folder, so say which token went where.
        detail = (f"the token from {where} was refused by {base}; pass --token or set REELHOOK_API_TOKEN "
                  "(the server's token is in its data dir's api-token)")  # fmt: skip
        raise ApiError(detail, "unauthorized", 401)
    if response.status_code >= 400:
        raise ApiError(body.get("detail", response.text), body.get("error", "failed"), response.status_code)
    return body


def _create(environ: Mapping[str, str], body: dict[str, Any], args: argparse.Namespace) -> int:
    job = _call(environ, "POST", "/api/jobs", json={key: value for key, value in body.items() if value is not None})
    if not (args.wait and args.json):  # waiting, --json prints the job once, when it has settled
        _print_job(job, args.json, _server(environ))
    return _watch(argparse.Namespace(**{**vars(args), "job_id": job["id"]}), environ) if args.wait else 0


def _watch(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    out = sys.stderr if args.json else sys.stdout  # with --json, stdout keeps only JSON
    job_id = args.job_id
    if len(job_id) < 32:  # a prefix (a uuid's hex is 32): watch compares whole ids
        job_id = _call(environ, "GET", f"/api/jobs/{job_id}")["id"]
    code = watch.watch(
        lambda path, params: _call(environ, "GET", path, params=params), job_id, out,
        interval=args.interval, timeout=args.timeout, tty=out.isatty(),
    )  # fmt: skip
    if args.json and code != watch.INTERRUPTED:
        _print_job(_call(environ, "GET", f"/api/jobs/{job_id}"), True)
    return code


def _options(pairs: list[str]) -> dict[str, Any] | None:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ApiError(f"--option takes KEY=VALUE, got {pair!r}", "invalid_option")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options or None


def _submit(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    names = ("provider", "prompt", "image_url", "end_image_url", "task_id", "index", "motion", "resolution",
             "batch_size", "loop")  # fmt: skip
    body = {"action": "generate", **{name: getattr(args, name) for name in names}, "options": _options(args.option)}
    # A local frame goes to the server first, which keeps it and serves it to the provider (receiver/frames.py).
    for name, data in (("image_url", args.image), ("end_image_url", args.end_image)):
        if data is not None:
            body[name] = _call(environ, "POST", "/api/frames", content=data)["frame"]
    return _create(environ, body, args)


def _fresh(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    fields = ("prompt", "images_base64", "dimensions", "image_base64")
    body = {"action": args.action, **{name: getattr(args, name, None) for name in fields}}
    if hasattr(args, "option"):
        body["options"] = _options(args.option)
    return _create(environ, body, args)


def _follow_up(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    fields = ("index", "prompt", "motion", "mask_base64")
    body = {"action": args.action, "parent_id": args.parent_id, **{name: getattr(args, name, None) for name in fields}}
    return _create(environ, body, args)


def _act(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    return _create(environ, {"action": args.name, "parent_id": args.parent_id}, args)


def _jobs(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    params: dict[str, str | int] = {"limit": args.limit or (ALL_PAGE if args.all else PAGE)}
    if args.status:
        params["status"] = args.status
    cursor, jobs = args.cursor, []
    while True:
        page = _call(environ, "GET", "/api/jobs", params=params | ({"cursor": cursor} if cursor else {}))
        jobs += page["jobs"]
        cursor = page["next_cursor"]
        if not (args.all and cursor):
            break
    if args.json:
        print(json.dumps({"jobs": jobs, "next_cursor": cursor}, indent=2))
        return
    if cursor:  # on stderr, so the list on stdout stays one job a line
        print(f"more: reelhook jobs --cursor {cursor} (or --all)", file=sys.stderr)
    for job in jobs:
        done = sum(video["status"] == "downloaded" for video in job["videos"])
        print(f"{job['id']}  {job['status']:<9}  {job['provider']:<9} {job['action']:<10} depth {job['depth']}  "
              f"files {done}/{len(job['videos'])}  {job['prompt'] or ''}"[:160])  # fmt: skip


def _show(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    _print_job(_call(environ, "GET", f"/api/jobs/{args.job_id}"), args.json, _server(environ))


def _reconcile(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    # Each lookup is one request to a provider; a backlog after an outage can take longer than one API call.
    report = _call(environ, "POST", "/api/reconcile", timeout=RECONCILE_TIMEOUT)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"looked up {report['looked_up']} overdue jobs; {report['settled']} settled, {report['lost']} given up on")


def _job_verb(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    report = _call(environ, "POST", f"/api/jobs/{args.job_id}/{args.verb}")
    if args.json:
        print(json.dumps(report, indent=2))
    elif args.verb == "cancel":
        print(f"cancelled {report['cancelled']}")
    else:
        print(f"retrying {report['retried']} downloads of {args.job_id}")


def _prune(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    report = _call(environ, "POST", "/api/prune", json={"callbacks_older_than_days": args.days})
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"pruned {report['pruned']} callback bodies (their digests are kept)")


def _switch(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    body = {"reason": args.reason} if hasattr(args, "reason") else {}
    state = _call(environ, "POST", args.path, json=body)
    print(
        json.dumps(state, indent=2) if args.json else (f"paused: {state['paused']}" if state["paused"] else "running")
    )


def _status(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    state = _call(environ, "GET", "/api/status")
    if args.json:
        print(json.dumps(state, indent=2))
        return
    print(f"paused: {state['paused']}" if state["paused"] else "running")
    print(f"follow-ups queued (held while paused): {state['followups_queued']}")
    print(f"notifications waiting: {state['notifications_pending']}")
    public = state.get("public_url") or {}
    if public.get("waiting"):
        print(f"{public['waiting']}: paid jobs stay queued")
    elif public.get("url"):
        print(f"public URL {public['url']} (from {public['from']})")
    for p in state["providers"]:
        spent = _amounts(p.get("spent_today") or {}) or "nothing reported"
        print(
            f"{p['provider']}: queued {p['queued']}, in flight {p['in_flight']}/{p['limit']}, overdue {p['overdue']},"
            f" lost today {p['lost_today']}; downloads pending {p['downloads_pending']}, failed {p['downloads_failed']}"
            f"; spent today {spent}"
        )
    if state.get("spend"):
        print("spend (UTC day, as each provider reported it; units are not converted):")
    for item in state.get("spend", []):
        jobs = f"{item['jobs']} job{'s' if item['jobs'] != 1 else ''}"
        print(f"  {item['day']}  {item['provider']:<9} {_amounts({item['unit']: item['amount']}):>16}  ({jobs})")


def _amounts(costs: Mapping[str, float]) -> str:
    """{"usd": 0.2, "credits": 2.0} as "0.2 usd, 2 credits"."""
    return ", ".join(f"{amount:g} {unit}" for unit, amount in costs.items())


def _open(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    link = _call(environ, "POST", "/api/login-link")
    print(json.dumps(link, indent=2) if args.json else link["url"])


def _server(environ: Mapping[str, str]) -> str:
    return (environ.get("REELHOOK_SERVER_URL") or SERVER).rstrip("/")


def _print_job(job: dict[str, Any], as_json: bool, server: str = "") -> None:
    if as_json:
        print(json.dumps(job, indent=2))
        return
    print(f"job {job['id']}: {job['status']} ({job['provider']} {job['action']}, depth {job['depth']})")
    for key in ("provider_job_id", "parent_id", "rule", "prompt", "error"):
        if job.get(key):
            print(f"  {key}: {job[key]}")
    if job.get("cost"):
        print(f"  cost: {_amounts(job['cost'])}")
    for video in job["videos"]:
        # The signed link opens the file from anywhere the server is reachable (an hour); the key is not a path here.
        where = server + video["media_url"] if video.get("media_url") else video["url"]
        print(f"  file {video['index']}: {video['status']}  {where}")
    result = job.get("result") or {}
    if result.get("seed"):
        print(f"  seed: {result['seed']}")
    for number, prompt in enumerate(result.get("prompts") or [], start=1):
        print(f"  prompt {number}: {prompt}")
    if result.get("actions"):
        print(f"  actions: {', '.join(result['actions'])}  (reelhook action {job['id']} NAME)")
    if result.get("cover_url"):
        print(f"  cover: {result['cover_url']}")
    for note in job.get("notes", []):
        print(f"  note ({note['rule']}): {note['message']}")
