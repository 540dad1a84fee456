"""Extraction speed: etl.extract against polars' bare read_csv of the same file.

Generates a 1,000,000-row, 5-column CSV (and a 100,000-row xlsx) in a temporary folder,
times each reader three times and prints the medians and the ratio.

    .venv/bin/python -m benchmarks.bench_extract [--rows N] [--xlsx-rows N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from etl.extract import extract

RUNS = 3


def write_csv(path: Path, rows: int) -> None:
    index = pl.int_range(0, rows, eager=True).alias("index")
    frame = pl.DataFrame(index).select(
        pl.col("index").cast(pl.String).str.zfill(31).alias("Person"),
        pl.format("Related Person {}", "index").alias("Related To"),
        pl.format("person{}@example.com", "index").alias("Email"),
        pl.lit("Colleague").alias("Relationship"),
        pl.format("  met at event {}  ", pl.col("index") % 97).alias("Notes"),
    )
    frame.write_csv(path)


def write_xlsx(path: Path, rows: int) -> None:
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("People")
    sheet.append(["Person", "Related To", "Email", "Relationship", "Notes"])
    for number in range(rows):
        sheet.append(
            [
                str(number).zfill(31),
                f"Related Person {number}",
                f"person{number}@example.com",
                "Colleague",
                number,
            ]
        )
    workbook.save(path)


def median_seconds(action: Callable[[], object]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(
    first: Callable[[], object], second: Callable[[], object]
) -> tuple[float, float]:
    """Alternate the two so that both see the same machine load; a median of each."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(RUNS):
        for action, bucket in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            action()
            bucket.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--xlsx-rows", type=int, default=100_000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        csv_path = Path(folder) / "people.csv"
        write_csv(csv_path, options.rows)
        size = csv_path.stat().st_size / 1024**2
        bare, ours = interleaved_medians(
            lambda: pl.read_csv(csv_path, infer_schema=False), lambda: extract([csv_path])
        )
        print(f"CSV {options.rows:,} rows x 5 columns ({size:.0f} MiB), median of {RUNS}:")
        print(f"  polars read_csv   {bare:.3f} s")
        print(f"  etl.extract       {ours:.3f} s")
        print(f"  ratio             {ours / bare:.2f}x (budget 2.00x)")
        if options.xlsx_rows:
            xlsx_path = Path(folder) / "people.xlsx"
            write_xlsx(xlsx_path, options.xlsx_rows)
            seconds = median_seconds(lambda: extract([xlsx_path]))
            print(f"XLSX {options.xlsx_rows:,} rows x 5 columns, median of {RUNS}:")
            print(f"  etl.extract       {seconds:.3f} s")


if __name__ == "__main__":
    main()
