"""Read spreadsheets into one frame of strings, one row per data row, nothing inferred.

Every cell comes through as the text a person sees: no type inference, leading zeros and
31-digit ids exact, whitespace trimmed, non-breaking spaces folded, empty cells null. Blank
rows are counted, not returned. Each row keeps its source, sheet and the row number a person
sees in the spreadsheet (the header is row `header_row`).

Input columns named like the frame's own columns (row_id, source, sheet, row) are renamed
"<name> (input)", with a note, so the frame's vocabulary keeps one meaning.
"""

from __future__ import annotations

import _csv
import codecs
import csv
import io
import mmap
import re
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from pyexpat import ExpatError
from typing import BinaryIO, NamedTuple
from xml.etree import ElementTree

import fastexcel
import polars as pl
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser
from defusedxml.ElementTree import fromstring as defused_fromstring
from openpyxl.styles.numbers import BUILTIN_FORMATS, is_date_format

from etl.numfmt import BUILTIN_NUMBER_FORMATS, NumberFormat, compile_format, render

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
_FOLD_BYTES = tuple(char.encode() for char in _SPACE_FOLDS)
_FOLD_LEAD_BYTES = tuple(dict.fromkeys(sequence[:1] for sequence in _FOLD_BYTES))
# Past this many lead bytes that start no fold character, the cells are searched instead.
_FOLD_SCAN_LIMIT = 256
_FOLD_SCAN_CHUNK = 256 * 1024
_EXTRA_EMPTY_CELLS_NOTE = "empty cells beyond the last column were ignored"


class ExtractError(Exception):
    """A file that cannot be read as the user meant; the message says what to do."""


@dataclass(frozen=True)
class Extracted:
    rows: pl.DataFrame
    columns: list[str]
    blank_rows: int
    notes: list[str]
    numeric_cells: pl.DataFrame
    renamed: dict[str, str] = field(default_factory=dict)  # "source" -> "source (input)"


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
    may_fold: bool = True  # False when no cell can hold a character of _SPACE_FOLDS


@dataclass(frozen=True)
class Table:
    """One source's data rows with their real column names."""

    frame: pl.DataFrame
    columns: list[str]
    sheet: str
    blank_rows: int
    notes: list[str]
    numeric_cells: pl.DataFrame
    renamed: dict[str, str]


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
            ".txt, .xlsx or .xlsm (save it from Excel as CSV or .xlsx)."
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
    text = read_csv_frame(file, sniff_text(file, sample), header_row)
    notes = text_notes(text.format)
    if text.ragged_note:
        notes.append(text.ragged_note)
    frame = text.frame.select(
        pl.int_range(header_row, header_row + text.frame.height, dtype=pl.Int64).alias("row"),
        pl.all(),
    )
    return Grid(frame=frame, notes=notes, may_fold=text.may_fold)


def sniff_text(file: Path, sample: bytes) -> TextFormat:
    encoding, label = sniff_encoding(file, sample)
    text = decode_sample(sample, encoding)
    # A cell of a CR-only file may hold a line feed: look at line ends outside quoted cells too.
    unquoted = re.sub(r'"[^"]*"', "", text)
    cr_only = "\r" in text and "\n" not in text
    cr_outside_quotes = "\r" in unquoted and "\n" not in unquoted
    eol = "\r" if cr_only or cr_outside_quotes else "\n"
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
        counts = [
            len(record)
            for record in csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter)
        ]
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


class TextGrid(NamedTuple):
    frame: pl.DataFrame  # from the header row on
    format: TextFormat  # as read: bytes past the sniffed sample may change the encoding
    ragged_note: str  # said if extra cells were empty
    may_fold: bool  # whether any cell may hold a character of _SPACE_FOLDS


def read_csv_frame(file: Path, text_format: TextFormat, header_row: int) -> TextGrid:
    source: Path | bytes = file
    if text_format.encoding not in ("utf-8", "utf-8-sig"):
        source = transcode(file, text_format.encoding)
    try:
        frame, note = read_ragged(file, source, text_format, header_row)
    except pl.exceptions.NoDataError:
        raise ExtractError(no_rows_message(file, header_row)) from None
    except pl.exceptions.ComputeError as error:
        if "invalid utf-8" in str(error) and text_format.encoding == "utf-8":
            return read_csv_frame(file, legacy_format(file, text_format), header_row)
        frame, note = read_with_csv_module(file, text_format, header_row)
        return TextGrid(frame, text_format, note, True)
    return TextGrid(frame, text_format, note, may_hold_folds(source, text_format))


def no_rows_message(file: Path, header_row: int) -> str:
    if header_row > 1:
        return (
            f"{file}: there is no row {header_row}, the header row (the file ends before it); "
            "check --header-row."
        )
    return f"{file}: the file is empty."


def read_ragged(
    file: Path, source: Path | bytes, text_format: TextFormat, header_row: int
) -> tuple[pl.DataFrame, str]:
    """polars' read; rows longer than the header are cut only where the extra cells are empty."""
    try:
        return polars_read_csv(source, text_format, header_row, truncate=False), ""
    except pl.exceptions.ComputeError as error:
        if "more fields" not in str(error):
            raise
    check_extra_cells(file, text_format, header_row, csv_records(file, text_format))
    frame = polars_read_csv(source, text_format, header_row, truncate=True)
    return frame, _EXTRA_EMPTY_CELLS_NOTE


def read_with_csv_module(
    file: Path, text_format: TextFormat, header_row: int
) -> tuple[pl.DataFrame, str]:
    """The grid as Excel reads what polars refuses: a quote inside an unquoted cell (5'10").

    Strict, so a quoted cell left open is refused instead of swallowing the rows after it.
    """
    reader = csv_records(file, text_format, strict=True)
    records: list[list[str]] = []
    started = 1  # the line the record being read starts on: where a quote left open is
    try:
        for record in reader:
            records.append(record)
            started = reader.line_num + 1
    except csv.Error as error:
        raise ExtractError(
            f"{file}: line {started} cannot be read as CSV ({error}); a cell holding "
            'double quotes must be quoted as a whole, each quote doubled ("5\'10""").'
        ) from None
    check_extra_cells(file, text_format, header_row, records)
    records = records[header_row - 1 :]
    if not records:
        raise ExtractError(no_rows_message(file, header_row))
    width = len(records[0])
    columns = {
        f"column_{index + 1}": [
            (record[index] or None) if index < len(record) else None for record in records
        ]
        for index in range(width)
    }
    frame = pl.DataFrame(columns, schema=dict.fromkeys(columns, pl.String))
    wider = any(len(record) > width for record in records)
    return frame, _EXTRA_EMPTY_CELLS_NOTE if wider else ""


def may_hold_folds(source: Path | bytes, text_format: TextFormat) -> bool:
    """Whether the UTF-8 text polars read may hold a character of _SPACE_FOLDS.

    Looking for each one's lead byte is a memchr over the file (a few ms for 75 MB) where
    searching every cell costs ten times that; most files hold none, and the cells are
    searched only when a lead byte is there.
    """
    if isinstance(source, bytes):
        return holds_fold_bytes(source, 0)
    start = len(codecs.BOM_UTF8) if text_format.encoding == "utf-8-sig" else 0  # polars drops it
    with (
        source.open("rb") as handle,
        mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view,
    ):
        return holds_fold_bytes(view, start)


def holds_fold_bytes(data: bytes | mmap.mmap, start: int) -> bool:
    """True when a fold character is in data[start:], or when too many lead bytes to check are.

    Searched a cache-sized chunk at a time, so the file crosses memory once, not once per
    lead byte.
    """
    seen = 0
    for chunk_start in range(start, len(data), _FOLD_SCAN_CHUNK):
        chunk_end = min(chunk_start + _FOLD_SCAN_CHUNK, len(data))
        for lead in _FOLD_LEAD_BYTES:
            position = data.find(lead, chunk_start, chunk_end)
            while position != -1:
                if any(data[position : position + len(seq)] == seq for seq in _FOLD_BYTES):
                    return True
                seen += 1
                if seen > _FOLD_SCAN_LIMIT:
                    return True
                position = data.find(lead, position + 1, chunk_end)
    return False


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


def csv_records(file: Path, text_format: TextFormat, *, strict: bool = False) -> _csv.Reader:
    """The file's records as Python's csv module (and Excel) split them."""
    text = file.read_bytes().decode(text_format.encoding, errors="replace")
    return csv.reader(
        io.StringIO(text.removeprefix("\ufeff"), newline=""),
        delimiter=text_format.delimiter,
        strict=strict,
    )


def check_extra_cells(
    file: Path, text_format: TextFormat, header_row: int, records: Iterable[list[str]]
) -> None:
    """Raise naming the first row with more non-empty cells than the header has columns.

    Extra cells usually mean an unquoted delimiter inside a value ("Smith, John"), which
    shifts every later cell of that row into the wrong column; importing such a row could
    relate the wrong people, so it is refused rather than cut.
    """
    width = 0
    for number, record in enumerate(records, start=1):
        if number == header_row:
            width = len(record)
        elif number > header_row and any(cell.strip() for cell in record[width:]):
            raise ExtractError(
                f"{file}: row {number} has {len(record)} cells but the header has {width} "
                f"columns; a value probably holds an unquoted {delimiter_name(text_format)} "
                "inside it: put that value in double quotes (or fix the row) and import again. "
                "If lines above the header hold a title, --header-row N names the header row."
            )


def delimiter_name(text_format: TextFormat) -> str:
    return {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}[text_format.delimiter]


def first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "unknown error"


# ---------------------------------------------------------------------------------------
# Workbooks
#
# Values come from calamine (fastexcel), fast and as strings. What calamine does not say -
# where the sheet starts, which cells Excel stored as numbers, dates, booleans, merged
# ranges - comes from one streaming pass over the sheet's XML (expat hardened by defusedxml),
# which costs far less than reading the cells through openpyxl.

_ZIP_MAGIC = b"PK\x03\x04"
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PACKAGE_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
# A workbook's XML compresses well, but not a thousandfold; a zip bomb does.
MAX_UNCOMPRESSED_BYTES = 4 * 1024**3
MAX_COMPRESSION_RATIO = 200
_RATIO_APPLIES_ABOVE = 64 * 1024**2


@dataclass(frozen=True)
class SheetInfo:
    name: str
    path: str  # the member of the zip holding the sheet's XML
    hidden: bool


@dataclass
class SheetScan:
    """What the XML pass learns about a sheet; rows and columns 1-based, as Excel counts."""

    first_row: int = 0
    first_col: int = 0
    numeric: list[tuple[int, int]] = field(default_factory=list)
    dates: list[tuple[int, int, str]] = field(default_factory=list)  # (row, col, kind)
    # (row, col, style, the stored value: calamine's text keeps only 9 decimals)
    formatted: list[tuple[int, int, int, str]] = field(default_factory=list)
    booleans: list[tuple[int, int]] = field(default_factory=list)
    merges: list[tuple[int, int, int, int]] = field(default_factory=list)  # r1, c1, r2, c2
    formulas: list[tuple[int, int]] = field(default_factory=list)
    errors: int = 0  # cells holding an error value (#REF!, #N/A...): they read as empty


def read_workbook(file: Path, sheet: str | int | None) -> Grid:
    check_workbook_file(file)
    with zipfile.ZipFile(file) as archive:
        sheets = list_sheets(archive, file)
        styles = read_styles(archive)
        chosen, values, notes = choose_sheet(file, sheets, sheet)
        scan = scan_sheet(archive, chosen.path, styles)
    frame = grid_frame(values, scan, styles.numbers)
    uncalculated = empty_formula_cells(frame, scan)
    if uncalculated:
        notes.append(
            f"{uncalculated:,} formula cells hold no calculated value (the workbook was saved "
            "by a program that does not calculate formulas) and read as empty: open it in "
            "Excel, save it, and import it again"
        )
    if scan.errors:
        notes.append(
            f"{scan.errors:,} cells hold an Excel error (#REF!, #N/A...) and read as empty"
        )
    return Grid(
        frame=frame,
        sheet=chosen.name,
        notes=notes,
        numeric=scan_frame(scan.numeric, scan).select("row", "col"),
    )


def check_workbook_file(file: Path) -> None:
    """Refuse, with a way forward, anything that is not a readable .xlsx/.xlsm."""
    extension = file.suffix.lower()
    if file.stat().st_size == 0:
        raise ExtractError(f"{file}: the file is empty.")
    if extension in (".xls", ".ods"):
        raise ExtractError(
            f"{file}: {extension} workbooks do not say which cells hold numbers, which the "
            "tool needs to keep ids exact; open it in Excel or LibreOffice, save it as .xlsx "
            "(or CSV UTF-8) and import that."
        )
    with file.open("rb") as handle:
        head = handle.read(8)
    if head.startswith(_OLE2_MAGIC):
        raise ExtractError(ole2_message(file))
    if not head.startswith(_ZIP_MAGIC):
        raise ExtractError(
            f"{file}: named {extension} but not an Excel workbook (it looks like a text "
            "file); if it is CSV, rename it to .csv."
        )
    try:
        with zipfile.ZipFile(file) as archive:
            check_zip_sizes(archive, file)
            check_true_sizes(archive, file)
            if "xl/workbook.xml" not in archive.namelist():
                raise ExtractError(
                    f"{file}: a zip archive, but not an Excel workbook (it has no "
                    "xl/workbook.xml); save the spreadsheet from Excel as .xlsx."
                )
    except zipfile.BadZipFile:
        raise ExtractError(
            f"{file}: the workbook is damaged (not a readable zip); open it in Excel and "
            "save it again."
        ) from None


def ole2_message(file: Path) -> str:
    if "EncryptedPackage".encode("utf-16-le") in file.read_bytes():
        return (
            f"{file}: the workbook is password-protected (encrypted); open it in Excel, "
            "remove the password (File > Info > Protect Workbook), save, and import again."
        )
    return (
        f"{file}: an old Excel 97-2003 workbook named {file.suffix}; open it in Excel, "
        "save it as .xlsx, and import that."
    )


def check_zip_sizes(archive: zipfile.ZipFile, file: Path) -> None:
    """Refuse zip bombs from the central directory alone, before anything is inflated."""
    total = 0
    for member in archive.infolist():
        total += member.file_size
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > _RATIO_APPLIES_ABOVE and ratio > MAX_COMPRESSION_RATIO:
            raise ExtractError(too_big_message(file, member.filename))
    if total > MAX_UNCOMPRESSED_BYTES:
        raise ExtractError(too_big_message(file, "the workbook"))


_LOCAL_HEADER = struct.Struct("<4s22xHH")
_INFLATE_CHUNK = 1 << 20


def check_true_sizes(archive: zipfile.ZipFile, file: Path) -> None:
    """Refuse a member that inflates past the size the directory declares for it.

    The directory's sizes are only claims: calamine inflates a member until its deflate stream
    ends, so a sheet declared at 4 KB can still unpack to gigabytes in its memory. Inflating each
    member here stops one chunk past its declared size, so the check's cost is bounded by the
    sizes `check_zip_sizes` already accepted.
    """
    with file.open("rb") as raw:
        for member in archive.infolist():
            if member.compress_type == zipfile.ZIP_DEFLATED and inflates_past(raw, member):
                raise ExtractError(too_big_message(file, member.filename))


def inflates_past(raw: BinaryIO, member: zipfile.ZipInfo) -> bool:
    raw.seek(member.header_offset)
    header = raw.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size:
        return False  # a damaged archive: the readers say so in their own words
    _signature, name_length, extra_length = _LOCAL_HEADER.unpack(header)
    raw.seek(member.header_offset + _LOCAL_HEADER.size + name_length + extra_length)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    produced, unread = 0, member.compress_size
    while unread > 0 and not inflater.eof:
        pending = raw.read(min(_INFLATE_CHUNK, unread))
        if not pending:
            break
        unread -= len(pending)
        while pending and not inflater.eof:
            try:
                produced += len(inflater.decompress(pending, _INFLATE_CHUNK))
            except zlib.error:
                return False  # corrupt data: the readers report it
            if produced > member.file_size:
                return True
            pending = inflater.unconsumed_tail
    return False


def too_big_message(file: Path, what: str) -> str:
    return (
        f"{file}: refused: {what} would unpack to far more data than a spreadsheet holds "
        "(a damaged or hostile file); export the sheet as CSV UTF-8 and import that."
    )


def list_sheets(archive: zipfile.ZipFile, file: Path) -> list[SheetInfo]:
    try:
        workbook = parse_xml(archive.read("xl/workbook.xml"))
        rels = parse_xml(archive.read("xl/_rels/workbook.xml.rels"))
    except (KeyError, ElementTree.ParseError, DefusedXmlException) as error:
        raise ExtractError(
            f"{file}: the workbook's structure cannot be read ({error}); open it in Excel "
            "and save it again."
        ) from None
    targets = {
        rel.get("Id"): rel.get("Target", "")
        for rel in rels.iter(f"{{{_PACKAGE_REL_NS}}}Relationship")
    }
    sheets = []
    for element in workbook.iter(f"{{{_MAIN_NS}}}sheet"):
        target = targets.get(element.get(f"{{{_REL_NS}}}id"), "")
        path = target.lstrip("/") if target.startswith("/") else f"xl/{target}"
        hidden = element.get("state", "visible") != "visible"
        sheets.append(SheetInfo(element.get("name", ""), path, hidden))
    if not sheets:
        raise ExtractError(f"{file}: the workbook has no sheets.")
    return sheets


def parse_xml(data: bytes) -> ElementTree.Element:
    return defused_fromstring(data, forbid_dtd=True)


def choose_sheet(
    file: Path, sheets: list[SheetInfo], wanted: str | int | None
) -> tuple[SheetInfo, pl.DataFrame, list[str]]:
    reader = open_calamine(file)
    if wanted is not None:
        chosen = find_sheet(file, sheets, wanted)
        return chosen, load_values(reader, file, chosen), []
    for info in sheets:
        if info.hidden:
            continue
        values = load_values(reader, file, info)
        if values.height and any(
            values[name].null_count() < values.height for name in values.columns
        ):
            note = (
                [] if info is sheets[0] else [f'read sheet "{info.name}", the first holding data']
            )
            return info, values, note
    raise ExtractError(f"{file}: every visible sheet is empty.")


def find_sheet(file: Path, sheets: list[SheetInfo], wanted: str | int) -> SheetInfo:
    text = str(wanted).strip()
    for matches in (
        lambda info: info.name == text,
        lambda info: info.name.casefold().strip() == text.casefold(),
    ):
        found = [info for info in sheets if matches(info)]
        if found:
            return found[0]
    if text.isdigit() and 1 <= int(text) <= len(sheets):
        return sheets[int(text) - 1]
    listing = ", ".join(
        f'{index}: "{info.name}"{" (hidden)" if info.hidden else ""}'
        for index, info in enumerate(sheets, start=1)
    )
    raise ExtractError(
        f'{file}: no sheet "{text}"; the sheets are {listing}. Use --sheet with a name or a number.'
    )


def open_calamine(file: Path) -> fastexcel.ExcelReader:
    try:
        return fastexcel.read_excel(file)
    except fastexcel.FastExcelError as error:
        raise ExtractError(
            f"{file}: cannot be read as a workbook ({first_line(str(error))}); open it in "
            "Excel and save it again."
        ) from None


def load_values(reader: fastexcel.ExcelReader, file: Path, info: SheetInfo) -> pl.DataFrame:
    try:
        sheet = reader.load_sheet(info.name, header_row=None, dtypes="string")
        values = sheet.to_polars()
    except fastexcel.FastExcelError as error:
        raise ExtractError(
            f'{file}: sheet "{info.name}" cannot be read ({first_line(str(error))}).'
        ) from None
    return values.rename({name: f"c{index}" for index, name in enumerate(values.columns)})


@dataclass(frozen=True)
class Styles:
    """By cell style index: the date kind (date | time | datetime | datetime_seconds |
    time_seconds) of date styles, the number format of styles that show numbers otherwise
    than General does."""

    dates: dict[int, str] = field(default_factory=dict)
    numbers: dict[int, NumberFormat] = field(default_factory=dict)


def read_styles(archive: zipfile.ZipFile) -> Styles:
    try:
        styles = parse_xml(archive.read("xl/styles.xml"))
    except KeyError:
        return Styles()
    custom = {
        int(fmt.get("numFmtId", "0")): fmt.get("formatCode", "")
        for fmt in styles.iter(f"{{{_MAIN_NS}}}numFmt")
    }
    cell_xfs = styles.find(f"{{{_MAIN_NS}}}cellXfs")
    kinds: dict[int, str] = {}
    numbers: dict[int, NumberFormat] = {}
    compiled: dict[str, NumberFormat | None] = {}
    for index, xf in enumerate(cell_xfs if cell_xfs is not None else []):
        number_format = int(xf.get("numFmtId", "0"))
        code = custom.get(number_format) or BUILTIN_NUMBER_FORMATS.get(number_format)
        code = code or BUILTIN_FORMATS.get(number_format, "General")
        if is_date_format(code):
            kinds[index] = date_kind(code)
        elif code.lower() not in ("general", "@"):
            if code not in compiled:
                compiled[code] = compile_format(code)
            if compiled[code] is not None:
                numbers[index] = compiled[code]
    return Styles(kinds, numbers)


def date_kind(code: str) -> str:
    tokens = re.sub(r'"[^"]*"|\[[^\]]*\]|\\.', "", code).lower()
    has_date = "y" in tokens or "d" in tokens or re.search(r"(?<![h:])m(?!m?:)", tokens)
    has_time = "h" in tokens or "s" in tokens
    seconds = "_seconds" if "s" in tokens else ""
    if has_date and has_time:
        return f"datetime{seconds}"
    return f"time{seconds}" if has_time else "date"


_CELL = f"{_MAIN_NS}}}c"
_ROW = f"{_MAIN_NS}}}row"
_TEXT_TYPES = ("s", "str", "inlineStr")
_VALUE = f"{_MAIN_NS}}}v"
_INLINE = f"{_MAIN_NS}}}is"
_MERGE = f"{_MAIN_NS}}}mergeCell"
_FORMULA = f"{_MAIN_NS}}}f"


class _SheetScanner:
    """expat element-start callbacks over a sheet's XML, kept lean: this runs per cell."""

    def __init__(self, styles: Styles) -> None:
        self.date_styles = styles.dates
        self.number_styles = styles.numbers
        self.scan = SheetScan()
        self.row = 0
        self.row_has_value = False
        self.cells_in_row = 0
        self.cell: dict[str, str] | None = None
        # A number cell whose <v> has started: it holds a value only if text follows. Formulas
        # saved without a calculated value have an empty <v/>, which calamine reads as no cell
        # (an empty <v/> of a text cell it reads as an empty text, a cell).
        self.awaiting_text: dict[str, str] | None = None
        self.columns: dict[str, int] = {}

    def start(self, tag: str, attributes: dict[str, str]) -> None:
        if tag == _CELL:
            self.cells_in_row += 1
            self.cell = attributes
            self.awaiting_text = None
        elif tag == _VALUE:
            if self.cell is not None and self.cell.get("t") in _TEXT_TYPES:
                self.valued(self.cell)
            else:
                self.awaiting_text = self.cell
            self.cell = None
        elif tag == _INLINE:
            if self.cell is not None:
                self.valued(self.cell)
                self.cell = None
        elif tag == _ROW:
            number = attributes.get("r")
            self.row = int(number) if number else self.row + 1
            self.row_has_value = False
            self.cells_in_row = 0
        elif tag == _FORMULA:
            if self.cell is not None:
                self.scan.formulas.append((self.row, self.column(self.cell.get("r"))))
        elif tag == _MERGE:
            self.merge(attributes.get("ref", ""))

    def text(self, data: str) -> None:
        # Any text, spaces too, as calamine does ("<v> </v>" is a cell to it).
        if self.awaiting_text is not None:
            self.valued(self.awaiting_text, data)
            self.awaiting_text = None

    def valued(self, cell: dict[str, str], value: str = "") -> None:
        """Record a cell holding a value; `value` is a number cell's stored text."""
        cell_type = cell.get("t")
        if cell_type == "e":
            self.scan.errors += 1
        numeric = cell_type is None or cell_type == "n"
        if not (numeric or cell_type == "b" or not self.row_has_value):
            return
        col = self.column(cell.get("r"))
        scan = self.scan
        if not self.row_has_value:
            self.row_has_value = True
            if not scan.first_row:
                scan.first_row = self.row
            if not scan.first_col or col < scan.first_col:
                scan.first_col = col
        if numeric:
            style = cell.get("s")
            if style:
                index = int(style)
                kind = self.date_styles.get(index)
                if kind:
                    scan.dates.append((self.row, col, kind))
                    return
                if index in self.number_styles:
                    scan.formatted.append((self.row, col, index, value))
            scan.numeric.append((self.row, col))
        elif cell_type == "b":
            scan.booleans.append((self.row, col))

    def column(self, ref: str | None) -> int:
        if not ref:
            return self.cells_in_row
        letters = ref.rstrip("0123456789")
        col = self.columns.get(letters)
        if col is None:
            col = self.columns[letters] = cell_position(ref)[1]
        return col

    def merge(self, ref: str) -> None:
        first, _, last = ref.partition(":")
        if last:
            self.scan.merges.append((*cell_position(first), *cell_position(last)))


def cell_position(ref: str) -> tuple[int, int]:
    """'C5' -> (5, 3)."""
    letters = ref.rstrip("0123456789")
    col = 0
    for letter in letters.upper():
        col = col * 26 + ord(letter) - 64
    return int(ref[len(letters) :]), col


def scan_sheet(archive: zipfile.ZipFile, path: str, styles: Styles) -> SheetScan:
    scanner = _SheetScanner(styles)
    # defusedxml installs its guards (no DTD, no entities, no external references) on the
    # expat parser; the element-start callback is ours, and ElementTree's tree-building
    # callbacks are removed, since building a tree per cell is what makes XML reading slow.
    parser = DefusedXMLParser(forbid_dtd=True).parser
    for handler in (
        "EndElementHandler",
        "DefaultHandlerExpand",
        "DefaultHandler",
        "CommentHandler",
        "ProcessingInstructionHandler",
        "StartNamespaceDeclHandler",
        "EndNamespaceDeclHandler",
    ):
        setattr(parser, handler, None)
    parser.ordered_attributes = False
    parser.StartElementHandler = scanner.start
    parser.CharacterDataHandler = scanner.text
    parser.buffer_text = True  # a number's text in one call, even across a chunk boundary
    try:
        with archive.open(path) as stream:
            while chunk := stream.read(1 << 20):
                parser.Parse(chunk, False)
        parser.Parse(b"", True)
    except (KeyError, ExpatError, DefusedXmlException, zipfile.BadZipFile) as error:
        raise ExtractError(
            f"{archive.filename}: the sheet cannot be read ({error}); open it in Excel and "
            "save it again."
        ) from None
    return scanner.scan


def scan_frame(
    cells: list[tuple], scan: SheetScan, extra: dict[str, type[pl.DataType]] | None = None
) -> pl.DataFrame:
    """Scan positions as grid coordinates: `row` as Excel counts, `col` 0-based in the grid."""
    schema = {"row": pl.Int64, "col": pl.Int64} | (extra or {})
    frame = pl.DataFrame(cells, schema=schema, orient="row")
    return frame.with_columns(pl.col("col") - scan.first_col)


def empty_formula_cells(frame: pl.DataFrame, scan: SheetScan) -> int:
    """Formula cells that read as empty: Excel stores each formula's value; other programs
    may not, and then the cell holds nothing to import."""
    if not scan.formulas:
        return 0
    cells = scan_frame(scan.formulas, scan)
    count = 0
    for (col,), rows in cells.group_by("col"):
        name = f"c{col}"
        if name in frame.columns:
            at = frame.filter(pl.col("row").is_in(rows["row"].implode()))
            count += at[name].null_count()
    return count


def grid_frame(
    values: pl.DataFrame, scan: SheetScan, formats: dict[int, NumberFormat]
) -> pl.DataFrame:
    first_row = scan.first_row or 1
    frame = values.select(
        pl.int_range(first_row, first_row + values.height, dtype=pl.Int64).alias("row"),
        pl.all(),
    )
    frame = render_dates(frame, scan_frame(scan.dates, scan, {"kind": pl.String}))
    formatted = scan_frame(scan.formatted, scan, {"style": pl.Int64, "stored": pl.String})
    frame = render_numbers(frame, formatted, formats)
    frame = render_booleans(frame, scan_frame(scan.booleans, scan))
    return fill_merges(frame, scan)


_DATE_RENDERING = {
    "date": (0, 10),
    "datetime": (0, 16),
    "datetime_seconds": (0, 19),
    "time": (11, 5),
    "time_seconds": (11, 8),
}


def render_dates(frame: pl.DataFrame, dates: pl.DataFrame) -> pl.DataFrame:
    """Dates as ISO text the way a person reads them: 2024-01-05, 10:30, 2024-01-05 10:30."""
    for col in dates["col"].unique().to_list():
        name = f"c{col}"
        if name not in frame.columns:
            continue
        kinds = dates.filter(pl.col("col") == col).select("row", pl.col("kind").alias("_kind"))
        rendered = pl.col(name)
        for kind, (offset, length) in _DATE_RENDERING.items():
            rendered = (
                pl.when(pl.col("_kind") == kind)
                .then(pl.col(name).str.slice(offset, length))
                .otherwise(rendered)
            )
        frame = (
            frame.join(kinds, on="row", how="left", maintain_order="left")
            .with_columns(rendered.alias(name))
            .drop("_kind")
        )
    return frame


def render_numbers(
    frame: pl.DataFrame, formatted: pl.DataFrame, formats: dict[int, NumberFormat]
) -> pl.DataFrame:
    """Numbers as their number format shows them (02134, 3.50, 25%); rendered once per
    distinct value and style, and left as read wherever the format cannot render them."""
    pairs = formatted.select("stored", "style").unique()
    shown = [render(formats[style], stored) for stored, style in pairs.iter_rows()]
    cells = formatted.join(
        pairs.with_columns(pl.Series("_shown", shown, dtype=pl.String)), on=["stored", "style"]
    )
    for col in cells["col"].unique().to_list():
        name = f"c{col}"
        if name not in frame.columns:
            continue
        column = cells.filter(pl.col("col") == col).select("row", "_shown")
        frame = (
            frame.join(column, on="row", how="left", maintain_order="left")
            .with_columns(pl.coalesce("_shown", name).alias(name))
            .drop("_shown")
        )
    return frame


def render_booleans(frame: pl.DataFrame, booleans: pl.DataFrame) -> pl.DataFrame:
    """TRUE/FALSE, as Excel shows them."""
    for col in booleans["col"].unique().to_list():
        name = f"c{col}"
        if name not in frame.columns:
            continue
        rows = booleans.filter(pl.col("col") == col)["row"]
        frame = frame.with_columns(
            pl.when(pl.col("row").is_in(rows.implode()))
            .then(pl.col(name).str.to_uppercase())
            .otherwise(pl.col(name))
            .alias(name)
        )
    return frame


def fill_merges(frame: pl.DataFrame, scan: SheetScan) -> pl.DataFrame:
    """A value merged down over several rows belongs to each of them, as a person reads it.

    Only the merge's first column is filled: a merge across columns is one value, not a
    copy per column (a section title spread over a row must not become both contacts).
    """
    tall = [merge for merge in scan.merges if merge[2] > merge[0]]
    if not tall:
        return frame
    fills = (
        pl.DataFrame(tall, schema=["r1", "c1", "r2", "c2"], orient="row")
        .select(
            (pl.col("c1") - scan.first_col).alias("col"),
            pl.col("r1").alias("anchor"),
            pl.int_ranges(pl.col("r1") + 1, pl.col("r2") + 1).alias("row"),
        )
        .explode("row")
    )
    for col in fills["col"].unique().to_list():
        name = f"c{col}"
        if name not in frame.columns:
            continue
        anchors = fills.filter(pl.col("col") == col).select("row", "anchor")
        anchor_values = frame.select(pl.col("row").alias("anchor"), pl.col(name).alias("_fill"))
        frame = (
            frame.join(anchors, on="row", how="left", maintain_order="left")
            .join(anchor_values, on="anchor", how="left", maintain_order="left")
            .with_columns(pl.coalesce(name, "_fill").alias(name))
            .drop("anchor", "_fill")
        )
    return frame


# ---------------------------------------------------------------------------------------
# From a grid to a table: header, names, cleaning, blank rows


def table_from_grid(grid: Grid, header_row: int, path: str) -> Table:
    where = f"{path}, sheet {grid.sheet}" if grid.sheet else path
    cells = [name for name in grid.frame.columns if name != "row"]
    fold = columns_needing_fold(grid.frame, cells) if grid.may_fold else set()
    frame = grid.frame.with_columns(clean_text(name, name in fold) for name in cells)
    # A pass of its own: chained onto the strip, it made cleaning a fifth slower.
    frame = frame.with_columns(empty_as_null(name) for name in cells)
    header = header_values(frame, cells, header_row, where)
    # Grid rows are consecutive, so slicing (free) finds the data below the header.
    data = frame.slice(header_row - frame["row"][0] + 1)
    notes = list(grid.notes)
    given = column_names(header, data, cells, path, notes)
    names = rename_meta_clashes(given, notes)
    data = data.select("row", *(pl.col(cell).alias(name) for cell, name in names.items()))
    blank = pl.all_horizontal(pl.exclude("row").is_null()) if names else pl.lit(True)
    blank_rows = data.select(blank.sum()).item() if names else data.height
    if blank_rows:
        data = data.filter(~blank)
    if data.height == 0:
        raise ExtractError(
            f"{path}: the header (row {header_row}) is there but there are no data rows "
            "below it; check the file, or --sheet / --header-row."
        )
    numeric = numeric_cells_of(grid.numeric, data, cells, names)
    renamed = {given[cell]: name for cell, name in names.items() if name != given[cell]}
    return Table(data, list(names.values()), grid.sheet, blank_rows, notes, numeric, renamed)


def columns_needing_fold(frame: pl.DataFrame, cells: list[str]) -> set[str]:
    """Columns holding a character to fold; found cheaply, as folding costs a full copy.

    Only cells with a non-ASCII character can hold one, so the pattern runs on those alone.
    """
    if not cells:
        return set()
    pattern = "[" + "".join(_SPACE_FOLDS) + "]"

    def holds_fold(name: str) -> pl.Expr:
        text = pl.col(name)
        non_ascii = text.str.len_bytes() != text.str.len_chars()
        return text.filter(non_ascii).str.contains(pattern).any()

    found = frame.select(holds_fold(name) for name in cells).row(0)
    return {name for name, flag in zip(cells, found, strict=True) if flag}


def clean_text(name: str, fold: bool) -> pl.Expr:
    text = pl.col(name).str.replace_many(_SPACE_FOLDS) if fold else pl.col(name)
    return text.str.strip_chars().alias(name)


def empty_as_null(name: str) -> pl.Expr:
    text = pl.col(name)
    return pl.when(text.str.len_bytes() > 0).then(text).alias(name)


def header_values(frame: pl.DataFrame, cells: list[str], header_row: int, path: str) -> list:
    if frame.height == 0:
        raise ExtractError(f"{path}: empty, no cell holds a value; check the file, or --sheet.")
    index = header_row - frame["row"][0]
    inside = 0 <= index < frame.height
    values = list(frame.row(index)[1:]) if inside else [None] * len(cells)
    if any(value is not None for value in values):
        return values
    filled = frame.filter(~pl.all_horizontal(pl.exclude("row").is_null()))
    if filled.height == 0:
        raise ExtractError(f"{path}: empty, no cell holds a value; check the file, or --sheet.")
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
    return names


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
            notes.append(
                f'the column "{name}" is called "{new_name}" in the reports, which have a '
                f'"{name}" of their own'
            )
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
    check_renames_stay_apart(tables, sources)
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
        renamed={given: name for table in tables for given, name in table.renamed.items()},
    )


def check_renames_stay_apart(tables: list[Table], sources: list[str]) -> None:
    """Refuse a renamed column landing on another file's column of that name: the two would
    be read as one column."""
    own = {
        name: source
        for table, source in zip(tables, sources, strict=True)
        for name in table.columns
        if name not in table.renamed.values()
    }
    for table, source in zip(tables, sources, strict=True):
        for given, name in table.renamed.items():
            if name in own:
                raise ExtractError(
                    f'{source}: the column "{given}" would be called "{name}" (the reports have '
                    f'a "{given}" of their own), but {own[name]} has a column "{name}"; rename '
                    "one of them."
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
