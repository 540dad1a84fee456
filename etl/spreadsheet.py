"""Spreadsheets people open safely: formula neutralising and fast xlsx tables.

Every CSV and XLSX the tool writes goes through `neutralise_formulas`, so no cell starts with a
character a spreadsheet would run. Tables are written with openpyxl in write-only mode: rows
stream to disk as they come, so memory stays flat at a million rows (normal mode keeps a Python
object per cell, gigabytes at that size). Ids are text cells formatted "@", never numbers.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator, Sequence
from copy import copy
from typing import Any

import polars as pl
from openpyxl import Workbook
from openpyxl.cell import Cell, WriteOnlyCell
from openpyxl.formatting.rule import CellIsRule
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet
from tqdm import tqdm

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
EXCEL_MAX_DATA_ROWS = 1_048_575  # 1,048,576 rows a sheet, less the header
EXCEL_MAX_CELL_CHARS = 32_767
TEXT_FORMAT = "@"
MIN_WIDTH, MAX_WIDTH = 6, 60
FILTER_BUTTON_WIDTH = 3
_FORMULA_START = "^[" + "".join(FORMULA_TRIGGERS).replace("-", r"\-") + "]"
_NEUTRALISED = "^'(" + _FORMULA_START.removeprefix("^") + ")"
# Control characters XML 1.0 cannot hold; openpyxl refuses them.
_ILLEGAL_XML = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"
# The body's font named outright: a bold Font() with no name shows in a serif fallback.
BODY_FONT_NAME = "Calibri"
HEADER_FONT = Font(name=BODY_FONT_NAME, size=11, bold=True)
TITLE_FONT = Font(name=BODY_FONT_NAME, size=14, bold=True)
WRAP = Alignment(wrap_text=True, vertical="top")
TOP = Alignment(vertical="top")
PROSE_PER_DIGIT = 1.1
LINE_HEIGHT, MAX_ROW_HEIGHT = 15.0, 409.0  # points: Calibri 11's row, Excel's tallest


def neutralise_formulas(frame: pl.DataFrame) -> pl.DataFrame:
    """Prefix an apostrophe to every text cell a spreadsheet would run as a formula."""
    text_columns = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    return frame.with_columns(
        pl.when(pl.col(name).str.contains(_FORMULA_START))
        .then("'" + pl.col(name))
        .otherwise(pl.col(name))
        .alias(name)
        for name in text_columns
    )


def unneutralised(text: pl.Expr) -> pl.Expr:
    """The text a neutralised cell stood for: our report.csv, failed.csv and exports are meant
    to be imported again, and the CRM must get the note as it was, not the guard."""
    return text.str.replace(_NEUTRALISED, "$1")


def neutralise_text(value: Any) -> Any:
    """The same for one value: a summary cell, a setting."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def excel_safe(frame: pl.DataFrame) -> pl.DataFrame:
    """Neutralised, without the control characters XML cannot hold, within Excel's cell size."""
    text_columns = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    cleaned = frame.with_columns(
        pl.col(name).str.replace_all(_ILLEGAL_XML, "\ufffd").str.slice(0, EXCEL_MAX_CELL_CHARS)
        for name in text_columns
    )
    return neutralise_formulas(cleaned)


def new_workbook() -> Workbook:
    return Workbook(write_only=True)


def sheet_titles(title: str, rows: int, max_rows: int = EXCEL_MAX_DATA_ROWS) -> list[str]:
    """One sheet per `max_rows` rows: `failed`, `failed (2)`, ... (always at least one)."""
    parts = max(1, -(-rows // max_rows))
    return [title if n == 1 else f"{title} ({n})" for n in range(1, parts + 1)]


def fill(colour: str) -> PatternFill:
    return PatternFill("solid", start_color=colour, end_color=colour)


def write_table(
    workbook: Workbook,
    title: str,
    frame: pl.DataFrame,
    *,
    id_columns: Sequence[str] = (),
    colour: str | None = None,
    value_colours: tuple[str, dict[str, str]] | None = None,
    wrap_columns: Sequence[str] = (),
    max_rows: int = EXCEL_MAX_DATA_ROWS,
    bar: tqdm[Any] | None = None,
) -> list[str]:
    """Write `frame` as one sheet (or several of `max_rows` rows), ready to read and filter.

    Header frozen and filtered, widths fitted to the content, ids as text, `colour` on the
    header and the tab; `value_colours` = (column, {value: colour}) fills matching cells.
    A value in `wrap_columns` wider than its column wraps onto more lines (the row grows).
    Returns the sheet titles.
    """
    safe = excel_safe(frame)
    widths = column_widths(safe)
    titles = sheet_titles(title, safe.height, max_rows)
    for number, sheet_title in enumerate(titles):
        part = safe.slice(number * max_rows, max_rows)
        sheet = workbook.create_sheet(sheet_title)
        _lay_out(sheet, part, widths, id_columns, colour)
        if value_colours is not None:
            _colour_values(sheet, part, *value_colours)
        sheet.append(_header(sheet, part.columns, colour))
        limits = _wrap_limits(part, widths, wrap_columns)
        for number_on_sheet, row in enumerate(_rows(sheet, part, id_columns), start=2):
            lines = _wrap(sheet, row, limits)
            if lines > 1:
                # Set before the row streams out, dropped after: no object kept per row.
                height = min(MAX_ROW_HEIGHT, lines * LINE_HEIGHT)
                sheet.row_dimensions[number_on_sheet].height = height
            sheet.append(row)
            if lines > 1:
                del sheet.row_dimensions[number_on_sheet]
            if bar is not None:
                bar.update(1)
    return titles


def column_widths(frame: pl.DataFrame) -> list[float]:
    """Characters per column: the longest value or the header, within readable bounds."""
    if frame.is_empty():
        longest = [0] * frame.width
    else:
        longest = list(
            frame.select(
                pl.col(name).cast(pl.String).str.len_chars().max().fill_null(0)
                for name in frame.columns
            ).row(0)
        )
    return [
        float(min(MAX_WIDTH, max(MIN_WIDTH, len(name) + FILTER_BUTTON_WIDTH, _fit(longest_value))))
        for name, longest_value in zip(frame.columns, longest, strict=True)
    ]


def _fit(characters: int) -> int:
    # Widths count the digit "0"; letters in a proportional font and bold headers run wider.
    return round(characters * 1.1) + 2


def _lay_out(
    sheet: WriteOnlyWorksheet,
    frame: pl.DataFrame,
    widths: list[float],
    id_columns: Sequence[str],
    colour: str | None,
) -> None:
    """What write-only mode needs before the first row: panes, filter, widths, formats."""
    last_column = get_column_letter(max(frame.width, 1))
    sheet.freeze_panes = "A2"
    sheet.auto_filter.ref = f"A1:{last_column}{frame.height + 1}"
    sheet.print_title_rows = "1:1"
    fit_to_page_width(sheet)
    if colour:
        sheet.sheet_properties.tabColor = colour
    for index, (name, width) in enumerate(zip(frame.columns, widths, strict=True), start=1):
        dimension = sheet.column_dimensions[get_column_letter(index)]
        dimension.width = width
        if name in id_columns:
            # A column style too: an id a person types or pastes here stays text.
            dimension.number_format = TEXT_FORMAT


def fit_to_page_width(sheet: WriteOnlyWorksheet) -> None:
    """Printed (or made a PDF), every column on one landscape page width, pages running down."""
    sheet.page_setup.orientation = "landscape"
    sheet.page_setup.fitToWidth = 1
    sheet.page_setup.fitToHeight = 0
    sheet.sheet_properties.pageSetUpPr.fitToPage = True


def _header(sheet: WriteOnlyWorksheet, columns: list[str], colour: str | None) -> list[Cell]:
    cells = []
    for name in columns:
        cell = WriteOnlyCell(sheet, value=neutralise_text(name))
        cell.data_type = "s"
        cell.font = HEADER_FONT
        cell.alignment = Alignment(vertical="center")
        if colour:
            cell.fill = fill(colour)
        cells.append(cell)
    return cells


def _wrap_limits(
    frame: pl.DataFrame, widths: list[float], wrap_columns: Sequence[str]
) -> dict[int, int]:
    """Column position -> characters a line, for the columns that wrap.

    A width counts digits; prose runs narrower (about 1.2 characters to a digit in Calibri), so
    1.1 a digit errs towards a spare line rather than a hidden one.
    """
    return {
        position: int(widths[position] * PROSE_PER_DIGIT)
        for position, name in enumerate(frame.columns)
        if name in wrap_columns
    }


def _wrap(sheet: WriteOnlyWorksheet, row: list[Any], limits: dict[int, int]) -> int:
    """The lines `row` needs. Past one, its long text wraps and every cell sits at the top.

    Only such rows get styled cells, so a sheet of short rows costs nothing more. The row's
    height is set by the caller: LibreOffice, for one, does not refit rows when it opens a file.
    """
    lines = 1
    for position, limit in limits.items():
        value = row[position]
        if isinstance(value, str) and len(value) > limit:
            wrapped = sum(len(textwrap.wrap(line, limit)) or 1 for line in value.splitlines())
            lines = max(lines, wrapped)
    if lines == 1:
        return 1
    for position, value in enumerate(row):
        if value is None:
            continue
        cell = value if isinstance(value, Cell) else WriteOnlyCell(sheet, value=value)
        cell.alignment = WRAP if position in limits else TOP
        row[position] = cell
    return lines


def _rows(
    sheet: WriteOnlyWorksheet, frame: pl.DataFrame, id_columns: Sequence[str]
) -> Iterator[list[Any]]:
    """Plain values, except ids: text cells formatted "@" (a plain str would lose the format)."""
    text_style = WriteOnlyCell(sheet)
    text_style.number_format = TEXT_FORMAT
    style = text_style._style
    id_positions = [frame.columns.index(name) for name in id_columns if name in frame.columns]
    for values in frame.iter_rows():
        row: list[Any] = list(values)
        for position in id_positions:
            value = row[position]
            if value is not None:
                cell = WriteOnlyCell(sheet, value=str(value))
                cell.data_type = "s"
                cell._style = copy(style)
                row[position] = cell
        yield row


def _colour_values(
    sheet: WriteOnlyWorksheet, frame: pl.DataFrame, column: str, colours: dict[str, str]
) -> None:
    """Conditional formatting: one rule for the whole column costs nothing per row."""
    if column not in frame.columns or frame.is_empty():
        return
    letter = get_column_letter(frame.columns.index(column) + 1)
    cells = f"{letter}2:{letter}{frame.height + 1}"
    for value, colour in colours.items():
        rule = CellIsRule(operator="equal", formula=[f'"{value}"'], fill=fill(colour))
        sheet.conditional_formatting.add(cells, rule)
