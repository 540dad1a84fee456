from click.testing import CliRunner

from etl.cli import cli


def test_help_lists_the_commands_and_an_example() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output
