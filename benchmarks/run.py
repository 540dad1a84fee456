"""`make bench`: every benchmark against the issues' targets, one table, benchmarks/results.json.

- extraction: etl.extract of the 1,000,000-row, 5-column CSV against polars' bare read_csv of
  the same file (issue 3: at most 2x), and the 100,000-row workbook;
- planning: `lacrm-etl import --dry-run --contacts SNAPSHOT` of 1,000,000 rows against 200,000
  contacts, as a child process (its own peak RSS): resolve + pairs + plan against the bare read
  (issue 7: at most 3x, under 1.5 GB), its stages, and resolution alone (issue 4: at most 3x);
- fuzzy: 10,000 misspelt names against 200,000 contacts (issue 4: under 60 s);
- writes: 2,000 creates against the sandbox at 20 ms latency and 100 requests/s, `--rate 100
  --concurrency 8` (issue 5: at least 95% of the limit, at most 1.01 calls per created pair),
  and the existing-pairs check of that random graph;
- existing check of a star-shaped file, 10 companies x 200 people (issue 5: at most 10 reads
  against 2,010 for one read per contact).

Every figure is the median of several runs, with its spread (min-max); a ratio is taken
within one run (the two sides interleaved, so both see the same machine load). All traffic goes
to a sandbox on 127.0.0.1, bounded in requests and time. BENCH_SCALE=0.1 shrinks the data.

    .venv/bin/python -m benchmarks.run [--scale 0.1] [--only planning,writes] [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks.generate import DEFAULT_SEED, Dataset, Sizes, ensure_dataset, scale_from_environment

RESULTS_PATH = Path(__file__).parent / "results.json"
WRITE_LATENCY = 0.02
WRITE_RATE_LIMIT = 100
WRITE_CONCURRENCY = 8
DRY_RUN_TIMEOUT = 900.0
SANDBOX_PHASE_TIMEOUT = 300.0
MEMORY_LIMIT_MB = 1536.0
BENCHMARKS = ("extraction", "planning", "fuzzy", "writes", "star", "sandbox")


@dataclass
class Figure:
    """One line of the table: the samples of one quantity, and its target if it has one."""

    benchmark: str
    quantity: str
    unit: str
    samples: list[float]
    target: str = ""
    passes: Callable[[float], bool] | None = field(default=None, repr=False)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> tuple[float, float]:
        return min(self.samples), max(self.samples)

    @property
    def met(self) -> bool | None:
        return None if self.passes is None else self.passes(self.median)

    def as_json(self) -> dict[str, Any]:
        low, high = self.spread
        return {
            "benchmark": self.benchmark,
            "quantity": self.quantity,
            "unit": self.unit,
            "median": self.median,
            "min": low,
            "max": high,
            "samples": self.samples,
            "target": self.target or None,
            "met": self.met,
        }


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, figure: Figure) -> None:
        self.figures.append(figure)


# -- measuring ------------------------------------------------------------------------------


def seconds_of(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def interleaved(
    runs: int, first: Callable[[], object], second: Callable[[], object]
) -> tuple[list[float], list[float]]:
    """Alternate the two so that both see the same load; a warm-up of each is not counted."""
    first()
    second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        times[0].append(seconds_of(first))
        times[1].append(seconds_of(second))
    return times


def ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    return [n / d for n, d in zip(numerators, denominators, strict=True)]


@dataclass(frozen=True)
class ChildRun:
    seconds: float
    peak_rss_mb: float
    stdout: str


def run_child(command: list[str], folder: Path, timeout: float) -> ChildRun:
    """Run a command and measure this child alone: wall time and its own peak RSS (wait4)."""
    out_path, err_path = folder / "stdout.txt", folder / "stderr.txt"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err)
        status, usage = wait_with_usage(process, started + timeout)
        seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        stderr = err_path.read_text("utf-8", "replace")
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr}")
    return ChildRun(seconds, usage.ru_maxrss / 1024, out_path.read_text("utf-8"))


def wait_with_usage(process: subprocess.Popen[bytes], deadline: float) -> tuple[int, Any]:
    """Reap the child ourselves so that its rusage is its own, not all children's."""
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return status, usage
        if time.perf_counter() > deadline:
            process.kill()
            process.wait()
            raise TimeoutError(f"{process.args!r} ran out of time")
        time.sleep(0.01)


# -- extraction -----------------------------------------------------------------------------


def bench_extraction(dataset: Dataset, runs: int, report: Report) -> None:
    from etl.extract import extract

    csv_path = dataset.relationships_csv
    rows = dataset.read_manifest()["sizes"]["rows"]
    bare, ours = interleaved(
        runs,
        lambda: pl.read_csv(csv_path, infer_schema=False),
        lambda: extract([csv_path]),
    )
    name = f"extract CSV {rows:,} rows x 5"
    report.add(Figure(name, "polars read_csv (bare)", "s", bare))
    report.add(Figure(name, "etl.extract", "s", ours))
    report.add(
        Figure(name, "ratio to bare read", "x", ratios(ours, bare), "<= 2", lambda r: r <= 2)
    )
    xlsx_rows = dataset.read_manifest()["sizes"]["xlsx_rows"]
    workbook = [seconds_of(lambda: extract([dataset.relationships_xlsx])) for _ in range(runs)]
    report.add(Figure(f"extract XLSX {xlsx_rows:,} rows x 5", "etl.extract", "s", workbook))


# -- planning -------------------------------------------------------------------------------


def planning_seconds(timings: dict[str, float]) -> float:
    """Index + resolve + pairs and plan + existing: every stage of prepare but reading inputs."""
    reading = {"extract", "directory"}
    return sum(seconds for stage, seconds in timings.items() if stage not in reading)


def resolution_seconds(timings: dict[str, float]) -> float:
    """Issue 4's figure: the key tables over the directory, then both sides resolved."""
    return timings["index"] + timings["resolve"]


def one_dry_run(dataset: Dataset) -> tuple[ChildRun, dict[str, Any]]:
    """`benchmarks.dry_run` in a child process: the CLI's planning, without the report files."""
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as name:
        folder = Path(name)
        command = [sys.executable, "-m", "benchmarks.dry_run", str(dataset.relationships_csv)]
        command += [str(dataset.mapping), str(dataset.snapshot), str(folder / "state.sqlite")]
        child = run_child(command, folder, DRY_RUN_TIMEOUT)
    return child, json.loads(child.stdout)


def bench_planning(dataset: Dataset, runs: int, report: Report) -> None:
    sizes = dataset.read_manifest()["sizes"]
    csv_path = dataset.relationships_csv
    bare: list[float] = []
    planning: list[float] = []
    stages: dict[str, list[float]] = {"index": [], "resolve": [], "plan": []}
    resolution: list[float] = []
    wall: list[float] = []
    peaks: list[float] = []
    outcome: dict[str, Any] = {}
    pl.read_csv(csv_path, infer_schema=False)  # warm the file cache for both
    for _ in range(runs):
        bare.append(seconds_of(lambda: pl.read_csv(csv_path, infer_schema=False)))
        child, outcome = one_dry_run(dataset)
        timings = outcome["timings_s"]
        planning.append(planning_seconds(timings))
        resolution.append(resolution_seconds(timings))
        for stage, samples in stages.items():
            samples.append(timings[stage])
        wall.append(child.seconds)
        peaks.append(child.peak_rss_mb)
    name = f"plan {sizes['rows']:,} rows vs {sizes['contacts']:,} contacts"
    report.add(Figure(name, "polars read_csv (bare)", "s", bare))
    for stage, what in (
        ("index", "stage: key tables over the directory"),
        ("resolve", f"stage: resolve both sides ({2 * sizes['rows']:,} values)"),
        ("plan", "stage: notes, pairs and plan"),
    ):
        report.add(Figure(name, what, "s", stages[stage]))
    report.add(
        Figure(
            name,
            "resolution (index + both sides) to bare read",
            "x",
            ratios(resolution, bare),
            "<= 3",
            lambda r: r <= 3,
        )
    )
    report.add(Figure(name, "resolve + pairs + plan", "s", planning))
    report.add(Figure(name, "rows/s", "rows/s", [sizes["rows"] / s for s in planning]))
    report.add(
        Figure(name, "ratio to bare read", "x", ratios(planning, bare), "<= 3", lambda r: r <= 3)
    )
    report.add(Figure(name, "dry run without reports (wall)", "s", wall))
    report.add(
        Figure(
            name,
            "peak RSS of that process",
            "MB",
            peaks,
            f"< {MEMORY_LIMIT_MB:.0f}",
            lambda mb: mb < MEMORY_LIMIT_MB,
        )
    )
    report.details["planning"] = outcome


# -- fuzzy ----------------------------------------------------------------------------------


def bench_fuzzy(dataset: Dataset, runs: int, report: Report) -> None:
    from etl import resolve
    from etl.directory import load_snapshot

    contacts, _ = load_snapshot(dataset.snapshot)
    names = pl.read_csv(dataset.unknown_names, infer_schema=False).get_column("Name")
    values = pl.DataFrame(
        {
            "row_id": pl.int_range(0, names.len(), eager=True, dtype=pl.UInt32),
            "attempt": pl.repeat(1, names.len(), dtype=pl.UInt8, eager=True),
            "mode": pl.repeat("name", names.len(), dtype=pl.String, eager=True),
            "value": names,
        }
    )
    timings: list[float] = []
    outcome = pl.DataFrame()
    for _ in range(runs):
        index = resolve.build_index(contacts)  # fresh: the index remembers values it resolved
        started = time.perf_counter()
        outcome = resolve.resolve_side(values, index, fuzzy=85)
        timings.append(time.perf_counter() - started)
    name = f"fuzzy {names.len():,} names vs {contacts.height:,} contacts"
    report.add(Figure(name, "resolve_side(fuzzy=85)", "s", timings, "< 60", lambda s: s < 60))
    matched = outcome.get_column("match").drop_nulls()
    report.details["fuzzy"] = {
        "fuzzy_matches": int(matched.str.starts_with("fuzzy").sum()),
        "reasons": dict(outcome.group_by("reason").len().drop_nulls().iter_rows()),
    }


# -- writes and the existing check against the sandbox --------------------------------------


@contextmanager
def write_sandbox(dataset: Dataset) -> Iterator[Any]:
    from etl.sandbox.testing import start_sandbox

    crm = start_sandbox(
        dataset.sandbox_seed, latency=WRITE_LATENCY, rate_limit=WRITE_RATE_LIMIT, fault_seed=1
    )
    try:
        yield crm
    finally:
        crm.stop()


def sandbox_api(crm: Any) -> Any:
    from etl.pipeline import Api

    return Api(key=crm.api_key, url=crm.url, rate=WRITE_RATE_LIMIT, concurrency=WRITE_CONCURRENCY)


def settings_for(source: Path, dataset: Dataset, dry_run: bool) -> Any:
    from etl.pipeline import ImportSettings

    return ImportSettings(sources=(source,), mapping=dataset.mapping, dry_run=dry_run)


@dataclass
class WriteRun:
    seconds: float
    created: int
    write_calls: int
    calls: dict[str, int]
    existing_check: dict[str, Any]
    duplicate_pairs: int
    relationships_added: int


async def bounded(awaitable: Any) -> Any:
    return await asyncio.wait_for(awaitable, SANDBOX_PHASE_TIMEOUT)


def one_write_run(dataset: Dataset) -> WriteRun:
    from etl import pipeline
    from etl.ledger import Ledger

    with write_sandbox(dataset) as crm, tempfile.TemporaryDirectory() as folder:
        before = len(crm.state()["relationships"])
        api = sandbox_api(crm)
        with Ledger(Path(folder) / "state.sqlite") as ledger:
            settings = settings_for(dataset.writes_csv, dataset, dry_run=False)
            prepared = asyncio.run(bounded(pipeline.prepare(settings, api, ledger, progress=False)))
            ledger.set_state(prepared.run_id, "writing")
            crm.reset_counters()
            started = time.perf_counter()
            calls = asyncio.run(
                bounded(pipeline.write_run(prepared.run_id, api, ledger, progress=False))
            )
            seconds = time.perf_counter() - started
            created = int((ledger.outcomes(prepared.run_id)["status"] == "created").sum())
        state = crm.state()
    return WriteRun(
        seconds=seconds,
        created=created,
        write_calls=sum(calls.values()),
        calls=dict(calls),
        existing_check=prepared.info.get("existing_check") or {},
        duplicate_pairs=len(state["duplicate_pairs"]),
        relationships_added=len(state["relationships"]) - before,
    )


def bench_writes(dataset: Dataset, runs: int, report: Report) -> None:
    done = [one_write_run(dataset) for _ in range(runs)]
    creates = dataset.read_manifest()["sizes"]["creates"]
    name = f"write {creates:,} creates @{WRITE_RATE_LIMIT}/s, {WRITE_LATENCY * 1000:.0f} ms"
    rates = [run.created / run.seconds for run in done]
    report.add(Figure(name, "write phase", "s", [run.seconds for run in done]))
    report.add(Figure(name, "creates/s", "1/s", rates))
    report.add(
        Figure(
            name,
            "fraction of the limit",
            "",
            [rate / WRITE_RATE_LIMIT for rate in rates],
            ">= 0.95",
            lambda f: f >= 0.95,
        )
    )
    report.add(
        Figure(
            name,
            "calls per created",
            "",
            [run.write_calls / max(run.created, 1) for run in done],
            "<= 1.01",
            lambda c: c <= 1.01,
        )
    )
    checks = [run.existing_check for run in done]
    graph = f"existing check, random graph of {creates:,} pairs"
    report.add(Figure(graph, "reads", "", [c.get("reads", 0) for c in checks]))
    report.add(Figure(graph, "one read per contact", "", [c.get("naive_reads", 0) for c in checks]))
    report.details["writes"] = [asdict(run) for run in done]
    problems = [run for run in done if run.duplicate_pairs or run.relationships_added != creates]
    if problems:
        report.details["writes_problems"] = [asdict(run) for run in problems]


def one_star_check(dataset: Dataset) -> dict[str, Any]:
    from etl import pipeline
    from etl.ledger import Ledger

    with write_sandbox(dataset) as crm, tempfile.TemporaryDirectory() as folder:
        with Ledger(Path(folder) / "state.sqlite") as ledger:
            settings = settings_for(dataset.star_csv, dataset, dry_run=True)
            api = sandbox_api(crm)
            prepared = asyncio.run(bounded(pipeline.prepare(settings, api, ledger, progress=False)))
        skipped = prepared.plan.filter(pl.col("reason") == "already_exists").height
    return {**(prepared.info.get("existing_check") or {}), "already_exists": skipped}


def bench_star(dataset: Dataset, runs: int, report: Report) -> None:
    sizes = dataset.read_manifest()["sizes"]
    checks = [one_star_check(dataset) for _ in range(runs)]
    companies, people = sizes["star_companies"], sizes["star_people"]
    name = f"existing check, star {companies} x {people}"
    report.add(
        Figure(
            name,
            "reads",
            "",
            [c.get("reads", 0) for c in checks],
            f"<= {companies}",
            lambda reads: reads <= companies,
        )
    )
    report.add(Figure(name, "one read per contact", "", [c.get("naive_reads", 0) for c in checks]))
    report.details["star"] = checks


def bench_sandbox(dataset: Dataset, runs: int, report: Report) -> None:
    """The sandbox's own ceiling (no latency, one connection): headroom above 100 requests/s."""
    from benchmarks.sandbox_throughput import measure

    rates = measure("GetContact", count=1000, rounds=runs, raw=False)
    report.add(Figure("sandbox ceiling (context)", "GetContact, 1 connection", "1/s", rates))


# -- the table ------------------------------------------------------------------------------


def number(value: float, unit: str) -> str:
    if unit in ("x", ""):
        return f"{value:,.3f}" if value < 10 else f"{value:,.0f}"
    if unit in ("rows/s", "1/s", "MB"):
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def table(figures: list[Figure]) -> str:
    header = ("benchmark", "quantity", "median", "spread (min-max)", "target", "met")
    lines = [header]
    for figure in figures:
        low, high = figure.spread
        unit = f" {figure.unit}" if figure.unit not in ("", "x") else figure.unit
        met = {True: "yes", False: "NO", None: ""}[figure.met]
        lines.append(
            (
                figure.benchmark,
                figure.quantity,
                number(figure.median, figure.unit) + unit,
                f"{number(low, figure.unit)}-{number(high, figure.unit)}",
                figure.target,
                met,
            )
        )
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    rendered = [
        " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines
    ]
    rendered.insert(1, "-|-".join("-" * w for w in widths))
    return "\n".join(rendered)


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "polars": pl.__version__,
    }


RUNNERS: dict[str, Callable[[Dataset, int, Report], None]] = {
    "extraction": bench_extraction,
    "planning": bench_planning,
    "fuzzy": bench_fuzzy,
    "writes": bench_writes,
    "star": bench_star,
    "sandbox": bench_sandbox,
}
RUNS = {"extraction": 5, "planning": 3, "fuzzy": 3, "writes": 3, "star": 3, "sandbox": 3}


def run(
    scale: float, only: list[str], runs: int | None, seed: int = DEFAULT_SEED
) -> dict[str, Any]:
    started = time.perf_counter()
    before = machine()
    dataset = ensure_dataset(Sizes().scaled(scale), seed)
    report = Report()
    for name in only:
        print(f"running {name}...", file=sys.stderr, flush=True)
        RUNNERS[name](dataset, runs or RUNS[name], report)
    results = {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "scale": scale,
        "seed": seed,
        "dataset": dataset.read_manifest(),
        "machine_before": before,
        "machine_after": machine(),
        "seconds": round(time.perf_counter() - started, 1),
        "figures": [figure.as_json() for figure in report.figures],
        "details": report.details,
        "table": table(report.figures),
    }
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=scale_from_environment())
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated names")
    parser.add_argument("--runs", type=int, help="runs per benchmark [default: 3, 5 for reads]")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    options = parser.parse_args(argv)
    only = [name.strip() for name in options.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; choose from {', '.join(BENCHMARKS)}")
    results = run(options.scale, only, options.runs)
    options.output.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", "utf-8")
    print(results["table"])
    load = results["machine_before"]["load_average"], results["machine_after"]["load_average"]
    print(
        f"\nscale {results['scale']}, {results['machine_before']['cpus']} cores, load average "
        f"{load[0]} before, {load[1]} after; {results['seconds']:.0f} s in all; "
        f"written to {options.output}"
    )


if __name__ == "__main__":
    main()
