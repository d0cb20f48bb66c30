"""bench/engines.py end to end, small: SQLite and two instances on one PostgreSQL side by side, with videos refused
and with real downloads, real
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
    monkeypatch.setattr(engines, "download_levels", lambda quick: [Level(4, 2, 6)])
    # one SQLite and two instances on one PostgreSQL (the three-instance run is the same code, one more process)
    monkeypatch.setattr(engines, "CONFIGS", (engines.Config("SQLite", 1), engines.Config("PostgreSQL", 2)))

    result = engines.run(tmp_path, quick=True)

    labels = [config.label for config in engines.CONFIGS]
    assert [(row["config"], row["videos"]) for row in result.rows] == [
        (label, videos) for label in labels for videos in ("refused", "4 × 1 MiB")
    ]
    for row in result.rows:
        assert row["errors"] == 0, row
        assert row["backlog s"] is not None, row  # the background work drained
        assert row["ingest req/s"] and row["sustained req/s"] and row["server CPU ms"], row
    # every video of the download runs fetched: 8 callbacks a configuration, 4 videos each, cumulative per database
    assert [row["downloaded so far"] for row in result.rows[1::2]] == [32, 32]
    assert result.rows[0]["ingest ÷ SQLite"] == result.rows[0]["sustained ÷ SQLite"] == 1.0
    assert all(row["ingest ÷ SQLite"] is not None for row in result.rows)
    assert "contention, not scale-out" in result.method
