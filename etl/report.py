"""Every report a run leaves: report.csv, failed.csv, summary.json and the terminal summary."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

OUTCOME_COLUMNS = [
    "source",
    "sheet",
    "row",
    "status",
    "reason",
    "detail",
    "contact_id_1",
    "contact_id_2",
    "relationship_id",
]
MATCH_COLUMNS = ["match_1", "name_1", "match_2", "name_2"]
STATUSES = ("created", "would_create", "skipped", "failed")
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class ReportPaths:
    directory: Path
    report_csv: Path
    failed_csv: Path
    summary_json: Path


def report_frame(plan: pl.DataFrame, rows: pl.DataFrame, input_columns: list[str]) -> pl.DataFrame:
    """The report's rows: outcome columns, then the input's own columns, then how sides matched.

    An input column whose name the report already uses is shown as `input:<name>`.
    """
    taken = set(OUTCOME_COLUMNS) | set(MATCH_COLUMNS) | {"row_id"}
    renamed = {c: f"input:{c}" if c in taken else c for c in input_columns}
    inputs = rows.select("row_id", *input_columns).rename(renamed)
    return (
        plan.join(inputs, on="row_id", how="left")
        .sort("row_id")
        .select(*OUTCOME_COLUMNS, *renamed.values(), *MATCH_COLUMNS)
    )


def neutralise_formulas(frame: pl.DataFrame) -> pl.DataFrame:
    """Prefix an apostrophe to every text cell a spreadsheet would run as a formula."""
    text_columns = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    pattern = "^[" + "".join(FORMULA_TRIGGERS).replace("-", r"\-") + "]"
    return frame.with_columns(
        pl.when(pl.col(name).str.contains(pattern))
        .then("'" + pl.col(name))
        .otherwise(pl.col(name))
        .alias(name)
        for name in text_columns
    )


def failed_frame(report: pl.DataFrame, input_columns: list[str]) -> pl.DataFrame:
    """The failed rows as the user gave them, plus `error`: fix and import again."""
    inputs = [f"input:{c}" if f"input:{c}" in report.columns else c for c in input_columns]
    error = pl.concat_str([pl.col("reason"), pl.col("detail")], separator=": ", ignore_nulls=True)
    return (
        report.filter(pl.col("status") == "failed")
        .select(*inputs, error.alias("error"))
        .rename(dict(zip(inputs, input_columns, strict=True)))
    )


def count_outcomes(report: pl.DataFrame) -> dict[str, Any]:
    by_status = dict(report.group_by("status").len().iter_rows())
    by_reason = (
        report.filter(pl.col("reason").is_not_null())
        .group_by("status", "reason")
        .len()
        .sort("status", "reason")
    )
    return {
        "total_rows": report.height,
        **{status: by_status.get(status, 0) for status in STATUSES},
        "reasons": {f"{s}/{r}": n for s, r, n in by_reason.iter_rows()},
    }


def write_reports(
    report: pl.DataFrame, input_columns: list[str], summary: dict[str, Any], directory: Path
) -> ReportPaths:
    directory.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(
        directory=directory,
        report_csv=directory / "report.csv",
        failed_csv=directory / "failed.csv",
        summary_json=directory / "summary.json",
    )
    neutralise_formulas(report).write_csv(paths.report_csv)
    neutralise_formulas(failed_frame(report, input_columns)).write_csv(paths.failed_csv)
    paths.summary_json.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return paths


def summary_text(summary: dict[str, Any], paths: ReportPaths | None = None) -> str:
    """The closing summary printed to the terminal: counts by status and by reason."""
    title = "Dry run: nothing was written" if summary.get("dry_run") else "Import finished"
    lines = [f"{title} (run {summary['run_id']})", ""]
    width = 34
    lines.append(f"  {'rows read':<{width}}{summary['total_rows']:>9,}")
    if summary.get("blank_rows"):
        lines.append(f"  {'blank rows (ignored)':<{width}}{summary['blank_rows']:>9,}")
    for status in STATUSES:
        if status == "would_create" and not summary.get("dry_run"):
            continue
        if status == "created" and summary.get("dry_run"):
            continue
        lines.append(f"  {status:<{width}}{summary[status]:>9,}")
        for key, n in summary.get("reasons", {}).items():
            if key.startswith(status + "/"):
                lines.append(f"    {key.split('/', 1)[1]:<{width - 2}}{n:>9,}")
    calls = summary.get("api_calls") or {}
    if calls:
        listed = ", ".join(f"{name} {n:,}" for name, n in sorted(calls.items()))
        lines += ["", f"  API calls: {listed}"]
    if paths is not None:
        lines += ["", f"  Reports: {paths.directory}"]
    return "\n".join(lines)
