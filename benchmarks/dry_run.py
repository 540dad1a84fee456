"""The planning half of `lacrm-etl import --dry-run`, in a process of its own, for its peak RSS.

Runs `pipeline.prepare` (extract, read the contacts snapshot, resolve, pairs, plan, record the
plan in a ledger) exactly as the CLI does, offline, and prints one JSON line: the stage
timings, the seconds `prepare` took in all and the plan's counts. The report files are left
out: they are the reports' cost, not planning's.

    .venv/bin/python -m benchmarks.dry_run SOURCE MAPPING SNAPSHOT STATE_DB
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from etl import pipeline
from etl.ledger import Ledger


def dry_run(source: Path, mapping: Path, snapshot: Path, state_db: Path) -> dict[str, object]:
    settings = pipeline.ImportSettings(
        sources=(source,), mapping=mapping, dry_run=True, contacts=snapshot
    )
    api = pipeline.Api(key=None, url="http://127.0.0.1:9/v2/")  # offline: never called
    with Ledger(state_db) as ledger:
        started = time.perf_counter()
        prepared = asyncio.run(pipeline.prepare(settings, api, ledger, progress=False))
        seconds = time.perf_counter() - started
    counts = prepared.plan.group_by("status").len().iter_rows()
    return {
        "timings_s": prepared.info.get("timings", {}),
        "prepare_s": round(seconds, 3),
        "rows": prepared.plan.height,
        "statuses": dict(counts),
    }


def main() -> None:
    source, mapping, snapshot, state_db = (Path(arg) for arg in sys.argv[1:5])
    print(json.dumps(dry_run(source, mapping, snapshot, state_db)))


if __name__ == "__main__":
    main()
