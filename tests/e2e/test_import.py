"""The real CLI against the real sandbox server: what a user sees, and what the CRM ends with."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from openpyxl import Workbook

from etl.directory import load_snapshot, save_snapshot
from etl.ledger import Ledger
from tests.e2e.workload import run_cli

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data" / "relationships.csv"
SEED = ROOT / "sample_data" / "crm_seed.json"
MAPPING = ROOT / "mappings" / "example.yaml"

# row -> (status, reason) for sample_data/relationships.csv (row 16 is blank: not a data row)
EXPECTED = {
    2: ("created", None),
    3: ("skipped", "duplicate_in_file"),
    4: ("created", None),
    5: ("failed", "ambiguous_contact"),
    6: ("skipped", "self_relationship"),
    7: ("skipped", "already_exists"),
    8: ("failed", "contact_not_found"),
    9: ("created", None),
    10: ("skipped", "already_exists"),
    11: ("created", None),
    12: ("failed", "missing_value"),
    13: ("created", None),
    14: ("created", None),
    15: ("created", None),
    17: ("created", None),
    18: ("created", None),
    19: ("created", None),
}


def contact_ids() -> dict[str, str]:
    seed = json.loads(SEED.read_text())
    ids = {}
    for contact in seed["contacts"]:
        name = contact["Name"] or {}
        label = contact["Company Name"] or f"{name['FirstName']} {name['LastName']}"
        ids.setdefault(label, contact["ContactId"])
    return ids


def expected_created_pairs() -> set[frozenset[str]]:
    ids = contact_ids()
    named = [
        ("Jane Doe", "John Doe"),
        ("José Müller", "ACME Ltd"),
        ("Wei Chen", "Initech LLC"),
        ("Liam O'Connor", "Sophie Martin"),
        ("Noah Williams", "Olivia Johnson"),
        ("Lucas Silva", "Globex Corporation"),
        ("Smith & Co", "Jane Doe"),
        ("Emily Brown", "Smith & Co"),
        ("Liam O'Connor", "Lucas Silva"),
        ("José Müller", "Maria Garcia"),
    ]
    return {frozenset((ids[a], ids[b])) for a, b in named}


def import_args(*extra: str) -> list[str]:
    return ["import", str(SAMPLE), "--mapping", str(MAPPING), "--report-dir", "out", *extra]


def crm_pairs(sandbox) -> list[frozenset[str]]:
    return [frozenset((r["ContactId1"], r["ContactId2"])) for r in sandbox.state()["relationships"]]


def report_outcomes(path: Path) -> dict[int, tuple[str, str | None]]:
    report = pl.read_csv(path, infer_schema=False)
    return {int(r["row"]): (r["status"], r["reason"]) for r in report.iter_rows(named=True)}


@pytest.fixture
def crm(start_sandbox):
    return start_sandbox(seed=SEED)


def test_import_creates_exactly_the_expected_pairs_and_accounts_for_every_row(
    crm, tmp_path: Path
) -> None:
    seeded = set(crm_pairs(crm))
    result = run_cli(crm, tmp_path, *import_args("--yes"))
    assert result.returncode == 1, result.stderr  # some rows failed, by design of the sample
    assert report_outcomes(tmp_path / "out" / "report.csv") == EXPECTED
    pairs = crm_pairs(crm)
    assert len(pairs) == len(set(pairs)), "a pair holds two relationships"
    assert set(pairs) == seeded | expected_created_pairs()
    assert crm.state()["duplicate_pairs"] == []
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["total_rows"] == len(EXPECTED)
    assert summary["created"] + summary["skipped"] + summary["failed"] == summary["total_rows"]
    assert summary["blank_rows"] == 1
    assert summary["created"] == len(expected_created_pairs())
    assert "ambiguous_contact" in result.stdout
    # How each side matched, and to whom, for a reviewer to scan.
    report = pl.read_csv(tmp_path / "out" / "report.csv", infer_schema=False)
    matched = {
        int(r["row"]): (r["match_1"], r["name_1"], r["match_2"], r["name_2"])
        for r in report.iter_rows(named=True)
    }
    assert matched[9] == ("email", "Wei Chen", "exact", "Initech LLC")
    assert matched[10] == ("normalised", "Wei Chen", "normalised", "Globex Corporation")
    assert matched[11] == ("id", "Liam O'Connor", "exact", "Sophie Martin")
    assert matched[19] == ("normalised", "José Müller", "exact", "Maria Garcia")
    assert matched[8] == (None, None, "exact", "Jane Doe")


def test_importing_the_same_file_twice_creates_nothing_the_second_time(crm, tmp_path: Path) -> None:
    first = run_cli(crm, tmp_path, *import_args("--yes"))
    assert first.returncode == 1, first.stderr
    writes_after_first = crm.state()["write_calls"]
    second = run_cli(crm, tmp_path, *import_args("--yes"))
    assert second.returncode == 1, second.stderr
    assert crm.state()["write_calls"] == writes_after_first
    outcomes = report_outcomes(tmp_path / "out" / "report.csv")
    for row, (status, _reason) in EXPECTED.items():
        if status == "created":
            assert outcomes[row] == ("skipped", "already_exists"), row
    assert crm.state()["duplicate_pairs"] == []


def test_a_dry_run_writes_nothing_and_says_what_it_would_create(crm, tmp_path: Path) -> None:
    result = run_cli(crm, tmp_path, *import_args("--dry-run"))
    assert result.returncode == 1, result.stderr
    assert crm.state()["write_calls"] == 0
    outcomes = report_outcomes(tmp_path / "out" / "report.csv")
    expected = {
        row: ("would_create", None) if status == "created" else (status, reason)
        for row, (status, reason) in EXPECTED.items()
    }
    assert outcomes == expected


def test_trusting_an_empty_ledger_is_warned_about(crm, tmp_path: Path) -> None:
    result = run_cli(crm, tmp_path, *import_args("--dry-run", "--existing", "ledger"))
    assert result.returncode == 1, result.stderr
    assert "Warning: --existing ledger, but the ledger" in result.stderr
    assert "holds no relationship an earlier run created" in result.stderr


def test_a_wrong_api_key_aborts_with_exit_3_and_never_shows_the_key(crm, tmp_path: Path) -> None:
    wrong = "wrong-key-7f3a9c1e5b"
    result = run_cli(crm, tmp_path, *import_args("--yes"), key=wrong)
    assert result.returncode == 3
    assert crm.state()["write_calls"] == 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "key" in lines[0].lower()
    assert wrong not in result.stderr + result.stdout


def test_without_a_terminal_nothing_is_written_unless_yes_is_given(crm, tmp_path: Path) -> None:
    result = run_cli(crm, tmp_path, *import_args())
    assert result.returncode == 2
    assert "--yes" in result.stderr
    assert crm.state()["write_calls"] == 0


def test_an_offline_dry_run_says_how_old_its_contacts_snapshot_is(crm, tmp_path: Path) -> None:
    pulled = run_cli(crm, tmp_path, "contacts", "pull", "-o", "snap.parquet")
    assert pulled.returncode == 0, pulled.stderr
    calls = crm.state()["calls"]
    offline = import_args("--dry-run", "--contacts", "snap.parquet")

    fresh = run_cli(crm, tmp_path, *offline, key="")
    assert fresh.returncode == 1, fresh.stderr
    assert "Warning" not in fresh.stderr
    assert "Note: contacts read from the snapshot snap.parquet, pulled 0 min ago" in fresh.stdout

    contacts, _ = load_snapshot(tmp_path / "snap.parquet")
    three_days_ago = datetime.now(UTC) - timedelta(days=3, minutes=1)
    save_snapshot(contacts, tmp_path / "snap.parquet", pulled_at=three_days_ago)
    old = run_cli(crm, tmp_path, *offline, key="")
    assert old.returncode == 1, old.stderr
    assert "Warning: The contacts snapshot was pulled 3 days ago" in old.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["contacts_snapshot"]["age_hours"] == 72.0
    assert any("pulled 3 days ago" in note for note in summary["notes"])
    # Offline: no existing check, so the pairs the CRM holds show as would_create; no call made.
    assert crm.state()["calls"] == calls
    outcomes = report_outcomes(tmp_path / "out" / "report.csv")
    assert {row for row, (status, _) in outcomes.items() if status == "would_create"} == {
        row for row, (_, reason) in EXPECTED.items() if reason in (None, "already_exists")
    }


def test_an_id_excel_stored_as_a_number_fails_its_row_and_never_matches_another_contact(
    crm, tmp_path: Path
) -> None:
    ids = contact_ids()
    jane, john, acme = ids["Jane Doe"], ids["John Doe"], ids["ACME Ltd"]
    book = Workbook()
    sheet = book.active
    sheet.append(["Person", "Related To", "Notes"])
    sheet.append([jane, john, 42])  # text ids, a number in the note: fine
    sheet.append([float(jane), acme, "typed as a number in Excel"])  # 15 digits kept
    sheet.append([jane, int(acme), "a whole number cell"])  # digits intact, still a number
    sheet.append([jane, int(acme), "shown as money"])
    sheet["B5"].number_format = '"$"#,##0'  # reads "$1,234,...": no longer id-like text
    book.save(tmp_path / "ids.xlsx")
    mapping = tmp_path / "ids.yaml"
    mapping.write_text(
        'contact1: {column: "Person", match: id}\n'
        'contact2: {column: "Related To", match: auto}\n'
        'note: "{Notes}"\n',
        encoding="utf-8",
    )
    args = ["import", "ids.xlsx", "-m", str(mapping), "--report-dir", "out", "--dry-run"]
    result = run_cli(crm, tmp_path, *args)
    assert result.returncode == 1, result.stderr
    report = pl.read_csv(tmp_path / "out" / "report.csv", infer_schema=False)
    rows = {int(r["row"]): r for r in report.iter_rows(named=True)}
    assert (rows[2]["status"], rows[2]["contact_id_1"], rows[2]["Notes"]) == (
        "would_create",
        jane,
        "42",
    )
    for row in (3, 4, 5):
        assert (rows[row]["status"], rows[row]["reason"]) == ("failed", "id_precision_lost")
        assert "format the column as Text" in rows[row]["detail"]
    assert rows[3]["contact_id_1"] is None
    assert rows[4]["contact_id_2"] is None
    assert rows[5]["Related To"].startswith("$")
    assert crm.state()["write_calls"] == 0


def test_rollback_shows_then_deletes_exactly_what_the_import_created(crm, tmp_path: Path) -> None:
    seeded = set(crm_pairs(crm))
    assert run_cli(crm, tmp_path, *import_args("--yes", "--rate", "20")).returncode == 1
    with Ledger(tmp_path / ".lacrm-etl" / "state.sqlite") as ledger:
        (run,) = ledger.runs()
    imported = set(crm_pairs(crm))
    assert imported == seeded | expected_created_pairs()

    preview = run_cli(crm, tmp_path, "rollback", run.run_id)
    assert preview.returncode == 0, preview.stderr
    assert f"rollback would delete {len(expected_created_pairs())} relationships" in preview.stdout
    assert "row 2 of relationships.csv: Jane Doe and John Doe (RelationshipId " in preview.stdout
    assert "Nothing was deleted" in preview.stdout
    assert set(crm_pairs(crm)) == imported

    done = run_cli(crm, tmp_path, "rollback", run.run_id, "--yes", "--rate", "20")
    assert done.returncode == 0, done.stderr
    assert f"deleted {len(expected_created_pairs())}, already gone 0, failed 0" in done.stdout
    assert set(crm_pairs(crm)) == seeded  # what existed before the import is untouched

    again = run_cli(crm, tmp_path, "rollback", run.run_id, "--yes")
    assert again.returncode == 0, again.stderr
    assert "deleted 0" in again.stdout
    assert set(crm_pairs(crm)) == seeded
