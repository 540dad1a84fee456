"""extract: real files written by the tests, in each encoding, delimiter and workbook shape."""

from __future__ import annotations

import datetime
import re
import zipfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import Workbook
from openpyxl.styles.numbers import BUILTIN_FORMATS

from etl.extract import ExtractError, extract

ID_31 = "0123456789012345678901234567890"
ID_31_B = "9876543210987654321098765432109"


def write(folder: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = folder / name
    path.write_bytes(text.encode(encoding))
    return path


def workbook(folder: Path, name: str, rows: list[list], **sheets: list[list]) -> Path:
    book = Workbook()
    sheet = book.active
    sheet.title = "People"
    for row in rows:
        sheet.append(row)
    for title, extra in sheets.items():
        other = book.create_sheet(title)
        for row in extra:
            other.append(row)
    path = folder / name
    book.save(path)
    return path


def values(extracted, column: str) -> list:
    return extracted.rows[column].to_list()


# --- text files -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "delimiter"),
    [
        ("utf-8", ","),
        ("utf-8-sig", ";"),
        ("utf-16", "\t"),
        ("cp1252", "|"),
        ("utf-8", "\t"),
    ],
)
def test_text_files_in_each_encoding_and_delimiter(tmp_path, encoding, delimiter):
    lines = [["Person", "Related To", "Notes"], [ID_31, "José Müller", "café, “quoted”"]]
    text = "\r\n".join(delimiter.join(f'"{cell}"' for cell in line) for line in lines) + "\r\n"
    path = write(tmp_path, "people.csv", text, encoding)
    extracted = extract([path])
    assert extracted.columns == ["Person", "Related To", "Notes"]
    assert values(extracted, "Person") == [ID_31]
    assert values(extracted, "Related To") == ["José Müller"]
    assert values(extracted, "Notes") == ["café, “quoted”"]
    assert extracted.numeric_cells.height == 0


def test_legacy_encoding_is_named_in_notes(tmp_path):
    path = write(tmp_path, "old.csv", "Person,Related To\nRené,Zoë\n", "cp1252")
    extracted = extract([path])
    assert values(extracted, "Person") == ["René"]
    assert any("Windows-1252" in note for note in extracted.notes)


def test_latin1_when_not_cp1252(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(b"Person,Related To\nA\x81b,Zo\xeb\n")  # 0x81 is undefined in cp1252
    extracted = extract([path])
    assert any("Latin-1" in note for note in extracted.notes)
    assert values(extracted, "Related To") == ["Zoë"]


def test_utf16_excel_unicode_text(tmp_path):
    path = write(tmp_path, "unicode.txt", "Person\tRelated To\nAnn\tBob\n", "utf-16")
    extracted = extract([path])
    assert values(extracted, "Related To") == ["Bob"]
    assert any("UTF-16" in note for note in extracted.notes)


def test_strings_only_leading_zeros_ids_and_no_inference(tmp_path):
    text = f"Person,Zip,Amount,Flag,Date\n{ID_31},01234,1e5,true,2024-01-05\n"
    extracted = extract([write(tmp_path, "a.csv", text)])
    assert extracted.rows.row(0)[4:] == (ID_31, "01234", "1e5", "true", "2024-01-05")
    assert all(extracted.rows[name].dtype == pl.String for name in extracted.columns)


def test_frame_shape_and_types(tmp_path):
    extracted = extract([write(tmp_path, "a.csv", "A,B\n1,2\n3,4\n")])
    assert extracted.rows.columns == ["row_id", "source", "sheet", "row", "A", "B"]
    assert extracted.rows.schema["row_id"] == pl.UInt32
    assert extracted.rows.schema["row"] == pl.Int64
    assert values(extracted, "sheet") == ["", ""]
    assert extracted.numeric_cells.schema == pl.Schema({"row_id": pl.UInt32, "column": pl.String})


def test_trim_fold_empty_and_blank_rows(tmp_path):
    text = "Person,Related To\n  Ann\u00a0Lee  , Bob \n\n , \n,\nCarl,\u200bDee\n"
    extracted = extract([write(tmp_path, "a.csv", text)])
    assert values(extracted, "Person") == ["Ann Lee", "Carl"]
    assert values(extracted, "Related To") == ["Bob", "Dee"]
    assert values(extracted, "row") == [2, 6]
    assert extracted.blank_rows == 3


def test_old_mac_csv_with_a_line_break_inside_a_cell(tmp_path):
    text = 'Person,Related To\r"Ann\nLee",Bob\rCy,Di\r'  # Mac Excel, Alt-Enter in a cell
    extracted = extract([write(tmp_path, "a.csv", text)])
    assert values(extracted, "Person") == ["Ann\nLee", "Cy"]
    assert values(extracted, "row") == [2, 3]


@pytest.mark.parametrize("ragged", ["", ","], ids=["even", "ragged"])
def test_windows_1252_bytes_past_the_sniffed_sample_are_read_and_named(tmp_path, ragged):
    lines = ["Person,Related To", f"Ann,Bob{ragged}"] + [f"P{n},Q{n}" for n in range(9000)]
    path = tmp_path / "a.csv"
    path.write_bytes(("\n".join(lines) + "\nRené,Zoë\n").encode("cp1252"))
    extracted = extract([path])
    assert values(extracted, "Person")[-1] == "René"
    assert values(extracted, "row")[-1] == 9003
    assert any("Windows-1252" in note for note in extracted.notes)


def test_a_quote_inside_an_unquoted_cell_reads_as_excel_shows_it(tmp_path):
    text = 'Title\nPerson,Notes\nJohn,5\'10"\n\nAnn,"O""Brien, 12"" pipe"\nO"Brien,x\n'
    extracted = extract([write(tmp_path, "a.csv", text)], header_row=2)
    assert values(extracted, "Notes") == ["5'10\"", 'O"Brien, 12" pipe', "x"]
    assert values(extracted, "Person") == ["John", "Ann", 'O"Brien']
    assert values(extracted, "row") == [3, 5, 6]
    assert extracted.blank_rows == 1


def test_quotes_inside_unquoted_cells_of_an_old_mac_csv(tmp_path):
    text = "Person,Notes\rJohn,5'10\"\rAnn,6'1\"\r"  # a line end between two stray quotes
    extracted = extract([write(tmp_path, "a.csv", text)])
    assert values(extracted, "Notes") == ["5'10\"", "6'1\""]
    assert values(extracted, "row") == [2, 3]


@pytest.mark.parametrize(
    "text",
    ['Person,Notes\nAnn,x\n"hi" he said,y\n', 'Person,Notes\nAnn,x\n"Bob,open\nCy,z\n'],
    ids=["text after a closing quote", "a quote never closed"],
)
def test_quoting_that_would_move_cells_is_refused_naming_the_line(tmp_path, text):
    with pytest.raises(ExtractError, match=r"line 3 cannot be read as CSV.*quoted as a whole"):
        extract([write(tmp_path, "a.csv", text)])


def test_quoted_newlines_keep_record_numbers(tmp_path):
    text = 'Person,Notes\nAnn,"line one\nline two"\nBob,plain\n'
    extracted = extract([write(tmp_path, "a.csv", text)])
    assert values(extracted, "Notes") == ["line one\nline two", "plain"]
    assert values(extracted, "row") == [2, 3]


def test_old_mac_csv_with_cr_line_endings(tmp_path):
    text = "Person;Related To\rAnn;Bob\rCarl;Dee;;\r"  # Excel "CSV (Macintosh)"
    extracted = extract([write(tmp_path, "a.csv", text)])
    assert values(extracted, "Related To") == ["Bob", "Dee"]
    assert values(extracted, "row") == [2, 3]


def test_header_row(tmp_path):
    text = "Exported from OldCRM\n\nPerson,Related To\nAnn,Bob\n"
    extracted = extract([write(tmp_path, "a.csv", text)], header_row=3)
    assert values(extracted, "row") == [4]
    assert values(extracted, "Person") == ["Ann"]


def test_ragged_rows_missing_cells_are_null(tmp_path):
    extracted = extract([write(tmp_path, "a.csv", "A,B,C\n1\n2,3\n")])
    assert values(extracted, "C") == [None, None]
    assert values(extracted, "B") == [None, "3"]


def test_extra_cells_with_data_name_the_row(tmp_path):
    path = write(tmp_path, "a.csv", "Person,Related To\nAnn,Bob\nSmith, John,Carl\n")
    with pytest.raises(ExtractError, match=r"row 3 has 3 cells but the header has 2.*quotes"):
        extract([path])


def test_extra_empty_cells_are_ignored(tmp_path):
    extracted = extract([write(tmp_path, "a.csv", "Person,Related To\nAnn,Bob,,\n")])
    assert values(extracted, "Related To") == ["Bob"]
    assert any("ignored" in note for note in extracted.notes)


def test_several_sources_union_of_columns(tmp_path):
    first = write(tmp_path, "a.csv", "Person,Related To\nAnn,Bob\n")
    second = write(tmp_path, "b.csv", "Person;Email\nCarl;c@x.org\n\nDee;d@x.org\n")
    extracted = extract([first, second])
    assert extracted.columns == ["Person", "Related To", "Email"]
    assert values(extracted, "row_id") == [0, 1, 2]
    assert values(extracted, "source") == [str(first), str(second), str(second)]
    assert values(extracted, "row") == [2, 2, 4]
    assert values(extracted, "Email") == [None, "c@x.org", "d@x.org"]
    assert extracted.blank_rows == 1


def test_meta_column_names_are_renamed(tmp_path):
    extracted = extract([write(tmp_path, "failed.csv", "source,row,Person\nold.csv,7,Ann\n")])
    assert extracted.columns == ["source (input)", "row (input)", "Person"]
    assert values(extracted, "row (input)") == ["7"]
    assert values(extracted, "row") == [2]
    assert any('"row (input)"' in note for note in extracted.notes)
    assert extracted.renamed == {"source": "source (input)", "row": "row (input)"}


def test_a_renamed_column_never_merges_with_another_files_column_of_that_name(tmp_path):
    one = write(tmp_path, "a.csv", "source (input),Person\ny,Ann\n")
    two = write(tmp_path, "b.csv", "source,Person\nz,Bob\n")
    for order in ([one, two], [two, one]):
        with pytest.raises(ExtractError, match=r'b\.csv: the column "source" would be called'):
            extract(order)


def test_unnamed_columns(tmp_path):
    extracted = extract([write(tmp_path, "a.csv", ",Person,\n0,Ann,\n1,Bob,\n")])
    assert extracted.columns == ["Column A", "Person"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", "", "empty"),
        ("blank.csv", "\n\n,,\n", "empty"),
        ("header.csv", "Person,Related To\n", "no data rows"),
        ("dupes.csv", "Email,Name,Email\na,b,c\n", 'has "Email" twice \\(columns A and C\\)'),
        ("people.json", "{}", "unsupported file type .json"),
        ("binary.csv", bytes(range(256)).decode("latin-1") * 4, "binary data"),
    ],
)
def test_bad_text_input(tmp_path, name, content, message):
    path = write(tmp_path, name, content, "latin-1")
    with pytest.raises(ExtractError, match=message):
        extract([path])


def test_missing_file(tmp_path):
    with pytest.raises(ExtractError, match="no such file"):
        extract([tmp_path / "nope.csv"])


def test_header_row_beyond_the_data(tmp_path):
    path = write(tmp_path, "a.csv", "\n\nPerson\nAnn\n")
    with pytest.raises(ExtractError, match="use --header-row 3"):
        extract([path])


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cells=st.lists(
        st.lists(
            st.text(
                alphabet=st.characters(
                    blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp", "Cf"),
                ),
                min_size=1,
                max_size=12,
            ),
            min_size=2,
            max_size=2,
        ),
        min_size=1,
        max_size=20,
    ),
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
)
def test_any_text_round_trips(tmp_path, cells, delimiter):
    def quoted(cell: str) -> str:
        return '"' + cell.replace('"', '""') + '"'

    lines = [delimiter.join(["Person", "Related To"])]
    lines += [delimiter.join(quoted(cell) for cell in row) for row in cells]
    path = write(tmp_path, "fuzz.csv", "\n".join(lines) + "\n")
    extracted = extract([path])
    assert extracted.rows.select("Person", "Related To").rows() == [tuple(row) for row in cells]
    assert values(extracted, "row") == list(range(2, len(cells) + 2))


# Rust's whitespace (what polars strips), and the folds extract promises.
RUST_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
RUST_WHITESPACE += "\u2028\u2029\u202f\u205f\u3000"
FOLDS = {"\u00a0": " ", "\u2007": " ", "\u202f": " ", "\u200b": "", "\ufeff": ""}


def cleaned(cell: str) -> str | None:
    for char, replacement in FOLDS.items():
        cell = cell.replace(char, replacement)
    return cell.strip(RUST_WHITESPACE) or None


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cells=st.lists(
        st.lists(
            st.text(alphabet="ab \t\u00a0\u2007\u202f\u200b\ufeff\u3000’€é", max_size=6),
            min_size=2,
            max_size=2,
        ),
        min_size=1,
        max_size=12,
    ),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]),
)
def test_every_cell_trimmed_and_folded_in_any_encoding(tmp_path, cells, encoding):
    lines = ["Person,Related To"]
    lines += [",".join('"' + cell + '"' for cell in row) for row in cells]
    path = write(tmp_path, "spaces.csv", "\n".join(lines) + "\n", encoding)
    expected = [tuple(cleaned(cell) for cell in row) for row in cells]
    data = [row for row in expected if any(row)]
    if not data:
        with pytest.raises(ExtractError, match="no data rows"):
            extract([path])
        return
    extracted = extract([path])
    assert extracted.rows.select("Person", "Related To").rows() == data
    assert extracted.blank_rows == len(expected) - len(data)


@pytest.mark.parametrize("common", ["O’Brien", "5 €", "© ACME"])
def test_a_fold_far_behind_many_other_multibyte_characters_is_still_folded(tmp_path, common):
    rows = [f"{common} {number},Bob" for number in range(600)] + ["Ann\u00a0Lee,Dee\u200b"]
    extracted = extract([write(tmp_path, "a.csv", "Person,Related To\n" + "\n".join(rows))])
    assert values(extracted, "Person")[-1] == "Ann Lee"
    assert values(extracted, "Related To")[-1] == "Dee"


def test_a_fold_across_the_boundary_of_a_scanned_chunk_is_folded(tmp_path):
    before = "Person,Related To\n" + "".join(f"P{n},Q{n}\n" for n in range(10_000))
    pad = 256 * 1024 - 1 - len(before) - len(",y\nAnn")  # NBSP's first byte ends the chunk
    text = before + "x" * pad + ",y\nAnn\u00a0Lee,Bob\n"
    assert text.encode().index("\u00a0".encode()) == 256 * 1024 - 1
    extracted = extract([write(tmp_path, "a.csv", text)])
    assert values(extracted, "Person")[-1] == "Ann Lee"


def test_a_non_breaking_space_in_a_windows_1252_file_is_folded(tmp_path):
    path = write(tmp_path, "a.csv", "Person,Related To\nAnn\u00a0Lee,Bob\xa0\n", "cp1252")
    extracted = extract([path])
    assert values(extracted, "Person") == ["Ann Lee"]
    assert values(extracted, "Related To") == ["Bob"]


# --- workbooks ------------------------------------------------------------------------


def test_xlsx_text_ids_exact_and_numeric_ids_flagged(tmp_path):
    path = workbook(
        tmp_path,
        "ids.xlsx",
        [
            ["Person", "Related To", "Notes"],
            [ID_31, ID_31_B, 42],
            [int(ID_31_B), "Ann", 4.5],
        ],
    )
    extracted = extract([path])
    assert values(extracted, "Person")[0] == ID_31
    assert values(extracted, "Related To")[0] == ID_31_B
    assert values(extracted, "Notes") == ["42", "4.5"]
    assert extracted.numeric_cells.sort("row_id", "column").rows() == [
        (0, "Notes"),
        (1, "Notes"),
        (1, "Person"),
    ]


def test_xlsx_dates_booleans_and_numbers_read_as_a_person_sees_them(tmp_path):
    path = workbook(
        tmp_path,
        "kinds.xlsx",
        [
            ["Person", "Since", "When", "Time", "Active"],
            [
                "Ann",
                datetime.date(2024, 1, 5),
                datetime.datetime(2024, 1, 5, 10, 3, 4),
                datetime.time(9, 30),
                True,
            ],
        ],
    )
    row = extract([path]).rows.row(0)[4:]
    assert row == ("Ann", "2024-01-05", "2024-01-05 10:03:04", "09:30:00", "TRUE")


def test_xlsx_first_sheet_with_data_hidden_sheets_skipped(tmp_path):
    book = Workbook()
    book.active.title = "Cover"
    hidden = book.create_sheet("Old")
    hidden.append(["Person"])
    hidden.append(["Zed"])
    hidden.sheet_state = "hidden"
    data = book.create_sheet("Data")
    data.append(["Person", "Related To"])
    data.append(["Ann", "Bob"])
    path = tmp_path / "book.xlsx"
    book.save(path)
    extracted = extract([path])
    assert values(extracted, "sheet") == ["Data"]
    assert any('"Data"' in note for note in extracted.notes)
    assert values(extract([path], sheet="Old"), "Person") == ["Zed"]
    assert values(extract([path], sheet=3), "Person") == ["Ann"]
    assert values(extract([path], sheet="3"), "Person") == ["Ann"]


def test_xlsx_unknown_sheet_lists_the_sheets(tmp_path):
    path = workbook(tmp_path, "b.xlsx", [["Person"], ["Ann"]], Extra=[["X"], ["1"]])
    with pytest.raises(
        ExtractError, match=r'no sheet "Nope"; the sheets are 1: "People", 2: "Extra"'
    ):
        extract([path], sheet="Nope")


def test_xlsx_offset_data_blank_rows_and_trailing_formatting(tmp_path):
    book = Workbook()
    sheet = book.active
    sheet["B3"], sheet["C3"] = "Person", "Related To"
    sheet["B4"], sheet["C4"] = "Ann", "Bob"
    sheet["B6"], sheet["C6"] = "Carl", "Dee"
    sheet["B50"].number_format = "0.00"  # formatted, never filled
    path = tmp_path / "offset.xlsx"
    book.save(path)
    extracted = extract([path], header_row=3)
    assert values(extracted, "row") == [4, 6]
    assert values(extracted, "Person") == ["Ann", "Carl"]
    assert extracted.blank_rows == 1
    with pytest.raises(ExtractError, match="use --header-row 3"):
        extract([path])


def test_xlsx_merged_cells_fill_down_not_across(tmp_path):
    book = Workbook()
    sheet = book.active
    for row in (["Person", "Related To", "Notes"], ["Ann", "Bob", "x"], [None, "Carl", "y"]):
        sheet.append(row)
    sheet.append(["Section", None, None])
    sheet.merge_cells("A2:A3")
    sheet.merge_cells("A4:C4")
    path = tmp_path / "merged.xlsx"
    book.save(path)
    extracted = extract([path])
    assert values(extracted, "Person") == ["Ann", "Ann", "Section"]
    assert values(extracted, "Related To") == ["Bob", "Carl", None]


def test_xlsx_and_csv_together(tmp_path):
    csv_path = write(tmp_path, "a.csv", "Person,Related To\nAnn,Bob\n")
    xlsx_path = workbook(tmp_path, "b.xlsx", [["Person", "Email"], [5, "e@x.org"]])
    extracted = extract([csv_path, xlsx_path])
    assert values(extracted, "sheet") == ["", "People"]
    assert extracted.numeric_cells.rows() == [(1, "Person")]


def test_text_file_named_xlsx(tmp_path):
    path = write(tmp_path, "fake.xlsx", "Person,Related To\nAnn,Bob\n")
    with pytest.raises(ExtractError, match=r"not an Excel workbook.*rename it to \.csv"):
        extract([path])


def test_zip_that_is_not_a_workbook(tmp_path):
    path = tmp_path / "archive.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ExtractError, match="zip archive, but not an Excel workbook"):
        extract([path])


def test_encrypted_workbook(tmp_path):
    path = tmp_path / "secret.xlsx"
    ole2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504
    path.write_bytes(ole2 + "EncryptedPackage".encode("utf-16-le") + b"\x00" * 512)
    with pytest.raises(ExtractError, match=r"password-protected.*remove the password"):
        extract([path])


def test_zip_bomb_refused_from_the_directory(tmp_path):
    path = tmp_path / "bomb.xlsx"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
        with archive.open("xl/worksheets/sheet1.xml", "w") as member:
            block = b"\x00" * (1 << 20)
            for _ in range(300):
                member.write(block)
    with pytest.raises(ExtractError, match="refused"):
        extract([path])


def test_xls_and_ods_say_how_to_convert(tmp_path):
    path = write(tmp_path, "old.xls", "whatever")
    with pytest.raises(ExtractError, match=r"save it as \.xlsx"):
        extract([path])


def test_xlsx_duplicate_and_header_only(tmp_path):
    dupes = workbook(tmp_path, "d.xlsx", [["Person", "Person"], ["a", "b"]])
    with pytest.raises(ExtractError, match='"Person" twice'):
        extract([dupes])
    header_only = workbook(tmp_path, "h.xlsx", [["Person", "Related To"]])
    with pytest.raises(ExtractError, match="no data rows"):
        extract([header_only])


def rewrite_cells(path: Path, cells: dict[str, str]) -> None:
    """Replace cells of the first sheet by raw XML ("" removes one): what openpyxl cannot
    write, such as a formula's cached value."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    sheet = members["xl/worksheets/sheet1.xml"].decode()
    for ref, xml in cells.items():
        sheet = re.sub(rf'<c r="{ref}"[^>]*?(?:/>|>.*?</c>)', xml, sheet)
    members["xl/worksheets/sheet1.xml"] = sheet.encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_formulas_read_their_cached_values(tmp_path):
    path = workbook(tmp_path, "f.xlsx", [["Person", "Related To"], ["Ann", "Bob"]])
    rewrite_cells(path, {"B2": '<c r="B2" t="str"><f>UPPER("bob")</f><v>BOB</v></c>'})
    assert values(extract([path]), "Related To") == ["BOB"]


@pytest.mark.parametrize(
    ("a1", "a2"),
    [
        ('<c r="A1"><f>"Idx"</f><v/></c>', '<c r="A2"><f>ROW()</f><v/></c>'),  # openpyxl's
        ('<c r="A1"><f>"Idx"</f><v></v></c>', '<c r="A2"><f>ROW()</f><v></v></c>'),
        ('<c r="A1" t="str"><f>""</f><v></v></c>', '<c r="A2" t="str"><f>""</f><v/></c>'),
        ('<c r="A1" t="b"><v/></c>', '<c r="A2" t="e"><f>1/0</f><v/></c>'),
        ('<c r="A1"><v> </v></c>', '<c r="A2"><v>\n</v></c>'),
    ],
    ids=["uncalculated", "uncalculated-pair", "empty-text", "empty-bool-error", "spaces"],
)
def test_empty_formula_cells_in_the_first_column_shift_nothing(tmp_path, a1, a2):
    """The scan of cell types must line up with calamine's values: a numeric id one column
    off would resolve, digits lost, to a wrong contact."""
    rows = [["Idx", "Person", "Other Id"], [1, "Ann", int(ID_31)], [None, "Bob", ID_31_B]]
    path = workbook(tmp_path, "a.xlsx", rows)
    rewrite_cells(path, {"A1": a1, "A2": a2})
    extracted = extract([path])
    assert values(extracted, "Person") == ["Ann", "Bob"]
    assert values(extracted, "row") == [2, 3]
    assert extracted.numeric_cells.rows() == [(0, "Other Id")]


def test_an_uncalculated_formula_above_the_header_shifts_no_row(tmp_path):
    rows = [["title"], ["Person", "Other Id"], ["Ann", int(ID_31)], ["Bob", ID_31_B]]
    path = workbook(tmp_path, "a.xlsx", rows)
    rewrite_cells(path, {"A1": '<c r="A1"><f>TODAY()</f><v/></c>'})
    extracted = extract([path], header_row=2)
    assert values(extracted, "Person") == ["Ann", "Bob"]
    assert values(extracted, "row") == [3, 4]
    assert extracted.numeric_cells.rows() == [(0, "Other Id")]


def test_an_empty_sheet_asked_for_by_name_is_named_in_the_error(tmp_path):
    path = workbook(tmp_path, "a.xlsx", [["Person", "Related To"], ["Ann", "Bob"]], Empty=[])
    with pytest.raises(ExtractError, match=r"a\.xlsx, sheet Empty: empty, no cell holds a value"):
        extract([path], sheet="Empty")


def test_formulas_never_calculated_and_error_cells_are_named_in_the_notes(tmp_path):
    book = Workbook()
    sheet = book.active
    sheet.append(["Person", "Related To", "Notes"])
    sheet.append(["Ann", "Bob", "=A2&B2"])  # openpyxl stores no calculated value
    sheet.append(["Carl", "Dee", "#REF!"])
    sheet["C3"].data_type = "e"
    sheet.append(["Eve", "Fay", "fine"])
    path = tmp_path / "a.xlsx"
    book.save(path)
    extracted = extract([path])
    assert values(extracted, "Notes") == [None, None, "fine"]
    assert any("1 formula cells hold no calculated value" in note for note in extracted.notes)
    assert any("1 cells hold an Excel error" in note for note in extracted.notes)


def formatted_workbook(folder: Path, columns: dict[str, list[tuple[object, str]]]) -> Path:
    """One column per entry, each cell a (value, number format) pair; Person fills the rows."""
    book = Workbook()
    sheet = book.active
    height = max(len(cells) for cells in columns.values())
    sheet.append(["Person", *columns])
    for index in range(height):
        sheet.append([f"P{index}"])
    for col, cells in enumerate(columns.values(), start=2):
        for row, (value, code) in enumerate(cells, start=2):
            cell = sheet.cell(row, col, value)
            cell.number_format = code
    path = folder / "formatted.xlsx"
    book.save(path)
    return path


@pytest.mark.parametrize(
    ("code", "value", "shown"),
    [
        ("00000", 2134, "02134"),
        ("00000", -5, "-00005"),
        ("0", -2.5, "-3"),  # Excel rounds half away from zero
        ("0.00", 3.5, "3.50"),
        ("0.00", 2.675, "2.68"),  # the double is 2.67499..., Excel still shows 2.68
        # From the stored value: calamine's text keeps 9 decimals (1.5e-9 reads "0").
        ("0.00E+00", 1.5e-9, "1.50E-09"),
        ("#,##0.0000000000", 1 / 3, "0.3333333333"),
        # Excel shows 15 significant digits, then zeros.
        ("0", 9.99999e20, "999999000000000000000"),
        ("#,##0", 9007199254740993, "9,007,199,254,740,990"),
        ("0.00", 0.1 + 0.2, "0.30"),
        ("0.00", 0, "0.00"),
        ("#,##0", 1234567, "1,234,567"),
        ("#,##0.00", -1234567.891, "-1,234,567.89"),
        ("0%", 0.25, "25%"),
        ("0.00%", -0.12345, "-12.35%"),
        ('"$"#,##0.00', 1234.5, "$1,234.50"),
        ("[$$-409]#,##0.00", 1234.5, "$1,234.50"),
        ("[$$-409]#,##0.00", -1234.5, "-$1,234.50"),
        ("[$€-407] #,##0.00", 9.999, "€ 10.00"),
        ("[<=9999999]###-####;(###) ###-####", 5551234567, "(555) 123-4567"),
        ("[<=9999999]###-####;(###) ###-####", 1234567, "123-4567"),
        ("(000) 000-0000", 5551234567, "(555) 123-4567"),
        ("000-00-0000", 12345678, "012-34-5678"),
        ("0.00E+00", 1e20, "1.00E+20"),
        ("0.00E+00", -0.000123, "-1.23E-04"),
        ("0.00E+00", 0, "0.00E+00"),
        ("##0.0E+0", 12345, "12.3E+3"),
        ("#,##0_);(#,##0)", -1234, "(1,234)"),  # built-in 37
        ("#,##0.00_);[Red](#,##0.00)", 0, "0.00"),  # built-in 40
        ('"$"#,##0.00_);[Red]("$"#,##0.00)', -5.5, "($5.50)"),  # built-in 8
        (BUILTIN_FORMATS[44], 0, "$-"),  # openpyxl's text of 44 lacks the ";": read as 44
        (BUILTIN_FORMATS[44], -5.5, "$(5.50)"),
        ("[Blue]#,##0;[Red]-#,##0", -1234, "-1,234"),
        ('0.0\\ \\k\\g;"minus "0.0', -12, "minus 12.0"),
        ('#,##0,"K"', 1234567, "1,235K"),
        ('"Tel: "General', 5551234567, "Tel: 5551234567"),
    ],
)
def test_xlsx_numbers_read_as_their_number_format_shows_them(tmp_path, code, value, shown):
    path = formatted_workbook(tmp_path, {"Notes": [(value, code)]})
    assert values(extract([path]), "Notes") == [shown]


def test_xlsx_number_format_sections_positive_negative_zero_text(tmp_path):
    code = '0.00;(0.00);"zero";"text: "@'
    cells = [(1.5, code), (-1.5, code), (0, code), ("abc", code)]
    extracted = extract([formatted_workbook(tmp_path, {"Notes": cells})])
    # The text section is not applied: a text cell reads as its text.
    assert values(extracted, "Notes") == ["1.50", "(1.50)", "zero", "abc"]


def test_xlsx_number_formats_not_understood_keep_the_number_as_read(tmp_path):
    phone = "[<=9999999]###-####;(###) ###-####"
    columns = {
        "Zip": [(2134, "00000")],
        "Fraction": [(1.5, "# ?/?")],
        "Chinese digits": [(5, "[DBNum1]0")],
        "Hidden": [(5, ";;;")],
        "No digits": [(7, '"N/A"')],
        "Zero hidden": [(0, "0;-0;;@")],
        "Negative phone": [(-5, phone)],
        "No section for it": [(50, '[<0]"neg";[>100]"big"')],
        "Broken": [(3, '0"unterminated')],
    }
    row = extract([formatted_workbook(tmp_path, columns)]).rows.row(0)[5:]
    assert row == ("02134", "1.5", "5", "5", "7", "0", "-5", "50", "3")


def test_xlsx_formatted_numeric_ids_are_still_numeric_cells(tmp_path):
    columns = {"Contact Id": [(1234, "00000"), (int(ID_31_B), "#,##0")], "Plain": [(7, "0.00")]}
    extracted = extract([formatted_workbook(tmp_path, columns)])
    first, second = values(extracted, "Contact Id")
    assert first == "01234"
    assert re.fullmatch(r"9,876,543,210,987,65\d(,\d{3}){5}", second)
    assert extracted.numeric_cells.sort("row_id", "column").rows() == [
        (0, "Contact Id"),
        (0, "Plain"),
        (1, "Contact Id"),
    ]
