"""Every report a run leaves: report.csv, report.xlsx, failed.csv, summary.json and the
terminal summary. All of them come from one report frame and one summary, so they agree."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
from openpyxl.cell import WriteOnlyCell
from openpyxl.chart import BarChart, Reference
from openpyxl.chart.label import DataLabelList
from openpyxl.chart.series import DataPoint
from openpyxl.styles import Alignment
from openpyxl.workbook import Workbook
from openpyxl.worksheet._write_only import WriteOnlyWorksheet
from tqdm import tqdm

from etl import spreadsheet
from etl.ledger import UNFINISHED_STATES
from etl.spreadsheet import EXCEL_MAX_DATA_ROWS, neutralise_formulas, neutralise_text

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
ID_COLUMNS = ("contact_id_1", "contact_id_2", "relationship_id")
STATUSES = ("created", "would_create", "skipped", "failed")
# Excel's own Good / Neutral / Bad fills, and a blue for what a dry run would create.
STATUS_COLOURS = {
    "created": "C6EFCE",
    "would_create": "DDEBF7",
    "skipped": "FFEB9C",
    "failed": "FFC7CE",
}
# Stronger shades of the same hues: pale fills vanish as chart bars.
CHART_COLOURS = {
    "created": "63BE7B",
    "would_create": "5B9BD5",
    "skipped": "FFC000",
    "failed": "E06666",
}
SUMMARY_SHEET = "Summary"
FAILED_ERROR = "error"
SECONDS_FORMAT = "0.000"
LEFT = Alignment(horizontal="left")
RIGHT = Alignment(horizontal="right")
# Column C's text, one step in: a count in B ends where C begins ("10created" otherwise).
INDENTED = Alignment(horizontal="left", indent=1)
WRAPPED_COLUMNS = ("detail",)  # reasons in full: up to a few hundred characters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportPaths:
    directory: Path
    report_csv: Path
    report_xlsx: Path
    failed_csv: Path
    summary_json: Path


def input_names(input_columns: list[str], taken: Iterable[str]) -> dict[str, str]:
    """The input's columns by the names they go by beside ours: `input:<name>` where taken."""
    used = set(taken) | set(OUTCOME_COLUMNS) | set(MATCH_COLUMNS) | {"row_id", "note"}
    return {column: f"input:{column}" if column in used else column for column in input_columns}


def with_inputs(plan: pl.DataFrame, rows: pl.DataFrame, input_columns: list[str]) -> pl.DataFrame:
    """The plan with the input's own columns beside it, as the ledger keeps it."""
    renamed = input_names(input_columns, plan.columns)
    inputs = rows.select("row_id", *input_columns).rename(renamed)
    return plan.join(inputs, on="row_id", how="left")


def split_inputs(
    stored: pl.DataFrame, input_columns: list[str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """with_inputs undone: (the plan, the input rows under their own names)."""
    names = {
        column: f"input:{column}" if f"input:{column}" in stored.columns else column
        for column in input_columns
    }
    plan_columns = [c for c in stored.columns if c not in set(names.values())]
    rows = stored.select("row_id", *(pl.col(name).alias(c) for c, name in names.items()))
    return stored.select(plan_columns), rows


def report_frame(plan: pl.DataFrame, rows: pl.DataFrame, input_columns: list[str]) -> pl.DataFrame:
    """The report's rows: outcome columns, then the input's own columns, then how sides matched.

    An input column whose name the report already uses is shown as `input:<name>`.
    """
    renamed = input_names(input_columns, plan.columns)
    inputs = rows.select("row_id", *input_columns).rename(renamed)
    return (
        plan.join(inputs, on="row_id", how="left")
        .sort("row_id")
        .select(*OUTCOME_COLUMNS, *renamed.values(), *MATCH_COLUMNS)
    )


def failed_frame(report: pl.DataFrame, input_columns: list[str]) -> pl.DataFrame:
    """The failed rows as the user gave them, plus `error`: fix and import again.

    A failed.csv imported again brings its own `error` column: this run's error replaces it.
    """
    kept = [c for c in input_columns if c != FAILED_ERROR]
    inputs = [f"input:{c}" if f"input:{c}" in report.columns else c for c in kept]
    error = pl.concat_str([pl.col("reason"), pl.col("detail")], separator=": ", ignore_nulls=True)
    return (
        report.filter(pl.col("status") == "failed")
        .select(*inputs, error.alias(FAILED_ERROR))
        .rename(dict(zip(inputs, kept, strict=True)))
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
    report: pl.DataFrame,
    input_columns: list[str],
    summary: dict[str, Any],
    directory: Path,
    *,
    progress: bool = False,
    max_sheet_rows: int = EXCEL_MAX_DATA_ROWS,
) -> ReportPaths:
    directory.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(
        directory=directory,
        report_csv=directory / "report.csv",
        report_xlsx=directory / "report.xlsx",
        failed_csv=directory / "failed.csv",
        summary_json=directory / "summary.json",
    )
    started = time.perf_counter()
    neutralise_formulas(report).write_csv(paths.report_csv)
    neutralise_formulas(failed_frame(report, input_columns)).write_csv(paths.failed_csv)
    paths.summary_json.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    log.info("report: csv and json in %.2f s", time.perf_counter() - started)
    started = time.perf_counter()
    write_workbook(report, summary, paths.report_xlsx, progress=progress, max_rows=max_sheet_rows)
    log.info(
        "report: %s, %d rows, in %.1f s",
        paths.report_xlsx,
        report.height,
        time.perf_counter() - started,
    )
    return paths


def write_workbook(
    report: pl.DataFrame,
    summary: dict[str, Any],
    path: Path,
    *,
    progress: bool = False,
    max_rows: int = EXCEL_MAX_DATA_ROWS,
) -> None:
    """report.xlsx: a Summary sheet, then one sheet per status present (split past Excel's
    row limit)."""
    parts = {status: report.filter(pl.col("status") == status) for status in STATUSES}
    present = {status: part for status, part in parts.items() if not part.is_empty()}
    sheets = {
        status: spreadsheet.sheet_titles(status, part.height, max_rows)
        for status, part in present.items()
    }
    workbook = spreadsheet.new_workbook()
    _summary_sheet(workbook, summary, sheets)
    with tqdm(
        total=report.height,
        desc="Writing report.xlsx",
        unit=" rows",
        file=sys.stderr,
        disable=not progress,
        mininterval=0.5,
    ) as bar:
        for status, part in present.items():
            spreadsheet.write_table(
                workbook,
                status,
                part,
                id_columns=ID_COLUMNS,
                colour=STATUS_COLOURS[status],
                value_colours=("status", {status: STATUS_COLOURS[status]}),
                wrap_columns=WRAPPED_COLUMNS,
                max_rows=max_rows,
                bar=bar,
            )
    workbook.save(path)


def _summary_sheet(
    workbook: Workbook, summary: dict[str, Any], sheets: dict[str, list[str]]
) -> None:
    sheet = workbook.create_sheet(SUMMARY_SHEET)
    sheet.column_dimensions["A"].width = 34
    sheet.column_dimensions["B"].width = 12
    sheet.column_dimensions["C"].width = 20
    spreadsheet.fit_to_page_width(sheet)
    # Three columns and a chart: upright, the whole summary prints on one page.
    sheet.page_setup.orientation = "portrait"
    writer = _SummaryWriter(sheet)
    title = "Dry run: nothing was written" if summary.get("dry_run") else "Import"
    writer.title(f"{title} \u2014 run {summary.get('run_id', '')}")
    writer.blank()
    status_rows = writer.status_block(summary, sheets)
    writer.blank()
    writer.reason_block(summary)
    writer.pairs(
        "When",
        [
            ("started", _moment(summary.get("started_at"))),
            ("finished", _moment(summary.get("finished_at"))),
        ],
    )
    writer.pairs(
        "Seconds per stage",
        list((summary.get("timings_s") or {}).items()),
        number_format=SECONDS_FORMAT,
    )
    writer.pairs("API calls", list((summary.get("api_calls") or {}).items()), total=True)
    writer.pairs("Existing-pairs check", _existing_lines(summary.get("existing_check")), left=True)
    writer.pairs(
        "Settings",
        [(k, _setting(v)) for k, v in (summary.get("settings") or {}).items()],
        left=True,
    )
    writer.pairs("Notes", [(note, None) for note in summary.get("notes") or []])
    sheet.add_chart(_status_chart(sheet, status_rows), "E3")


def _moment(stamp: str | None) -> str | None:
    """2026-12-03T20:13:34.891+00:00 -> 2026-12-03 20:13:34+00:00, easier to read."""
    try:
        return (
            datetime.fromisoformat(stamp).isoformat(sep=" ", timespec="seconds") if stamp else None
        )
    except ValueError:
        return stamp


def _existing_lines(check: dict[str, Any] | None) -> list[tuple[str, Any]]:
    if not check:
        return []
    labels = {
        "mode": "mode",
        "why": "why",
        "pairs": "pairs to check",
        "reads": "API reads made",
        "contacts_read": "contacts read (vertex cover)",
        "naive_reads": "reads if every contact were read",
    }
    return [(labels.get(key, key), value) for key, value in check.items()]


def _setting(value: Any) -> Any:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "(none)"
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return value


class _SummaryWriter:
    """Appends the Summary sheet's blocks top to bottom, remembering where each row went."""

    def __init__(self, sheet: WriteOnlyWorksheet) -> None:
        self.sheet = sheet
        self.row = 0

    def append(
        self,
        values: list[Any],
        *,
        bold: bool = False,
        colour: str | None = None,
        number_format: str | None = None,
        left: bool = False,
    ) -> int:
        """One row; text left-aligned (column C's indented), numbers right unless `left`."""
        cells = [self._cell(value, bold, colour, number_format) for value in values]
        for column, cell in enumerate(cells):
            if column == 2 and isinstance(cell.value, str):
                cell.alignment = INDENTED
            elif left:
                cell.alignment = LEFT
        self.sheet.append(cells)
        self.row += 1
        return self.row

    def blank(self) -> None:
        self.append([])

    def title(self, text: str) -> None:
        cell = self._cell(text, bold=True, colour=None, number_format=None)
        cell.font = spreadsheet.TITLE_FONT
        self.sheet.append([cell])
        self.row += 1

    def status_block(
        self, summary: dict[str, Any], sheets: dict[str, list[str]]
    ) -> list[tuple[str, int]]:
        """Rows by status (the chart's data); returns each status shown with its sheet row."""
        self._heading(["Status", "Rows", "Sheet"])
        shown = []
        for status in _statuses_shown(summary):
            where = ", ".join(sheets.get(status, [])) or "(none)"
            row = self.append(
                [status, summary.get(status, 0), where], colour=STATUS_COLOURS[status]
            )
            shown.append((status, row))
        self.append(["total rows", summary.get("total_rows", 0)], bold=True)
        if summary.get("blank_rows"):
            self.append(["blank rows (ignored)", summary["blank_rows"]])
        return shown

    def reason_block(self, summary: dict[str, Any]) -> None:
        reasons = summary.get("reasons") or {}
        if not reasons:
            return
        self._heading(["Reason", "Rows", "Status"])
        for key, count in reasons.items():
            status, reason = key.split("/", 1)
            self.append([reason, count, status], colour=STATUS_COLOURS.get(status))
        self.blank()

    def pairs(
        self,
        heading: str,
        lines: list[tuple[str, Any]],
        *,
        total: bool = False,
        number_format: str | None = None,
        left: bool = False,
    ) -> None:
        """A heading, then label and value rows; `left` for values mixing text and numbers."""
        if not lines:
            return
        self.append([heading], bold=True)
        for label, value in lines:
            self.append([label, value], number_format=number_format, left=left)
        if total:
            self.append(["total", sum(int(value) for _label, value in lines)], bold=True)
        self.blank()

    def _heading(self, names: list[str]) -> None:
        """A table's header row: the count column's name over its right-aligned numbers."""
        cells = [self._cell(name, True, None, None) for name in names]
        cells[1].alignment = RIGHT
        cells[2].alignment = INDENTED
        self.sheet.append(cells)
        self.row += 1

    def _cell(self, value: Any, bold: bool, colour: str | None, number_format: str | None) -> Any:
        cell = WriteOnlyCell(self.sheet, value=neutralise_text(value))
        if isinstance(cell.value, str):
            cell.data_type = "s"
            cell.alignment = LEFT
        if number_format:
            cell.number_format = number_format
        if bold:
            cell.font = spreadsheet.HEADER_FONT
        if colour:
            cell.fill = spreadsheet.fill(colour)
        return cell


def _statuses_shown(summary: dict[str, Any]) -> list[str]:
    """A dry run shows would_create, an import created; both show any non-zero count."""
    hidden = "created" if summary.get("dry_run") else "would_create"
    return [s for s in STATUSES if s != hidden or summary.get(s)]


def _status_chart(sheet: WriteOnlyWorksheet, rows: list[tuple[str, int]]) -> BarChart:
    chart = BarChart()
    chart.type = "bar"
    chart.title = "Rows by status"
    chart.legend = None
    chart.x_axis.delete = False
    chart.y_axis.delete = False
    chart.x_axis.scaling.orientation = "maxMin"  # the first status on top, as in the table
    chart.y_axis.crosses = "max"  # ... which would carry the row scale to the top: keep it below
    chart.y_axis.title = "rows"
    chart.y_axis.majorGridlines = None  # each bar is labelled with its count
    chart.height, chart.width = 7.5, 14
    first, last = rows[0][1], rows[-1][1]
    chart.add_data(Reference(sheet, min_col=2, min_row=first, max_row=last), titles_from_data=False)
    chart.set_categories(Reference(sheet, min_col=1, min_row=first, max_row=last))
    series = chart.series[0]
    for index, (status, _row) in enumerate(rows):
        point = DataPoint(idx=index)
        point.graphicalProperties.solidFill = CHART_COLOURS[status]
        series.dPt.append(point)
    series.dLbls = DataLabelList()
    series.dLbls.showVal = True
    for hidden in ("showCatName", "showSerName", "showLegendKey", "showPercent"):
        setattr(series.dLbls, hidden, False)
    return chart


def summary_text(summary: dict[str, Any], paths: ReportPaths | None = None) -> str:
    """The closing summary printed to the terminal: counts by status and by reason."""
    title = "Dry run: nothing was written" if summary.get("dry_run") else "Import finished"
    if summary.get("state") in UNFINISHED_STATES:
        title = f"Import not finished ({summary['state']}): `lacrm-etl resume` finishes it"
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
    check = summary.get("existing_check") or {}
    if check.get("mode") == "check":
        lines.append(
            f"  Existing-pairs check: {check['reads']:,} reads for {check['pairs']:,} pairs "
            f"(one read per contact would be {check['naive_reads']:,})"
        )
    notes = summary.get("notes") or []
    if notes:
        lines += ["", *(f"  Note: {note}" for note in notes)]
    if paths is not None:
        lines += ["", f"  Reports: {paths.directory}"]
    return "\n".join(lines)
