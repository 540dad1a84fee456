"""The reports a person opens, against the real sandbox: they agree with each other and with the
CRM, they are safe to open, failed.csv fixed and re-imported finishes the job, and an export
comes back with mappings/export.yaml."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from openpyxl import load_workbook

from tests.e2e.workload import run_cli

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data" / "relationships.csv"
SEED = ROOT / "sample_data" / "crm_seed.json"
MAPPING = ROOT / "mappings" / "example.yaml"
EXPORT_MAPPING = ROOT / "mappings" / "export.yaml"
STATUSES = ("created", "would_create", "skipped", "failed")
HYPERLINK = '=HYPERLINK("http://x","y")'


def import_sample(crm: Any, cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["import", str(SAMPLE), "-m", str(MAPPING), "--report-dir", "out", "--yes", *extra]
    return run_cli(crm, cwd, *args)


def read_csv(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, infer_schema=False)


def workbook_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    workbook = load_workbook(path)
    return {sheet.title: list(sheet.iter_rows(values_only=True)) for sheet in workbook}


def terminal_counts(stdout: str) -> dict[str, int]:
    """`  created   10` lines of the closing summary (statuses and reasons alike)."""
    return {
        name: int(count.replace(",", ""))
        for name, count in re.findall(r"^\s+([a-z_]+(?: [a-z_()]+)*)\s+([\d,]+)$", stdout, re.M)
    }


def seed_without_relationships(tmp_path: Path) -> Path:
    seed = json.loads(SEED.read_text())
    seed["relationships"] = []
    path = tmp_path / "contacts_only.json"
    path.write_text(json.dumps(seed))
    return path


@pytest.fixture
def crm(start_sandbox):
    return start_sandbox(seed=SEED)


def test_counts_agree_across_csv_xlsx_json_and_the_terminal(crm, tmp_path: Path) -> None:
    result = import_sample(crm, tmp_path)
    assert result.returncode == 1, result.stderr
    out = tmp_path / "out"
    report = read_csv(out / "report.csv")
    summary = json.loads((out / "summary.json").read_text())
    sheets = workbook_rows(out / "report.xlsx")
    shown = terminal_counts(result.stdout)

    by_status = dict(report.group_by("status").len().iter_rows())
    assert list(sheets) == ["Summary", *[s for s in STATUSES if by_status.get(s)]]
    summary_cells = {row[0]: row[1] for row in sheets["Summary"] if row and row[0]}
    for status in STATUSES:
        in_csv = by_status.get(status, 0)
        assert summary[status] == in_csv, status
        if in_csv:
            assert len(sheets[status]) - 1 == in_csv, status
            assert summary_cells[status] == in_csv, status
            assert shown[status] == in_csv, status
    assert summary_cells["total rows"] == summary["total_rows"] == report.height
    assert shown["rows read"] == report.height
    for key, count in summary["reasons"].items():
        status, reason = key.split("/")
        in_csv = report.filter((pl.col("status") == status) & (pl.col("reason") == reason)).height
        assert count == in_csv == summary_cells[reason] == shown[reason], key
    calls = summary["api_calls"]
    assert calls["CreateRelationship"] == summary["created"] == summary_cells["CreateRelationship"]
    assert summary_cells["total"] == sum(calls.values())


def test_ids_are_text_and_every_sheet_has_its_header_frozen_and_filtered(
    crm, tmp_path: Path
) -> None:
    assert import_sample(crm, tmp_path).returncode == 1
    workbook = load_workbook(tmp_path / "out" / "report.xlsx")
    assert workbook["Summary"]._charts, "the Summary has no chart"
    for sheet in workbook.worksheets[1:]:
        assert sheet.freeze_panes == "A2"
        assert sheet.auto_filter.ref and sheet.auto_filter.ref.startswith("A1:")
        header = [cell.value for cell in sheet[1]]
        for name in ("contact_id_1", "contact_id_2", "relationship_id"):
            column = header.index(name) + 1
            (cells,) = sheet.iter_cols(min_col=column, max_col=column, min_row=2)
            for cell in cells:
                if cell.value is not None:
                    assert isinstance(cell.value, str) and len(cell.value) == 31
                    assert cell.number_format == "@"


def test_a_formula_note_reaches_the_crm_unchanged_and_every_report_neutralised(
    crm, tmp_path: Path
) -> None:
    source = tmp_path / "notes.csv"
    rows = [
        ["Person", "Related To", "Notes"],
        ["Noah Williams", "Olivia Johnson", HYPERLINK],
        ["Peter Parker", "Jane Doe", HYPERLINK],
        ["Lucas Silva", "Sophie Martin", "-5 and +3 @ noon"],
    ]
    with source.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    mapping = tmp_path / "notes.yaml"
    mapping.write_text(
        'contact1: {column: "Person", match: name}\n'
        'contact2: {column: "Related To", match: name}\n'
        'note: "{Notes}"\n'
    )
    args = ["import", str(source), "-m", str(mapping), "--report-dir", "out", "--yes"]
    result = run_cli(crm, tmp_path, *args)
    assert result.returncode == 1, result.stderr  # Peter Parker is not in the CRM

    notes = {rel["Note"] for rel in crm.state()["relationships"]}
    assert {HYPERLINK, "-5 and +3 @ noon"} <= notes
    out = tmp_path / "out"
    assert read_csv(out / "report.csv")["Notes"].to_list() == [
        "'" + HYPERLINK,
        "'" + HYPERLINK,
        "'-5 and +3 @ noon",
    ]
    assert read_csv(out / "failed.csv")["Notes"].to_list() == ["'" + HYPERLINK]
    workbook = load_workbook(out / "report.xlsx")
    seen = []
    for sheet in workbook.worksheets:
        for row in sheet.iter_rows():
            for cell in row:
                assert cell.data_type != "f", (sheet.title, cell.coordinate, cell.value)
                if isinstance(cell.value, str) and "HYPERLINK" in cell.value:
                    seen.append(cell.value)
    assert seen == ["'" + HYPERLINK] * 2


def test_failed_csv_fixed_and_imported_again_finishes_the_job(crm, tmp_path: Path) -> None:
    first = import_sample(crm, tmp_path)
    assert first.returncode == 1, first.stderr
    failed = read_csv(tmp_path / "out" / "failed.csv")
    assert failed.columns == ["Person", "Related To", "Relationship", "Notes", "error"]
    assert sorted(failed["Person"].to_list()) == ["Aisha Khan", "Peter Parker", "john smith"]
    john_paul_smith = "6891856887094817549991107596331"  # one of the two John Smiths
    fixed = failed.with_columns(
        Person=pl.col("Person").replace(
            {"Peter Parker": "Olivia Johnson", "john smith": john_paul_smith}
        ),
        **{
            "Related To": pl.when(pl.col("Person") == "Aisha Khan")
            .then(pl.lit("Maria Garcia"))
            .otherwise(pl.col("Related To"))
        },
    )
    fixed.write_csv(tmp_path / "fixed.csv")
    before = len(crm.state()["relationships"])

    again_args = ["import", "fixed.csv", "-m", str(MAPPING), "--report-dir", "again", "--yes"]
    second = run_cli(crm, tmp_path, *again_args)
    assert second.returncode == 0, second.stdout + second.stderr
    summary = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert (summary["created"], summary["failed"], summary["total_rows"]) == (3, 0, 3)
    assert read_csv(tmp_path / "again" / "failed.csv").height == 0
    state = crm.state()
    assert len(state["relationships"]) == before + 3
    assert state["duplicate_pairs"] == []


def test_report_run_id_renders_every_report_as_the_run_left_it(crm, tmp_path: Path) -> None:
    assert import_sample(crm, tmp_path).returncode == 1
    run_id = json.loads((tmp_path / "out" / "summary.json").read_text())["run_id"]
    again = run_cli(crm, tmp_path, "report", run_id, "--report-dir", "again")
    assert again.returncode == 1, again.stderr
    for name in ("summary.json", "report.csv", "failed.csv"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "out" / name).read_bytes()
    assert workbook_rows(tmp_path / "again" / "report.xlsx") == workbook_rows(
        tmp_path / "out" / "report.xlsx"
    )
    assert crm.state()["calls"].get("CreateRelationship", 0) == 10  # nothing sent again


def test_verbose_logs_the_stages_without_bars_or_the_key(crm, tmp_path: Path) -> None:
    result = import_sample(crm, tmp_path, "--verbose")
    assert result.returncode == 1, result.stderr
    for stage in ("Reading", "Contact directory", "Resolving", "Existing pairs", "Writing"):
        assert re.search(rf"{stage}: done, [\d,]+ \w+.* in [\d.]+ s", result.stderr), stage
    assert crm.api_key not in result.stderr + result.stdout
    assert "\r" not in result.stderr and "it/s" not in result.stderr  # stderr is no terminal


def test_export_round_trip_brings_back_the_same_pairs_and_notes(
    crm, start_sandbox, tmp_path: Path
) -> None:
    assert import_sample(crm, tmp_path).returncode == 1
    held = {
        frozenset((rel["ContactId1"], rel["ContactId2"])): rel["Note"]
        for rel in crm.state()["relationships"]
    }
    for name in ("backup.xlsx", "backup.csv"):
        result = run_cli(crm, tmp_path, "export", "-o", name)
        assert result.returncode == 0, result.stderr
        assert f"Exported {len(held)} relationships" in result.stdout

    backup = read_csv(tmp_path / "backup.csv")
    assert backup.columns[:6] == [
        "relationship_id",
        "contact_id_1",
        "contact_1",
        "contact_id_2",
        "contact_2",
        "note",
    ]
    assert backup["relationship_id"].n_unique() == backup.height == len(held)
    workbook = load_workbook(tmp_path / "backup.xlsx")
    (first_column,) = workbook["relationships"].iter_cols(max_col=1, min_row=2)
    ids = [cell.value for cell in first_column]
    assert all(isinstance(value, str) and len(value) == 31 for value in ids)

    fresh = start_sandbox(seed=seed_without_relationships(tmp_path))
    args = ["import", "backup.xlsx", "-m", str(EXPORT_MAPPING), "--report-dir", "restored"]
    restored = run_cli(fresh, tmp_path, *args, "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert {
        frozenset((rel["ContactId1"], rel["ContactId2"])): rel["Note"]
        for rel in fresh.state()["relationships"]
    } == held

    writes = crm.state()["write_calls"]
    same = run_cli(crm, tmp_path, *args, "--yes")
    assert same.returncode == 0, same.stderr
    assert crm.state()["write_calls"] == writes  # every pair already held: all skipped


def test_export_of_given_contacts_only(crm, tmp_path: Path) -> None:
    robert_brown = "1629682375849313786966738695861"
    result = run_cli(crm, tmp_path, "export", "-o", "one.csv", "--contact", robert_brown)
    assert result.returncode == 0, result.stderr
    backup = read_csv(tmp_path / "one.csv")
    assert backup.height == 1
    assert backup.row(0, named=True)["contact_1"] == "Robert Brown"
    assert backup.row(0, named=True)["note"] == "Married"


def test_export_of_an_unknown_contact_is_an_error_not_an_empty_backup(crm, tmp_path: Path) -> None:
    unknown = "9" * 31
    result = run_cli(crm, tmp_path, "export", "-o", "one.csv", "--contact", unknown)
    assert result.returncode == 2, result.stderr
    assert f"--contact {unknown}: the CRM has no such contact" in result.stderr
    assert not (tmp_path / "one.csv").exists()


def test_export_refuses_other_formats(crm, tmp_path: Path) -> None:
    result = run_cli(crm, tmp_path, "export", "-o", "backup.json")
    assert result.returncode == 2
    assert ".xlsx" in result.stderr
