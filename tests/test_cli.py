from pathlib import Path

from click.testing import CliRunner

from etl.cli import cli


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
