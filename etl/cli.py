"""The `lacrm-etl` command line: thin wrappers that parse options and call the pipeline."""

from __future__ import annotations

import click

from etl import __version__
from etl.sandbox.cli import sandbox


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lacrm-etl")
def cli() -> None:
    """Bulk-import relationships into Less Annoying CRM from CSV and Excel files.

    \b
    Example:
        lacrm-etl import people.csv --mapping mappings/example.yaml --dry-run
    """


cli.add_command(sandbox)


def main() -> None:
    cli(prog_name="lacrm-etl")
