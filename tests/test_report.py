import json

import polars as pl
from openpyxl import load_workbook

from etl.report import (
    count_outcomes,
    failed_frame,
    neutralise_formulas,
    report_frame,
    split_inputs,
    summary_text,
    with_inputs,
    write_reports,
    write_workbook,
)
from etl.spreadsheet import new_workbook, write_table

ID = "4006276277128630492722513572984"


def plan() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "row_id": [1, 0],
            "source": ["f.csv", "f.csv"],
            "sheet": ["", ""],
            "row": [3, 2],
            "status": ["failed", "created"],
            "reason": ["contact_not_found", None],
            "detail": ["contact 1: no contact named Peter Parker", None],
            "contact_id_1": [None, ID],
            "contact_id_2": [ID, ID[::-1]],
            "relationship_id": [None, "1" * 31],
            "note": ["x", "y"],
            "match_1": [None, "exact"],
            "name_1": [None, "Jane Doe"],
            "match_2": ["id", "exact"],
            "name_2": ["Jane Doe", "John Doe"],
        },
        schema_overrides={"row_id": pl.UInt32},
    )


def rows() -> pl.DataFrame:
    return pl.DataFrame(
        {"row_id": [0, 1], "Person": ["Jane Doe", "Peter Parker"], "status": ["new", "=1+1"]},
        schema_overrides={"row_id": pl.UInt32},
    )


def test_report_rows_follow_the_input_with_outcome_columns_first() -> None:
    report = report_frame(plan(), rows(), ["Person", "status"])
    assert report.columns[:9] == [
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
    assert report.columns[9:11] == ["Person", "input:status"]
    assert report["row"].to_list() == [2, 3]
    assert report["Person"].to_list() == ["Jane Doe", "Peter Parker"]


def test_cells_a_spreadsheet_would_run_are_neutralised_and_others_untouched() -> None:
    values = ['=HYPERLINK("http://x","y")', "+1", "-2", "@SUM(A1)", "\tx", "\rx", "a=b", ID]
    out = neutralise_formulas(pl.DataFrame({"v": values}))["v"].to_list()
    assert out[:6] == ["'" + v for v in values[:6]]
    assert out[6:] == ["a=b", ID]


def test_failed_rows_keep_their_original_columns_plus_error() -> None:
    report = report_frame(plan(), rows(), ["Person", "status"])
    failed = failed_frame(report, ["Person", "status"])
    assert failed.columns == ["Person", "status", "error"]
    assert failed.row(0) == (
        "Peter Parker",
        "=1+1",
        "contact_not_found: contact 1: no contact named Peter Parker",
    )


def test_reports_on_disk_agree_with_the_counts(tmp_path) -> None:
    report = report_frame(plan(), rows(), ["Person", "status"])
    summary = {"run_id": "r1", "dry_run": False, **count_outcomes(report)}
    paths = write_reports(report, ["Person", "status"], summary, tmp_path / "out")
    on_disk = pl.read_csv(paths.report_csv, infer_schema=False)
    assert on_disk["contact_id_1"].to_list() == [ID, None]
    assert on_disk["input:status"].to_list() == ["new", "'=1+1"]
    assert pl.read_csv(paths.failed_csv, infer_schema=False)["status"].to_list() == ["'=1+1"]
    saved = json.loads(paths.summary_json.read_text())
    assert (saved["created"], saved["failed"], saved["total_rows"]) == (1, 1, 2)
    assert saved["reasons"] == {"failed/contact_not_found": 1}
    text = summary_text(saved, paths)
    assert "contact_not_found" in text
    assert str(paths.directory) in text


def summary_of(report: pl.DataFrame, **extra: object) -> dict:
    return {
        "run_id": "r1",
        "dry_run": False,
        **count_outcomes(report),
        "api_calls": {"CreateRelationship": 1, "GetContacts": 1},
        "settings": {"sources": ["=evil.csv"], "dry_run": False},
        **extra,
    }


def sheet_rows(sheet) -> list[tuple]:
    return list(sheet.iter_rows(values_only=True))


def test_the_workbook_has_a_summary_with_a_chart_and_a_sheet_per_status(tmp_path) -> None:
    report = report_frame(plan(), rows(), ["Person", "status"])
    paths = write_reports(report, ["Person", "status"], summary_of(report), tmp_path)
    workbook = load_workbook(paths.report_xlsx)
    assert workbook.sheetnames == ["Summary", "created", "failed"]
    summary = workbook["Summary"]
    counts = {row[0]: row[1] for row in sheet_rows(summary) if row and row[0]}
    assert (counts["created"], counts["failed"], counts["total rows"]) == (1, 1, 2)
    assert counts["contact_not_found"] == 1
    assert counts["CreateRelationship"] == 1
    assert counts["sources"] == "'=evil.csv"
    (chart,) = summary._charts
    assert chart.title is not None
    assert len(chart.series) == 1
    failed = workbook["failed"]
    header, *data = sheet_rows(failed)
    assert list(header) == report.columns
    assert failed.freeze_panes == "A2"
    assert failed.auto_filter.ref == f"A1:O{len(data) + 1}"
    assert failed.column_dimensions["F"].width > 20  # detail fits its text


def test_ids_are_text_cells_and_formulas_are_neutralised_in_the_workbook(tmp_path) -> None:
    report = report_frame(plan(), rows(), ["Person", "status"])
    paths = write_reports(report, ["Person", "status"], summary_of(report), tmp_path)
    workbook = load_workbook(paths.report_xlsx)
    for sheet in workbook.worksheets[1:]:
        header = [cell.value for cell in sheet[1]]
        for row in sheet.iter_rows(min_row=2):
            for name, cell in zip(header, row, strict=True):
                if name in ("contact_id_1", "contact_id_2", "relationship_id") and cell.value:
                    assert cell.data_type == "s" and isinstance(cell.value, str)
                    assert cell.number_format == "@"
                    assert len(cell.value) == 31
                assert cell.data_type != "f", (sheet.title, name)
    failed = sheet_rows(workbook["failed"])
    assert failed[1][failed[0].index("input:status")] == "'=1+1"


def test_a_status_past_the_sheet_row_limit_continues_on_more_sheets(tmp_path) -> None:
    many = pl.concat([plan()] * 3).with_columns(
        row_id=pl.int_range(pl.len(), dtype=pl.UInt32), row=pl.int_range(pl.len()) + 2
    )
    inputs = pl.DataFrame({"row_id": many["row_id"], "Person": ["x"] * many.height})
    report = report_frame(many, inputs, ["Person"])
    write_workbook(report, summary_of(report), tmp_path / "r.xlsx", max_rows=2)
    workbook = load_workbook(tmp_path / "r.xlsx")
    assert workbook.sheetnames == ["Summary", "created", "created (2)", "failed", "failed (2)"]
    assert [workbook[name].max_row for name in workbook.sheetnames[1:]] == [3, 2, 3, 2]
    sheets = {row[0]: row[2] for row in sheet_rows(workbook["Summary"]) if row and row[0]}
    assert sheets["failed"] == "failed, failed (2)"


def test_control_characters_and_huge_cells_do_not_break_the_workbook(tmp_path) -> None:
    frame = pl.DataFrame({"note": ["a\x00b\x0bc", "x" * 40_000, "-1"]})
    workbook = new_workbook()
    write_table(workbook, "t", frame)
    workbook.save(tmp_path / "t.xlsx")
    values = [row[0] for row in sheet_rows(load_workbook(tmp_path / "t.xlsx")["t"])]
    assert values == ["note", "a\ufffdb\ufffdc", "x" * 32_767, "'-1"]


def test_long_text_in_a_wrapping_column_wraps_in_a_taller_row(tmp_path) -> None:
    frame = pl.DataFrame({"id": [ID, ID], "detail": ["short", "word " * 60]})
    workbook = new_workbook()
    write_table(workbook, "t", frame, id_columns=["id"], wrap_columns=["detail"])
    workbook.save(tmp_path / "t.xlsx")
    sheet = load_workbook(tmp_path / "t.xlsx")["t"]
    assert not sheet["B2"].alignment.wrap_text and sheet.row_dimensions[2].height is None
    assert sheet["B3"].alignment.wrap_text and sheet["B3"].value == "word " * 60
    assert sheet.row_dimensions[3].height > 15
    assert sheet["A3"].alignment.vertical == "top"
    assert (sheet["A3"].data_type, sheet["A3"].number_format) == ("s", "@")


def test_a_failed_csv_imported_again_gets_a_fresh_error_column() -> None:
    inputs = rows().with_columns(error=pl.lit("stale: from the last run"))
    report = report_frame(plan(), inputs, ["Person", "error"])
    failed = failed_frame(report, ["Person", "error"])
    assert failed.columns == ["Person", "error"]
    assert failed.row(0) == (
        "Peter Parker",
        "contact_not_found: contact 1: no contact named Peter Parker",
    )


def test_input_columns_named_like_ours_keep_their_own_values() -> None:
    inputs = pl.DataFrame(
        {
            "row_id": [0, 1],
            "note": ["theirs", None],
            "contact_id_1": ["a", "b"],
            "Person": ["J", "P"],
        },
        schema_overrides={"row_id": pl.UInt32},
    )
    columns = ["note", "contact_id_1", "Person"]
    stored = with_inputs(plan(), inputs, columns)
    planned, rows_again = split_inputs(stored, columns)
    assert planned.equals(plan())
    assert rows_again.sort("row_id").equals(inputs)
    report = report_frame(planned, rows_again, columns)
    assert report["input:note"].to_list() == ["theirs", None]
    assert report["input:contact_id_1"].to_list() == ["a", "b"]
    assert report["contact_id_1"].to_list() == [ID, None]
