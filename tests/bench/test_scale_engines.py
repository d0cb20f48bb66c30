"""bench/scale_engines.py end to end, small: the same jobs on SQLite and PostgreSQL, each served by `reelhook serve`.
Every request checks its answer (bench/scale.py: a page of jobs of the asked status, the named job), so a job
missing from either database fails the run; the latencies are reported, never asserted."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import scale_engines


def test_both_engines_answer_the_same_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scale_engines, "QUICK_JOBS", 5_000)  # 2 % queued: at least a page of 50 of each status

    result = scale_engines.run(tmp_path, quick=True)

    assert [row["matching"] for row in result.rows] == [4_500, 250, 150, 100, 5_000, 1]
    for row in result.rows:
        assert row["SQLite p50 ms"] > 0 and row["PostgreSQL p50 ms"] > 0, row
        assert row["PostgreSQL ÷ SQLite (p50)"] is not None, row
    assert result.headline["jobs"] == 5_000
