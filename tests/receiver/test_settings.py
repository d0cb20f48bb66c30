"""Issue 11.5a: a misspelt REELHOOK_* variable is named at start-up with the closest known one, not ignored."""

from __future__ import annotations

import re
from pathlib import Path

from receiver.startup import known_variables, unknown_variable_warnings

REPO = Path(__file__).resolve().parents[2]


def test_a_typo_is_named_with_the_closest_known_variable() -> None:
    environ = {
        "REELHOOK_TTAPI_APIKEY": "tt-key",
        "REELHOOK_PUBLICURL": "https://example.test",
        "REELHOOK_WHATEVER": "1",
        "REELHOOK_DATA_DIR": "/tmp/data",  # known: no warning
        "REELHOOK_SERVER_URL": "http://127.0.0.1:8000",  # the client's, fine to have in a shell that serves too
        "PATH": "/bin",  # not ours
    }
    assert unknown_variable_warnings(environ) == [
        "REELHOOK_PUBLICURL is not a reelhook setting and is ignored; did you mean REELHOOK_PUBLIC_URL?",
        "REELHOOK_TTAPI_APIKEY is not a reelhook setting and is ignored; did you mean REELHOOK_TTAPI_API_KEY?",
        "REELHOOK_WHATEVER is not a reelhook setting and is ignored; see the README for the settings",
    ]


def test_the_known_names_are_what_from_env_reads() -> None:
    known = known_variables()
    per_provider = {"API_KEY", "BASE_URL", "WEBHOOK_SECRET", "MAX_IN_FLIGHT", "CALLBACK_GRACE", "GIVE_UP_AFTER"}
    for provider in ("TTAPI", "ACEDATA", "WAVESPEED", "APIMART"):
        assert {f"REELHOOK_{provider}_{name}" for name in per_provider} <= known
    assert {"REELHOOK_PUBLIC_URL", "REELHOOK_RULES", "REELHOOK_MAX_CONNECTIONS", "REELHOOK_FAULTS"} <= known


def test_every_variable_the_code_and_readme_name_is_known() -> None:
    # A name read anywhere but Settings.from_env (or the client) would be warned about while in use.
    named = set()
    for path in [*REPO.joinpath("receiver").rglob("*.py"), REPO / "README.md"]:
        named |= set(re.findall(r"\bREELHOOK_[A-Z][A-Z_]*[A-Z]\b", path.read_text(encoding="utf-8")))
    assert named and named <= known_variables(), sorted(named - known_variables())
