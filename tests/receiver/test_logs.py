"""Issue 11: REELHOOK_LOG_FORMAT / REELHOOK_LOG_LEVEL, JSON lines with each job's ids, and no credential in any line.

The whole service in JSON mode is tests/e2e/test_logs.py; these take the settings and the formatter one by one.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from receiver import logs
from receiver.cli import _secrets, main
from receiver.serving import make_server
from receiver.settings import Secret, Settings, SettingsError
from receiver.startup import known_variables, unknown_variable_warnings
from storage import Video, VideoStatus
from submitter.tokens import HookClaim, HookSigner
from tests.faults.test_secrets import encodings, leaks

JOB_ID = "0123456789abcdef0123456789abcdef"
SIGNER = HookSigner(["test-secret-0123456789abcdef"], max_age=3600)
TOKEN = SIGNER.sign_hook_token(JOB_ID, "wavespeed")
HOOK_URL = f"https://hooks.example/hooks/wavespeed/{TOKEN}"


def test_the_log_settings_default_to_text_at_info_and_take_any_case() -> None:
    settings = Settings.from_env({})
    assert (settings.log_format, settings.log_level) == ("text", "INFO")
    settings = Settings.from_env({"REELHOOK_LOG_FORMAT": "JSON", "REELHOOK_LOG_LEVEL": "debug"})
    assert (settings.log_format, settings.log_level) == ("json", "DEBUG")
    assert {"REELHOOK_LOG_FORMAT", "REELHOOK_LOG_LEVEL"} <= known_variables()
    assert unknown_variable_warnings({"REELHOOK_LOG_FORMAT": "json", "REELHOOK_LOG_LEVEL": "ERROR"}) == []


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("REELHOOK_LOG_FORMAT", "xml", "REELHOOK_LOG_FORMAT must be text or json, got 'xml'"),
        ("REELHOOK_LOG_LEVEL", "verbose", "REELHOOK_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got 'verbose'"),
    ],
)
def test_a_wrong_log_setting_is_refused_by_name(name: str, value: str, needle: str) -> None:
    with pytest.raises(SettingsError, match=needle):
        Settings.from_env({name: value})


def json_line(record: logging.LogRecord, redaction: logs.Redaction | None = None) -> dict[str, Any]:
    return dict(json.loads(logs.JsonFormatter(redaction or logs.Redaction()).format(record)))


def record(message: str, *args: object, level: int = logging.INFO, **extra: Any) -> logging.LogRecord:
    made = logging.getLogger("reelhook.test").makeRecord("reelhook.test", level, __file__, 1, message, args, None)
    made.__dict__.update(extra)  # what Logger.makeRecord does with extra=
    return made


def test_a_json_line_has_the_fields_and_the_job_ids_of_the_record_it_names() -> None:
    video = Video(JOB_ID, 2, "https://cdn.example/v.mp4", VideoStatus.PENDING, None, None, None, 1, None, None, 0.0)
    line = json_line(record("job %s video %d: failed", JOB_ID, 2, event="download.failed", job=video, video=2))
    assert line.pop("ts").endswith("Z")
    assert line == {
        "level": "INFO",
        "logger": "reelhook.test",
        "message": f"job {JOB_ID} video 2: failed",
        "event": "download.failed",
        "job_id": JOB_ID,
        "provider": None,  # a Video does not know its provider
        "provider_job_id": None,
        "video": 2,
    }
    claim = HookClaim(JOB_ID, "ttapi")
    line = json_line(record("applied", event="callback.applied", job=claim, provider_job_id="tt-1"))
    assert (line["job_id"], line["provider"], line["provider_job_id"]) == (JOB_ID, "ttapi", "tt-1")
    line = json_line(record("started"))  # a line about no job still has the four fields
    assert {key: line[key] for key in logs.JOB_FIELDS} == dict.fromkeys(logs.JOB_FIELDS)


@pytest.mark.parametrize("form", sorted(encodings(HOOK_URL)))
def test_a_hook_token_is_taken_out_of_a_line_in_every_form_a_url_takes(form: str) -> None:
    hidden = {"hook URL": HOOK_URL, "hook token": TOKEN}
    line = json_line(record("HTTP Request: POST https://p.example/submit?webhook=%s 200", form))
    assert leaks(hidden, json.dumps(line)) == [] and "hooks" in line["message"]
    text = logs.TextFormatter(logs.Redaction()).format(record("sent %s", form))
    assert leaks(hidden, text) == [] and text.endswith("…")


def test_a_token_on_its_own_and_a_traceback_are_redacted_too() -> None:
    try:
        raise ValueError(f"bad callback to {HOOK_URL}")
    except ValueError:
        failed = record("refused %s", TOKEN, level=logging.ERROR)
        failed.exc_info = sys.exc_info()
    line = json_line(failed)
    assert "ValueError: bad callback to https://hooks.example/hooks/wavespeed/…" in line["exc"]
    assert line["message"] == "refused …"
    assert leaks({"hook token": TOKEN}, json.dumps(line) + logs.TextFormatter(logs.Redaction()).format(failed)) == []


def test_every_form_of_a_secret_it_was_given_is_hidden() -> None:
    secrets = {"api key": "sk-live/a+b=c&d 0123", "whsec": "whsec_MDEyMzQ1Njc4OWFiY2RlZg=="}
    redaction = logs.Redaction()
    redaction.add([Secret(secrets["api key"]), secrets["whsec"], None, "short"])  # None: a secret not set
    for name, secret in secrets.items():
        for form in encodings(secret):
            line = json_line(record("sent Authorization: Bearer %s", form, key=form), redaction)
            assert leaks(secrets, json.dumps(line)) == [], (name, form)
            assert line["message"] == "sent Authorization: Bearer **********" and line["key"] == "**********"
    assert json_line(record("a short one"), redaction)["message"] == "a short one"  # "short" is not blanked


def test_uvicorn_lines_go_out_through_the_same_json_handler(capsys: pytest.CaptureFixture[str]) -> None:
    with logs.configured("json", "DEBUG"):
        make_server(lambda *_: None, log_level="info")  # type: ignore[arg-type,return-value]  # uvicorn's own handlers
        logs.route_uvicorn(access=True)
        access = logging.getLogger("uvicorn.access")
        assert access.hasHandlers()  # what uvicorn asks per connection before it logs a request
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "POST", f"/hooks/wavespeed/{TOKEN}", "1.1", 200)
        logging.getLogger("uvicorn.error").info("Started server process [%d]", 1)
        logging.getLogger("reelhook.test").debug("debug is on for reelhook", extra={"event": "test.debug"})
        logging.getLogger("aiosqlite").debug("executing a statement")  # a library's DEBUG stays out
    logging.getLogger("reelhook.test").warning("after the block: not ours to print")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["logger"], line["event"]) for line in lines] == [
        ("uvicorn.access", "http.request"),
        ("uvicorn.error", None),
        ("reelhook.test", "test.debug"),
    ]
    assert lines[0]["path"] == "/hooks/wavespeed/…" and lines[0]["status"] == 200
    assert TOKEN not in json.dumps(lines)


def test_the_access_log_and_httpx_lines_are_off_below_debug(capsys: pytest.CaptureFixture[str]) -> None:
    with logs.configured("text", "INFO"):
        make_server(lambda *_: None, log_level="info")  # type: ignore[arg-type,return-value]
        logs.route_uvicorn(access=False)
        assert not logging.getLogger("uvicorn.access").hasHandlers()
        logging.getLogger("httpx").info("HTTP Request: GET https://p.example/ 200")
        logging.getLogger("reelhook.test").info("job %s: sent", JOB_ID, extra={"event": "job.sent"})
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith(f" INFO reelhook.test: job {JOB_ID}: sent")  # the text line as it always read


def test_serve_logs_in_json_from_its_first_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "rules.toml"
    bad.write_text('[[rule]]\nname = "x"\non = "job.succeeded"\nextnd.index = 0\n')  # refused after the settings
    env = {
        "REELHOOK_DATA_DIR": str(tmp_path / "data"),
        "REELHOOK_RULES": str(bad),
        "REELHOOK_LOG_FORMAT": "json",
        "REELHOOK_TTAPI_APIKEY": "tt-key",  # a typo, named on the way
    }
    assert main(["serve", "--port", "0"], env) == 2
    warning, refusal = capsys.readouterr().err.splitlines()
    line = json.loads(warning)
    assert (line["level"], line["event"]) == ("WARNING", "settings.unknown_variable")
    assert line["message"].startswith("REELHOOK_TTAPI_APIKEY is not a reelhook setting")
    assert refusal.startswith("reelhook: ") and 'unknown key "extnd"' in refusal  # the refusal is the CLI's, not a log
    assert not [h for h in logging.getLogger().handlers if isinstance(h, logs.StderrHandler)]  # none left behind


def test_the_database_password_and_the_bucket_key_are_among_the_secrets_hidden() -> None:
    settings = Settings.from_env({
        "REELHOOK_DATABASE_URL": "postgresql://reelhook:db-pass-0123456789@db.example/reelhook",
        "REELHOOK_MEDIA_URL": "s3://bucket/prefix",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "s3-secret-0123456789abcdef",
    })  # fmt: skip
    hidden = {str(secret) for secret in _secrets(settings) if secret is not None}
    assert {"db-pass-0123456789", "s3-secret-0123456789abcdef"} <= hidden


def test_while_configured_a_record_skips_the_lookups_no_format_prints() -> None:
    """Every callback logs a line: the frame walk for its source line, and its thread and process, cost most of it
    and no format of ours prints them. They are looked up again once the block ends."""
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logger = logging.getLogger("reelhook.test.lookups")
    keep = Keep()
    logger.addHandler(keep)
    try:
        with logs.configured("text", "INFO"):
            logger.warning("inside")
        logger.warning("after")
    finally:
        logger.removeHandler(keep)
    inside, after = seen
    assert (inside.lineno, inside.funcName, inside.threadName, inside.process) == (0, "(unknown function)", None, None)
    assert (
        after.lineno > 0
        and after.funcName == test_while_configured_a_record_skips_the_lookups_no_format_prints.__name__
    )
    assert after.threadName is not None and after.process is not None


def test_the_text_timestamp_is_loggings_own_built_once_a_second() -> None:
    plain, ours = logging.Formatter(logs.TEXT_FORMAT), logs.TextFormatter(logs.Redaction())
    for created in (1_764_600_000.001, 1_764_600_000.999, 1_764_600_001.5, 1_764_600_000.25):  # back in time too
        line = record("job %s: sent", JOB_ID)
        line.created, line.msecs = created, int((created - int(created)) * 1000)
        assert ours.format(line) == plain.format(line)
