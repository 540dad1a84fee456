"""The `lacrm-etl` command line: thin wrappers that parse options and call the pipeline."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click

from etl import __version__, pipeline, write
from etl.commands.export import export
from etl.commands.options import (
    BadInput,
    api_options,
    output_options,
    report_dir_option,
    state_db_option,
    user_errors,
)
from etl.ledger import UNFINISHED_STATES, Ledger
from etl.plan import TO_CREATE
from etl.progress import configure_logging, show_bars
from etl.sandbox.cli import sandbox

SHEET_HELP = "Workbook sheet, by name or number (1 = the first) [default: the first holding data]."


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lacrm-etl")
def cli() -> None:
    """Bulk-import relationships into Less Annoying CRM from CSV and Excel files.

    Every input row ends up created, skipped or failed, with the reason, in a report.
    Settings: LACRM_API_KEY (or --api-key-file) and LACRM_API_URL.

    \b
    Example:
        export LACRM_API_KEY=...   # from LACRM: Settings > Programmer API
        lacrm-etl import people.csv --mapping mappings/example.yaml --dry-run
        lacrm-etl import people.csv --mapping mappings/example.yaml
    """


@cli.command("import")
@click.argument("sources", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--mapping",
    "-m",
    "mapping_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The mapping file (YAML): which columns name contact 1, contact 2 and the note.",
)
@click.option("--dry-run", is_flag=True, help="Plan and report everything; write nothing.")
@click.option("--sheet", help=SHEET_HELP)
@click.option(
    "--header-row",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="The row holding the column names (1 = the first row of the file or sheet).",
)
@click.option(
    "--contacts",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A contact snapshot (from `contacts pull`) instead of downloading the directory.",
)
@click.option(
    "--existing",
    type=click.Choice(["check", "ledger"]),
    default="check",
    show_default=True,
    help="How to find pairs the CRM already holds: read the CRM, or trust earlier runs' ledger.",
)
@click.option("--yes", "-y", is_flag=True, help="Write without asking for confirmation.")
@api_options
@state_db_option
@report_dir_option
@output_options
def import_(
    sources: tuple[Path, ...],
    mapping_path: Path,
    dry_run: bool,
    sheet: str | None,
    header_row: int,
    contacts: Path | None,
    existing: str,
    yes: bool,
    api: pipeline.Api,
    state_db: Path,
    report_dir: Path | None,
    quiet: bool,
    verbose: bool,
) -> None:
    """Import relationships from SOURCE files (CSV, TSV, XLSX) into the CRM.

    Resolves both contacts of every row, drops self pairs and duplicates ((A,B) is (B,A)),
    skips pairs the CRM already holds, shows the plan, creates the rest and writes the
    reports. Exit codes: 0 all rows created or skipped, 1 some rows failed, 2 bad usage or
    input (nothing written), 3 aborted (resumable).

    \b
    Example:
        lacrm-etl import contacts.xlsx --sheet Family -m mappings/example.yaml --dry-run
        lacrm-etl import a.csv b.csv -m mappings/example.yaml --rate 2 --yes
    """
    settings = pipeline.ImportSettings(
        sources=sources,
        mapping=mapping_path,
        dry_run=dry_run,
        sheet=sheet,
        header_row=header_row,
        contacts=contacts,
        existing=existing,
    )
    configure_logging(verbose)
    progress = show_bars(quiet)
    ledger = _ledger(state_db)
    with user_errors():
        prepared = asyncio.run(pipeline.prepare(settings, api, ledger, progress=progress))
    for warning in prepared.info.get("warnings", []):
        click.echo(f"Warning: {warning}", err=True)
    session = Session()
    directory = _report_directory(report_dir, prepared.run_id)
    to_create = int((prepared.plan["status"] == TO_CREATE).sum())
    if to_create:
        _confirm(prepared.run_id, prepared.plan, yes)
        ledger.set_state(prepared.run_id, "writing")
        with user_errors(prepared.run_id):
            session.write(prepared.run_id, api, ledger, progress, resuming=False)
    _finish(ledger, prepared.run_id, session, directory, progress)


def _ledger(state_db: Path) -> Ledger:
    with user_errors():
        return Ledger(state_db)


def _report_directory(report_dir: Path | None, run_id: str) -> Path:
    """Made before anything is written, so a path that cannot hold the reports stops the run
    while the CRM is untouched, not after the creates."""
    directory = report_dir or Path("reports") / run_id
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BadInput(
            f"cannot write the reports to {directory} ({error.strerror or error}); choose "
            f"another --report-dir. Nothing was written; the plan stays as run {run_id}"
        ) from None
    return directory


def _confirm(run_id: str, plan: Any, yes: bool) -> None:
    counts = plan.group_by("status").len().sort("status").iter_rows()
    listed = ", ".join(f"{status} {n:,}" for status, n in counts)
    click.echo(f"Plan for run {run_id}: {listed}", err=True)
    if yes:
        return
    if not sys.stdin.isatty():
        raise BadInput(
            "not writing without confirmation: add --yes to write from a script "
            f"(or finish this plan with: lacrm-etl resume {run_id} --yes)"
        )
    to_create = int((plan["status"] == TO_CREATE).sum())
    if not click.confirm(f"Create {to_create:,} relationships in the CRM?", err=True):
        raise BadInput(f"nothing written; the plan stays as run {run_id}")


class Session:
    """What this command spent writing: API calls and seconds, added to the run's summary."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.timings: dict[str, float] = {}

    def write(
        self, run_id: str, api: pipeline.Api, ledger: Ledger, progress: bool, resuming: bool
    ) -> None:
        started = time.perf_counter()
        try:
            written = pipeline.write_run(run_id, api, ledger, progress=progress, recheck=resuming)
            self.calls += asyncio.run(written)
        finally:
            self.timings["write"] = round(time.perf_counter() - started, 3)


def _finish(ledger: Ledger, run_id: str, session: Session, directory: Path, progress: bool) -> None:
    if ledger.run(run_id).state == "planned":
        ledger.set_state(run_id, "finished")
    summary, _paths, text = pipeline.final_report(
        ledger, run_id, session.calls, directory, timings=session.timings, progress=progress
    )
    click.echo(text)
    sys.exit(1 if summary["failed"] else 0)


@cli.command()
@click.argument("run_id")
@click.option("--yes", "-y", is_flag=True, help="Write without asking for confirmation.")
@api_options
@state_db_option
@report_dir_option
@output_options
def resume(
    run_id: str,
    yes: bool,
    api: pipeline.Api,
    state_db: Path,
    report_dir: Path | None,
    quiet: bool,
    verbose: bool,
) -> None:
    """Finish an interrupted run: create what is left, exactly once, and write the reports.

    Refuses if the input files changed since the plan was made. The pairs left to create are
    first looked up in the CRM again (unless the plan used --existing ledger): those made
    since the plan, by hand or by another tool, are skipped as already_exists.

    \b
    Example:
        lacrm-etl resume 20261203-194112-3f9a
    """
    configure_logging(verbose)
    progress = show_bars(quiet)
    ledger = _ledger(state_db)
    session = Session()
    # Held before the plan is shown, so a run another process writes is refused up front.
    with user_errors(run_id), ledger.holding(run_id):
        write.check_writable(ledger, run_id)
        pipeline.check_unchanged(ledger, run_id)
        directory = _report_directory(report_dir, run_id)
        plan = ledger.plan(run_id)
        _confirm(run_id, plan, yes)
        ledger.set_state(run_id, "writing")
        session.write(run_id, api, ledger, progress, resuming=True)
    _finish(ledger, run_id, session, directory, progress)


@cli.command()
@click.argument("run_id")
@state_db_option
@report_dir_option
@output_options
def report(
    run_id: str, state_db: Path, report_dir: Path | None, quiet: bool, verbose: bool
) -> None:
    """Write a run's reports again from the ledger, as the run left them.

    Every file (report.csv, report.xlsx, failed.csv, summary.json) comes out as the run wrote
    it, API calls and times included; nothing is read from the CRM.

    \b
    Example:
        lacrm-etl report 20261203-194112-3f9a --report-dir out/
    """
    configure_logging(verbose)
    directory = report_dir or Path("reports") / run_id
    with user_errors(run_id):
        summary, _paths, text = pipeline.rerender_report(
            Ledger(state_db), run_id, directory, progress=show_bars(quiet)
        )
    click.echo(text)
    unfinished = summary.get("state") in UNFINISHED_STATES
    sys.exit(3 if unfinished else 1 if summary["failed"] else 0)


@cli.command()
@state_db_option
def runs(state_db: Path) -> None:
    """List the runs in the ledger, newest first, with their counts and state.

    \b
    Example:
        lacrm-etl runs
    """
    if not state_db.is_file():
        click.echo(
            f"No runs yet: there is no ledger at {state_db} (`lacrm-etl import` starts one)."
        )
        return
    with user_errors():
        listed = Ledger(state_db).runs()
    if not listed:
        click.echo(f"No runs yet in {state_db}.")
    for run in listed:
        click.echo(pipeline.run_line(run))


@cli.command()
@click.argument("run_id")
@click.option("--yes", "-y", is_flag=True, help="Delete; without it, only show what would go.")
@api_options
@state_db_option
@output_options
def rollback(
    run_id: str, yes: bool, api: pipeline.Api, state_db: Path, quiet: bool, verbose: bool
) -> None:
    """Delete exactly the relationships a run created, and nothing else.

    Without --yes it lists what it would delete. Safe to run again after a failure.

    \b
    Example:
        lacrm-etl rollback 20261203-194112-3f9a          # preview
        lacrm-etl rollback 20261203-194112-3f9a --yes
    """
    configure_logging(verbose)
    ledger = _ledger(state_db)
    with user_errors(run_id):
        if not yes:
            click.echo(pipeline.rollback_preview_text(ledger, run_id))
            return
        stats = asyncio.run(pipeline.rollback_run(run_id, api, ledger, progress=show_bars(quiet)))
    click.echo(
        f"Run {run_id}: deleted {stats.deleted:,}, already gone {stats.already_gone:,}, "
        f"failed {stats.failed:,}"
    )
    sys.exit(1 if stats.failed else 0)


@cli.group()
def contacts() -> None:
    """The CRM's contact directory."""


@contacts.command("pull")
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The snapshot file to write (parquet).",
)
@api_options
@output_options
def contacts_pull(output: Path, api: pipeline.Api, quiet: bool, verbose: bool) -> None:
    """Save every contact and company to a snapshot, for offline dry runs.

    \b
    Example:
        lacrm-etl contacts pull -o contacts.parquet
        lacrm-etl import people.csv -m mapping.yaml --contacts contacts.parquet --dry-run
    """
    configure_logging(verbose)
    if output.suffix.lower() != ".parquet":
        raise BadInput(f"{output}: a snapshot is a parquet file; name it like contacts.parquet")
    with user_errors():
        count = asyncio.run(pipeline.pull_contacts(api, output, progress=show_bars(quiet)))
    click.echo(f"Saved {count:,} contacts to {output}")


@cli.group()
def mapping() -> None:
    """Mapping files: which columns name the contacts and the note."""


@mapping.command("init")
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--sheet", help=SHEET_HELP)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the mapping here instead of printing it.",
)
def mapping_init(source: Path, sheet: str | None, output: Path | None) -> None:
    """Suggest a commented mapping file from SOURCE's headers.

    \b
    Example:
        lacrm-etl mapping init people.xlsx -o mapping.yaml
    """
    with user_errors():
        text = pipeline.suggest_mapping(source, sheet)
        if output is None:
            click.echo(text, nl=False)
            return
        if output.exists():
            raise BadInput(f"{output} exists; choose another name or remove it first")
        output.write_text(text, encoding="utf-8")
    click.echo(f"Wrote {output}: check the guesses, then run lacrm-etl import --dry-run")


cli.add_command(export)
cli.add_command(sandbox)


def main() -> None:
    cli(prog_name="lacrm-etl")
