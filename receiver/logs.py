"""Log lines: as text for a person or as JSON for a machine (REELHOOK_LOG_FORMAT), and never with a credential.

The JSON form is one object per line: `ts`, `level`, `logger`, `message`, then `event`, `job_id`, `provider` and
`provider_job_id` (null where a line is about no job, or a value is not known where it is logged), then whatever
else the call site passed in `extra=`. A call site names its line with a short stable `event` (`job.sent`,
`callback.applied`), so that a query asks for an event instead of matching a sentence that may be reworded, and
passes the record the line is about as `job`: a Job, or anything else with an `id` or a `job_id` (a Video, a hook
token's claim), whose `provider` and `provider_job_id` are taken where it has them; a field the call site names
itself wins. So `log.info("…", extra={"event": "job.sent", "job": job, "provider_job_id": answer})` needs no import
(submitter/ cannot import receiver/). The text form is the sentence alone, as it always was, ids inside it.

Credentials are kept out twice. The call sites log ids, never keys or hook URLs. And every line, whoever wrote it
(httpx's request lines, uvicorn's access lines, a traceback quoting a URL), passes through a `Redaction` on its way
out: a hook path's token becomes `…` in each form a URL takes in a line (as is, percent-encoded once or twice, with
JSON-escaped slashes), so does anything shaped like a hook token on its own, and each secret the settings name
becomes `**********` (as is, percent-encoded, JSON-escaped). The first two keep a token out even of a line whose
author never thought of it; the third covers what they cannot recognise. A secret fetched at run time (WaveSpeed's
webhook secret) is not known to the redaction: the call sites never log it.

What a line costs matters: every callback logs one at INFO. So while logging is configured the standard library
does not look up the calling frame, thread or process of each record (no format here prints them: they were the
dearest part of a line), the text form's timestamp is built once a second, and the redaction skips a pattern a line
cannot match (a hook path needs `hooks`, a token shape two dots) before running it. The bench's ingest measured the
line at about a fifth of the main thread's CPU per callback before.

Levels: REELHOOK_LOG_LEVEL applies to reelhook's own loggers. Other libraries stay at INFO or above whatever it says
(aiosqlite logs every statement at DEBUG); DEBUG adds a line for each HTTP request in (uvicorn's access log) and out
(httpx's request lines), both of which name hook URLs and so rely on the redaction.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, quote_plus

JOB_FIELDS = ("event", "job_id", "provider", "provider_job_id")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
HIDDEN = "**********"
MIN_SECRET = 8  # a shorter value would blank ordinary words; no key or secret reelhook takes is that short

# What every LogRecord has; anything else on a record came from `extra=`. uvicorn's `color_message` is its message
# again with terminal colours.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "color_message"}

_SLASH = r"(?:\\*/|%(?:25)*2[Ff])"  # as is, JSON-escaped, percent-encoded (once, or again: %252F)
_HOOK_TOKEN = re.compile(rf"(hooks{_SLASH}[\w-]+{_SLASH})[^\s/\\?#&%\"'<>]+")
# A hook token on its own: itsdangerous's payload.timestamp.signature, URL-safe base64 (a leading "." when zlib
# shrank the payload). Not an id, a hash or a host name of reelhook's: those have no two dots between long runs.
_TOKEN_SHAPE = re.compile(r"(?<![\w.-])\.?[\w-]{20,}\.[\w-]{4,8}\.[\w-]{20,}(?![\w-])")


class Redaction:
    """Rewrites a log line so that no hook token and no secret it was told of is left in it."""

    def __init__(self) -> None:
        self._forms: list[str] = []

    def add(self, secrets: Iterable[object]) -> None:
        """Hide each of `secrets` (a Secret, a str, or None for one that is not set) from now on."""
        forms = set(self._forms)
        for secret in secrets:
            if secret is not None and len(str(secret)) >= MIN_SECRET:
                forms |= _forms(str(secret))
        self._forms = sorted(forms, key=len, reverse=True)  # longest first: a form inside another goes with it

    def __call__(self, text: str) -> str:
        if "hooks" in text:  # both patterns find nothing in a line without what they need: skip the regex search
            text = _HOOK_TOKEN.sub(r"\1…", text)
        if text.count(".") >= 2:
            text = _TOKEN_SHAPE.sub("…", text)
        for form in self._forms:
            if form in text:
                text = text.replace(form, HIDDEN)
        return text


def _forms(secret: str) -> set[str]:
    percent = {quote(secret), quote(secret, safe=""), quote_plus(secret)}  # in a path, a query value, a form field
    percent |= {re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), form) for form in percent}  # %2f is valid too
    escaped = json.dumps(secret)[1:-1]
    return {secret, escaped, escaped.replace("/", "\\/")} | percent


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Redaction) -> None:
        super().__init__(TEXT_FORMAT)
        self._redact = redact
        self._second: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        """logging's own `YYYY-mm-dd HH:MM:SS,mmm` in local time, its seconds formatted once per second."""
        second = int(record.created)
        if second != self._second[0]:
            self._second = (second, time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second)))
        return f"{self._second[1]},{int(record.msecs):03d}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; every string in it redacted before it is encoded."""

    def __init__(self, redact: Redaction) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line |= {name: getattr(record, name, None) for name in JOB_FIELDS}
        job = getattr(record, "job", None)
        if job is not None:  # extra={"job": job}: the record's ids fill in what the call site did not name itself
            line["job_id"] = line["job_id"] or getattr(job, "id", None) or getattr(job, "job_id", None)
            line["provider"] = line["provider"] or getattr(job, "provider", None)
            line["provider_job_id"] = line["provider_job_id"] or getattr(job, "provider_job_id", None)
        extra = vars(record).items()
        line |= {name: value for name, value in extra if name not in _STANDARD and name not in line and name != "job"}
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, version, status = record.args  # h11_impl's '%s - "%s %s HTTP/%s" %d'
            line |= {"event": "http.request", "client": client, "method": method, "path": path, "status": status}
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(self._clean(line))

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._redact(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, dict):
            return {str(key): self._clean(item) for key, item in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._clean(item) for item in value]
        return self._redact(str(value))  # a Path, an enum, an exception: as its text


class StderrHandler(logging.Handler):
    """Writes to whatever sys.stderr is when a line is logged (a test's capture, say, rather than the one that was
    there when logging was set up and may since be closed)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


@contextmanager
def configured(log_format: str = "text", level: str = "INFO") -> Iterator[Redaction]:
    """For the block, send every log line to stderr as `log_format` ("text" or "json"), reelhook's own from `level`
    up; yields the Redaction every line passes through, for the caller to add the secrets to once it has them all.

    The loggers are put back as they were after the block (uvicorn's too: route_uvicorn runs inside it), so that
    `reelhook serve` run inside a test leaves no handler behind writing into later tests' output."""
    loggers = [logging.getLogger(name) for name in ("", "reelhook", "httpx", *_UVICORN)]
    saved = [(logger, logger.level, logger.handlers[:], logger.propagate) for logger in loggers]
    # No format here prints a record's source line, thread or process: don't look them up for every record.
    # `_srcfile = None` is how the logging HOWTO ("Optimization") says to skip the frame walk.
    lookups = (logging._srcfile, logging.logThreads, logging.logProcesses, logging.logMultiprocessing)
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    redact = Redaction()
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter(redact) if log_format == "json" else TextFormatter(redact))
    root = logging.getLogger()
    root.addHandler(handler)
    ours = logging.getLevelNamesMapping()[level]
    root.setLevel(max(ours, logging.INFO))
    logging.getLogger("reelhook").setLevel(ours)
    # httpx logs each request's full URL at INFO: only under DEBUG, where the redaction has to take a hook URL out.
    logging.getLogger("httpx").setLevel(logging.INFO if ours <= logging.DEBUG else logging.WARNING)
    try:
        yield redact
    finally:
        logging._srcfile, logging.logThreads, logging.logProcesses, logging.logMultiprocessing = lookups
        for logger, level_was, handlers, propagate in saved:
            logger.setLevel(level_was)
            logger.handlers = handlers
            logger.propagate = propagate


_UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.asgi", "uvicorn.access")


def route_uvicorn(*, access: bool) -> None:
    """Hand uvicorn's loggers back to the root handler, with its access log on or off.

    Each uvicorn.Config (one per server: the service, its simulators, /metrics) installs uvicorn's own handlers and
    levels on these loggers, in its own format; so this runs once the last server of the process is made. A
    connection asks, when it opens, whether "uvicorn.access" has any handler: one that does not propagate and has
    none is off.
    """
    for name in _UVICORN:
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    logging.getLogger("uvicorn.access").propagate = access
