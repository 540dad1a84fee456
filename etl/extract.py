"""Read spreadsheets into one frame of strings, one row per data row, nothing inferred.

Every cell comes through as the text a person sees: no type inference, leading zeros and
31-digit ids exact, whitespace trimmed, non-breaking spaces folded, empty cells null. Blank
rows are counted, not returned. Each row keeps its source, sheet and the row number a person
sees in the spreadsheet (the header is row `header_row`).

Input columns named like the frame's own columns (row_id, source, sheet, row) are renamed
"<name> (input)", with a note, so the frame's vocabulary keeps one meaning.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

META_COLUMNS = ("row_id", "source", "sheet", "row")
TEXT_EXTENSIONS = (".csv", ".tsv", ".txt")
WORKBOOK_EXTENSIONS = (".xlsx", ".xlsm", ".xls", ".ods")

_SNIFF_BYTES = 64 * 1024
_DELIMITERS = (",", ";", "\t", "|")
_DELIMITER_NAMES = {",": "commas", ";": "semicolons", "\t": "tabs", "|": "pipes"}
# Folded before trimming: a non-breaking space is a space to a person, a zero-width one nothing.
_SPACE_FOLDS = {
    "\u00a0": " ",
    "\u2007": " ",
    "\u202f": " ",
    "\u200b": "",
    "\ufeff": "",
}


class ExtractError(Exception):
    """A file that cannot be read as the user meant; the message says what to do."""


@dataclass(frozen=True)
class Extracted:
    rows: pl.DataFrame
    columns: list[str]
    blank_rows: int
    notes: list[str]
    numeric_cells: pl.DataFrame


@dataclass
class Grid:
    """One sheet or text file as read: generic String columns, header row included.

    `frame` holds `row` (Int64, the row number a person sees) then the cells; `numeric`
    lists the cells a workbook stored as numbers as `row: Int64, col: Int64` (0-based index
    into the cell columns).
    """

    frame: pl.DataFrame
    sheet: str = ""
    notes: list[str] = field(default_factory=list)
    numeric: pl.DataFrame = field(default_factory=lambda: _empty_numeric_grid())


@dataclass(frozen=True)
class Table:
    """One source's data rows with their real column names."""

    frame: pl.DataFrame
    columns: list[str]
    sheet: str
    blank_rows: int
    notes: list[str]
    numeric_cells: pl.DataFrame


def extract(
    paths: list[str] | list[Path] | tuple[str | Path, ...] | str | Path,
    sheet: str | int | None = None,
    header_row: int = 1,
) -> Extracted:
    """Read every source into one frame; see the module docstring for what comes out."""
    if isinstance(paths, str | Path):
        paths = [paths]
    if not paths:
        raise ExtractError("No input file given: name at least one CSV or Excel file.")
    if header_row < 1:
        raise ExtractError(f"The header row must be 1 or more, not {header_row}.")
    tables = [read_source(str(path), sheet, header_row) for path in paths]
    return combine(tables, [str(path) for path in paths])


def read_source(path: str, sheet: str | int | None, header_row: int) -> Table:
    """One file, read and cleaned; errors name the file."""
    file = Path(path)
    if not file.exists():
        raise ExtractError(f"{path}: no such file; check the name and the folder.")
    if file.is_dir():
        raise ExtractError(f"{path} is a folder; name a CSV or Excel file inside it.")
    extension = file.suffix.lower()
    if extension in TEXT_EXTENSIONS:
        grid = read_text(file, header_row)
    elif extension in WORKBOOK_EXTENSIONS:
        grid = read_workbook(file, sheet)
    else:
        raise ExtractError(
            f"{path}: unsupported file type {extension or '(no extension)'}; use .csv, .tsv, "
            ".txt, .xlsx, .xlsm, .xls or .ods (save it from Excel as CSV or .xlsx)."
        )
    return table_from_grid(grid, header_row, path)


# ---------------------------------------------------------------------------------------
# Text files


@dataclass(frozen=True)
class TextFormat:
    encoding: str  # a Python codec name
    label: str  # what the note calls it
    delimiter: str
    eol: str


def read_text(file: Path, header_row: int) -> Grid:
    if file.stat().st_size == 0:
        raise ExtractError(f"{file}: the file is empty.")
    with file.open("rb") as handle:
        sample = handle.read(_SNIFF_BYTES)
    text_format = sniff_text(file, sample)
    notes = text_notes(text_format)
    frame, ragged_note = read_csv_frame(file, text_format, header_row)
    if ragged_note:
        notes.append(ragged_note)
    frame = frame.select(
        pl.int_range(header_row, header_row + frame.height, dtype=pl.Int64).alias("row"),
        pl.all(),
    )
    return Grid(frame=frame, notes=notes)


def sniff_text(file: Path, sample: bytes) -> TextFormat:
    encoding, label = sniff_encoding(file, sample)
    text = decode_sample(sample, encoding)
    eol = "\r" if "\r" in text and "\n" not in text else "\n"
    delimiter = sniff_delimiter(text, file.suffix.lower())
    return TextFormat(encoding=encoding, label=label, delimiter=delimiter, eol=eol)


def sniff_encoding(file: Path, sample: bytes) -> tuple[str, str]:
    """The codec that reads this file, told from its BOM or its bytes; never a silent guess."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig", "UTF-8 (with BOM)"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16", "UTF-16 (Excel Unicode text)"
    if b"\x00" in sample:
        return sniff_bomless_utf16(file, sample)
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
    except UnicodeDecodeError:
        return legacy_encoding(sample)
    return "utf-8", "UTF-8"


def sniff_bomless_utf16(file: Path, sample: bytes) -> tuple[str, str]:
    if sample.startswith(b"PK\x03\x04"):
        raise ExtractError(
            f"{file}: this is a zip archive or an Excel workbook, not a text file; "
            "if it is a workbook, rename it to .xlsx."
        )
    even_zeros = sample[0::2].count(0)
    odd_zeros = sample[1::2].count(0)
    half = len(sample) // 2
    if odd_zeros > 0.4 * half and even_zeros < 0.05 * half:
        return "utf-16-le", "UTF-16 little-endian (no BOM)"
    if even_zeros > 0.4 * half and odd_zeros < 0.05 * half:
        return "utf-16-be", "UTF-16 big-endian (no BOM)"
    raise ExtractError(
        f"{file}: this does not look like a text file (it holds binary data); "
        "export it from its program as CSV or .xlsx."
    )


def legacy_encoding(sample: bytes) -> tuple[str, str]:
    try:
        sample.decode("cp1252")
    except UnicodeDecodeError:
        return "latin-1", "Latin-1 (ISO-8859-1)"
    return "cp1252", "Windows-1252 (cp1252)"


def decode_sample(sample: bytes, encoding: str) -> str:
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    text = decoder.decode(sample, final=False)
    return text.removeprefix("\ufeff")


def sniff_delimiter(text: str, extension: str) -> str:
    """The delimiter that splits the sample into the most consistent rows of >1 field."""
    lines = text.splitlines(keepends=True)
    if len(lines) > 1:
        lines = lines[:-1]  # the last line of a sample may be cut short
    sample = "".join(lines[:200])
    preferred = "\t" if extension == ".tsv" else ","

    def score(delimiter: str) -> tuple[bool, float, int, bool]:
        counts = [len(record) for record in csv.reader(io.StringIO(sample), delimiter=delimiter)]
        counts = [count for count in counts if count > 0]
        if not counts:
            return (False, 0.0, 0, delimiter == preferred)
        width, frequency = Counter(counts).most_common(1)[0]
        return (width > 1, frequency / len(counts), width, delimiter == preferred)

    best = max(_DELIMITERS, key=score)
    return best if score(best)[0] else preferred


def text_notes(text_format: TextFormat) -> list[str]:
    notes = []
    if text_format.encoding not in ("utf-8", "utf-8-sig"):
        detail = (
            " because it is not valid UTF-8; if accented letters look wrong in the report, "
            "save the file as CSV UTF-8 and import it again"
            if text_format.encoding in ("cp1252", "latin-1")
            else ""
        )
        notes.append(f"read as {text_format.label}{detail}")
    if text_format.delimiter != ",":
        notes.append(f"columns separated by {_DELIMITER_NAMES[text_format.delimiter]}")
    return notes


def read_csv_frame(
    file: Path, text_format: TextFormat, header_row: int
) -> tuple[pl.DataFrame, str]:
    """The grid of a text file from the header row on, and a note if extra cells were empty."""
    source: Path | bytes = file
    if text_format.encoding not in ("utf-8", "utf-8-sig"):
        source = transcode(file, text_format.encoding)
    try:
        return polars_read_csv(source, text_format, header_row, truncate=False), ""
    except pl.exceptions.NoDataError:
        raise ExtractError(f"{file}: the file is empty.") from None
    except pl.exceptions.ComputeError as error:
        message = str(error)
        if "invalid utf-8" in message and text_format.encoding == "utf-8":
            return read_csv_frame(file, legacy_format(file, text_format), header_row)
        if "more fields" not in message:
            raise ExtractError(f"{file}: cannot be read as CSV ({first_line(message)}).") from None
    check_extra_cells(file, text_format, header_row)
    frame = polars_read_csv(source, text_format, header_row, truncate=True)
    return frame, "empty cells beyond the last column were ignored"


def legacy_format(file: Path, text_format: TextFormat) -> TextFormat:
    encoding, label = legacy_encoding(file.read_bytes())
    return TextFormat(encoding, label, text_format.delimiter, text_format.eol)


def transcode(file: Path, encoding: str) -> bytes:
    try:
        text = file.read_bytes().decode(encoding)
    except UnicodeDecodeError as error:
        raise ExtractError(
            f"{file}: not valid {encoding} text at byte {error.start}; "
            "save it from its program as CSV UTF-8 and import it again."
        ) from None
    return text.removeprefix("\ufeff").encode("utf-8")


def polars_read_csv(
    source: Path | bytes, text_format: TextFormat, header_row: int, *, truncate: bool
) -> pl.DataFrame:
    return pl.read_csv(
        source,
        has_header=False,
        infer_schema=False,
        separator=text_format.delimiter,
        quote_char='"',
        skip_rows=header_row - 1,
        eol_char=text_format.eol,
        truncate_ragged_lines=truncate,
        raise_if_empty=True,
    )


def check_extra_cells(file: Path, text_format: TextFormat, header_row: int) -> None:
    """Raise naming the first row with more non-empty cells than the header has columns.

    Extra cells usually mean an unquoted delimiter inside a value ("Smith, John"), which
    shifts every later cell of that row into the wrong column; importing such a row could
    relate the wrong people, so it is refused rather than cut.
    """
    text = file.read_bytes().decode(text_format.encoding, errors="replace")
    records = csv.reader(io.StringIO(text.removeprefix("\ufeff")), delimiter=text_format.delimiter)
    width = 0
    for number, record in enumerate(records, start=1):
        if number == header_row:
            width = len(record)
        elif number > header_row and any(cell.strip() for cell in record[width:]):
            raise ExtractError(
                f"{file}: row {number} has {len(record)} cells but the header has {width} "
                f"columns; a value probably holds an unquoted {delimiter_name(text_format)} "
                "inside it: put that value in double quotes (or fix the row) and import again."
            )


def delimiter_name(text_format: TextFormat) -> str:
    return {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}[text_format.delimiter]


def first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "unknown error"


# ---------------------------------------------------------------------------------------
# Workbooks


def read_workbook(file: Path, sheet: str | int | None) -> Grid:
    raise ExtractError(f"{file}: Excel files are not supported yet; save it as CSV UTF-8.")


# ---------------------------------------------------------------------------------------
# From a grid to a table: header, names, cleaning, blank rows


def table_from_grid(grid: Grid, header_row: int, path: str) -> Table:
    cells = [name for name in grid.frame.columns if name != "row"]
    frame = grid.frame.with_columns(clean_text(name) for name in cells)
    header = header_values(frame, cells, header_row, path)
    data = frame.filter(pl.col("row") > header_row)
    notes = list(grid.notes)
    names = column_names(header, data, cells, path, notes)
    data = data.select("row", *(pl.col(cell).alias(name) for cell, name in names.items()))
    blank = pl.all_horizontal(pl.exclude("row").is_null()) if names else pl.lit(True)
    blank_rows = data.filter(blank).height
    data = data.filter(~blank)
    if data.height == 0:
        raise ExtractError(
            f"{path}: the header (row {header_row}) is there but there are no data rows "
            "below it; check the file, or --sheet / --header-row."
        )
    numeric = numeric_cells_of(grid.numeric, data, cells, names)
    return Table(data, list(names.values()), grid.sheet, blank_rows, notes, numeric)


def clean_text(name: str) -> pl.Expr:
    text = pl.col(name).str.replace_many(_SPACE_FOLDS).str.strip_chars()
    return pl.when(text.str.len_bytes() > 0).then(text).alias(name)


def header_values(frame: pl.DataFrame, cells: list[str], header_row: int, path: str) -> list:
    header = frame.filter(pl.col("row") == header_row)
    values = list(header.row(0)[1:]) if header.height else [None] * len(cells)
    if any(value is not None for value in values):
        return values
    filled = frame.filter(~pl.all_horizontal(pl.exclude("row").is_null()))
    if filled.height == 0:
        raise ExtractError(f"{path}: the file is empty (no cell holds a value).")
    first = filled["row"][0]
    if first > header_row:
        raise ExtractError(
            f"{path}: row {header_row}, the header row, is empty; the first row holding "
            f"values is row {first}: use --header-row {first}."
        )
    raise ExtractError(
        f"{path}: there is no row {header_row} (the last row is {frame['row'][-1]}); "
        "check --header-row."
    )


def column_names(
    header: list, data: pl.DataFrame, cells: list[str], path: str, notes: list[str]
) -> dict[str, str]:
    """Grid column -> real name; unnamed empty columns dropped, unnamed ones with data named."""
    names: dict[str, str] = {}
    for index, (cell, value) in enumerate(zip(cells, header, strict=True)):
        if value is None:
            if data[cell].null_count() == data.height:
                continue
            value = f"Column {column_letter(index)}"
            notes.append(f'column {column_letter(index)} has no header; it is called "{value}"')
        names[cell] = value
    check_duplicates(names, cells, path)
    return rename_meta_clashes(names, notes)


def check_duplicates(names: dict[str, str], cells: list[str], path: str) -> None:
    seen: dict[str, str] = {}
    for cell, name in names.items():
        letter = column_letter(cells.index(cell))
        if name in seen:
            raise ExtractError(
                f'{path}: the header has "{name}" twice (columns {seen[name]} and {letter}); '
                "rename one so every column has its own name."
            )
        seen[name] = letter


def rename_meta_clashes(names: dict[str, str], notes: list[str]) -> dict[str, str]:
    taken = set(names.values())
    renamed = {}
    for cell, name in names.items():
        new_name = name
        while new_name in META_COLUMNS or (new_name != name and new_name in taken):
            new_name = f"{new_name} (input)"
        if new_name != name:
            notes.append(f'the column "{name}" is called "{new_name}" (the report uses "{name}")')
            taken.add(new_name)
        renamed[cell] = new_name
    return renamed


def column_letter(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA: the column names a spreadsheet shows."""
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(ord("A") + remainder) + letters
    return letters


def numeric_cells_of(
    numeric: pl.DataFrame, data: pl.DataFrame, cells: list[str], names: dict[str, str]
) -> pl.DataFrame:
    """Numeric grid cells as (position in this table's data, column name), non-null only."""
    if numeric.height == 0:
        return _empty_numeric_table()
    index_to_name = {cells.index(cell): name for cell, name in names.items()}
    positions = data.select("row").with_row_index("position")
    return (
        numeric.filter(pl.col("col").is_in(list(index_to_name)))
        .with_columns(
            pl.col("col")
            .replace_strict(index_to_name, return_dtype=pl.String, default=None)
            .alias("column")
        )
        .join(positions, on="row", how="inner")
        .select(pl.col("position").cast(pl.UInt32), "column")
        .sort("position", "column")
    )


# ---------------------------------------------------------------------------------------
# Several sources into one frame


def combine(tables: list[Table], sources: list[str]) -> Extracted:
    columns: list[str] = []
    for table in tables:
        columns.extend(name for name in table.columns if name not in columns)
    frames = [
        table.frame.with_columns(source=pl.lit(source), sheet=pl.lit(table.sheet))
        for table, source in zip(tables, sources, strict=True)
    ]
    rows = pl.concat(frames, how="diagonal") if len(frames) > 1 else frames[0]
    rows = rows.with_row_index("row_id").select(
        pl.col("row_id").cast(pl.UInt32),
        pl.col("source").cast(pl.String),
        pl.col("sheet").cast(pl.String),
        pl.col("row").cast(pl.Int64),
        *(pl.col(name).cast(pl.String) for name in columns),
    )
    return Extracted(
        rows=rows,
        columns=columns,
        blank_rows=sum(table.blank_rows for table in tables),
        notes=[
            f"{source}: {note}"
            for table, source in zip(tables, sources, strict=True)
            for note in table.notes
        ],
        numeric_cells=numeric_row_ids(tables),
    )


def numeric_row_ids(tables: list[Table]) -> pl.DataFrame:
    parts = []
    offset = 0
    for table in tables:
        parts.append(
            table.numeric_cells.select(
                (pl.col("position") + offset).cast(pl.UInt32).alias("row_id"), "column"
            )
        )
        offset += table.frame.height
    return pl.concat(parts) if parts else pl.DataFrame(schema=NUMERIC_CELLS_SCHEMA)


NUMERIC_CELLS_SCHEMA = {"row_id": pl.UInt32, "column": pl.String}


def _empty_numeric_grid() -> pl.DataFrame:
    return pl.DataFrame(schema={"row": pl.Int64, "col": pl.Int64})


def _empty_numeric_table() -> pl.DataFrame:
    return pl.DataFrame(schema={"position": pl.UInt32, "column": pl.String})
