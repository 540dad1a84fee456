import json
from pathlib import Path

import polars as pl
from click.testing import CliRunner

from etl.cli import cli
from etl.directory import contacts_frame, save_snapshot
from etl.ledger import Ledger

SAMPLE_DATA = Path(__file__).parent.parent / "sample_data"


def test_help_lists_the_commands_and_an_example() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output


def test_runs_without_a_ledger_says_so_and_creates_none(tmp_path: Path) -> None:
    state_db = tmp_path / ".lacrm-etl" / "state.sqlite"
    result = CliRunner().invoke(cli, ["runs", "--state-db", str(state_db)])
    assert result.exit_code == 0
    assert result.output.startswith("No runs yet")
    assert not state_db.parent.exists()


def test_a_state_db_that_is_not_a_ledger_is_one_line_exit_2(tmp_path: Path) -> None:
    not_a_ledger = tmp_path / "people.csv"
    not_a_ledger.write_text("Person,Related To\n" * 200, encoding="utf-8")
    result = CliRunner().invoke(cli, ["runs", "--state-db", str(not_a_ledger)])
    assert result.exit_code == 2
    assert "is not a lacrm-etl ledger" in result.output


def test_a_snapshot_must_be_named_parquet(tmp_path: Path) -> None:
    output = tmp_path / "snap.csv"
    result = CliRunner().invoke(cli, ["contacts", "pull", "-o", str(output)])
    assert result.exit_code == 2
    assert "a snapshot is a parquet file" in result.output
    assert not output.exists()


def test_a_mapping_names_an_input_column_called_source_as_the_file_does(tmp_path: Path) -> None:
    seed = json.loads((SAMPLE_DATA / "crm_seed.json").read_text(encoding="utf-8"))["contacts"]
    save_snapshot(contacts_frame(seed), tmp_path / "snap.parquet")
    (tmp_path / "in.csv").write_text("Person,Related To,source\nJane Doe,John Doe,web\n")
    mapping = tmp_path / "m.yaml"
    mapping.write_text('contact1: "Person"\ncontact2: "Related To"\nnote: "via {source}"\n')
    args = ["import", str(tmp_path / "in.csv"), "-m", str(mapping), "--dry-run", "-q"]
    args += ["--contacts", str(tmp_path / "snap.parquet"), "--report-dir", str(tmp_path / "out")]
    args += ["--state-db", str(tmp_path / "state.sqlite")]
    result = CliRunner().invoke(cli, args, env={"LACRM_API_KEY": ""})
    assert result.exit_code == 0, result.output
    with Ledger(tmp_path / "state.sqlite") as ledger:
        (run,) = ledger.runs()
        assert ledger.plan(run.run_id)["note"].to_list() == ["via web"]
    report = pl.read_csv(tmp_path / "out" / "report.csv", infer_schema=False)
    assert report["source (input)"].to_list() == ["web"]
