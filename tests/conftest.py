from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import Store


@pytest.fixture
def anyio_backend() -> str:
    # aiosqlite and uvicorn are asyncio-only.
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A real SQLite store on a temporary file."""
    async with await Store.open(tmp_path / "reelhook.sqlite3") as opened:
        yield opened
