"""bench/engines.py end to end, small: SQLite and PostgreSQL side by side, 1-3 instances on one PostgreSQL, real
`reelhook serve` processes loaded by wrk. The figures are reported, never asserted; what is checked is that every
configuration ran, every callback was answered without error, the background work drained, and every ratio is to
the single SQLite instance."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import engines, wrk
from bench.callbacks import Level

pytestmark = pytest.mark.skipif(wrk.available() is None, reason="wrk is not installed (make bench installs it)")


def test_every_engine_and_instance_count_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines, "levels", lambda quick: [Level(4, 6, 24)])

    result = engines.run(tmp_path, quick=True)

    assert [row["config"] for row in result.rows] == [config.label for config in engines.CONFIGS]
    for row in result.rows:
        assert row["errors"] == 0, row
        assert row["backlog s"] is not None, row  # the background work drained
        assert row["ingest req/s"] and row["sustained req/s"] and row["server CPU ms"], row
    assert result.rows[0]["ingest ÷ SQLite"] == result.rows[0]["sustained ÷ SQLite"] == 1.0
    assert all(row["ingest ÷ SQLite"] is not None for row in result.rows)
    assert "contention, not scale-out" in result.method
