import json

import polars as pl

from etl.report import (
    count_outcomes,
    failed_frame,
    neutralise_formulas,
    report_frame,
    summary_text,
    write_reports,
)

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
