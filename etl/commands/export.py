"""`lacrm-etl export`: the account's relationships as a spreadsheet."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
import polars as pl

from etl import pipeline
from etl.commands.options import api_options, output_options, user_errors
from etl.export import check_output, read_relationships, write_export
from etl.progress import configure_logging, show_bars


@click.command()
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The file to write: FILE.xlsx or FILE.csv.",
)
@click.option(
    "--contact",
    "contacts",
    multiple=True,
    metavar="CONTACT_ID",
    help="Only this contact's relationships (repeat for more) [default: every contact].",
)
@api_options
@output_options
def export(
    output: Path, contacts: tuple[str, ...], api: pipeline.Api, quiet: bool, verbose: bool
) -> None:
    """Save every relationship in the CRM, with both contacts' names and ids, the note and dates.

    A backup before a migration; `lacrm-etl import FILE -m mappings/export.yaml` brings the
    same pairs back (pairs the CRM already holds are skipped).

    \b
    Example:
        lacrm-etl export -o backup.xlsx
        lacrm-etl export -o jane.csv --contact 4006276277128630492722513572984
    """
    configure_logging(verbose)
    with user_errors():
        check_output(output)
        frame = asyncio.run(_read(api, list(contacts) or None, show_bars(quiet)))
        write_export(frame, output)
    click.echo(f"Exported {frame.height:,} relationships to {output}")


async def _read(api: pipeline.Api, contacts: list[str] | None, progress: bool) -> pl.DataFrame:
    async with api.client() as client:
        return await read_relationships(client, contacts, progress=progress)
