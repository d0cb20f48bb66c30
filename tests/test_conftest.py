"""The suite's own guard: a test that leaves a store open is red, and the run can still exit."""

from __future__ import annotations

import pytest

from tests.conftest import sqlite_workers

LEAKING = """
import pytest

from storage import Store
from tests.conftest import anyio_backend, no_store_left_open

pytestmark = pytest.mark.anyio


async def test_closes(tmp_path):
    async with await Store.open(tmp_path / "a.sqlite3") as store:
        assert await store.get_job("x") is None


async def test_leaks(tmp_path):
    store = await Store.open(tmp_path / "b.sqlite3")
    assert await store.get_job("x") is None
"""


def test_a_store_left_open_fails_its_test(pytester: pytest.Pytester) -> None:
    before = sqlite_workers()
    pytester.makepyfile(test_leak=LEAKING)
    result = pytester.runpytest("-p", "no:cacheprovider", "-W", "ignore::ResourceWarning")
    result.assert_outcomes(passed=2, errors=1)  # test_leaks passes its body, and errors in teardown
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_leaks*", "the test left 1 SQLite connection(s) open*"])
    assert sqlite_workers() == before  # and the guard stopped the leaked worker, so the run can exit
