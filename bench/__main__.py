"""`python -m bench [NAME ...] [--quick]`: run the benchmarks, write bench/results/latest.{json,md}, print the table.

Each benchmark is a module with `run(workdir: Path, quick: bool) -> Result`. They run one after another, each with
its servers in their own processes, so on 2 cores a load generator and the server under test never fight a third
party for CPU.
"""

from __future__ import annotations

import argparse
import importlib
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import REPO, Result, machine

BENCHMARKS = ("ingest", "downloads", "drips", "latency", "scale", "hostile", "engines", "scale_engines")
RESULTS = REPO / "bench" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"some of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller runs, for trying the harness")
    args = parser.parse_args()
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {', '.join(BENCHMARKS)}")
    started = time.monotonic()
    results: list[Result] = []
    for name in args.names or BENCHMARKS:
        module = importlib.import_module(f"bench.{name}")
        with tempfile.TemporaryDirectory(prefix=f"reelhook-bench-{name}-") as workdir:
            print(f"== {name}", flush=True)
            t0 = time.monotonic()
            result: Result = module.run(Path(workdir), args.quick)
            print(f"   done in {time.monotonic() - t0:.0f}s", flush=True)
        results.append(result)
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "seconds": round(time.monotonic() - started, 1),
        "quick": args.quick,
        "results": [result.__dict__ for result in results],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = render(report)
    (RESULTS / "latest.md").write_text(markdown)
    print(markdown)


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Measured {report['when']} on {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']};"
        f" {report['seconds']:.0f} s in all{' (quick run)' if report['quick'] else ''}.",
        "",
    ]
    for result in report["results"]:
        lines += [f"### {result['title']}", ""]
        rows = result["rows"]
        if rows:
            columns = list(rows[0])
            lines.append("| " + " | ".join(columns) + " |")
            lines.append("|" + "---|" * len(columns))
            lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
            lines.append("")
        if result["method"]:
            lines += [result["method"], ""]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return "" if value is None else str(value)


if __name__ == "__main__":
    main()
