"""What the browser tests share besides fixtures: whether they can run, and whether the dashboard exists yet."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
# Playwright's own browser download is blocked here, so it drives Debian's chromium; these flags keep a headless
# chromium in a container from reaching out (updates, sync) or needing a GPU or a user namespace.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ENABLE = (
    "browser tests need the playwright wheel and /usr/bin/chromium: `make test` as root installs both"
    " (chromium with apt), or `apt-get install chromium` and `make .venv/.installed`"
)
SCREENSHOTS = Path(__file__).parent / "screenshots"


def missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if importlib.util.find_spec("playwright") is None:
        return f"playwright is not installed; {ENABLE}"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing; {ENABLE}"
    return None


def dashboard_present() -> bool:
    """Whether the dashboard (issue 10) is in this checkout: its package is `receiver.web`."""
    try:
        return importlib.util.find_spec("receiver.web") is not None
    except ModuleNotFoundError:
        return False


def screenshot(page: Page, name: str) -> Path:
    """Save what the page shows now as tests/browser/screenshots/<name>.png (a person opens it to see what a user
    sees); returns the path."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    return path
