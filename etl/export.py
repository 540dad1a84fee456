"""Every relationship of the account (or of some contacts) as a spreadsheet: a backup before a
migration, re-importable with mappings/export.yaml (`match: id` on both sides).

The API lists relationships per contact only, so the export reads the directory, then each
contact's relationships, and keeps each RelationshipId once (both of its contacts list it).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from contextlib import aclosing
from pathlib import Path
from typing import Any

import polars as pl
from tqdm import tqdm

from etl import directory, spreadsheet
from etl.lacrm import MAX_PAGE_SIZE, ApiError, LacrmClient, run_pool

ATTACHED = "GetRelationshipsAttachedToContact"
EXTRA_WORKERS = 2
EXPORT_SCHEMA = {
    "relationship_id": pl.String,
    "contact_id_1": pl.String,
    "contact_1": pl.String,
    "contact_id_2": pl.String,
    "contact_2": pl.String,
    "note": pl.String,
    "date_created": pl.String,
    "date_edited": pl.String,
}
ID_COLUMNS = ("relationship_id", "contact_id_1", "contact_id_2")
FORMATS = (".csv", ".xlsx")
SHEET = "relationships"

log = logging.getLogger(__name__)


class ExportError(Exception):
    """An export that cannot be written, with what to do instead."""


def check_output(path: Path) -> None:
    if path.suffix.lower() not in FORMATS:
        raise ExportError(f"{path}: the export is written as .csv or .xlsx; name it FILE.xlsx")


async def read_relationships(
    client: LacrmClient, contact_ids: Iterable[str] | None = None, *, progress: bool = False
) -> pl.DataFrame:
    """The relationships of the given contacts (default: of every contact), each once."""
    contacts = directory.empty_directory()
    if contact_ids is None:
        contacts = await directory.fetch(client, progress=progress)
        wanted = contacts.get_column("contact_id").to_list()
    else:
        wanted = list(dict.fromkeys(str(contact).strip() for contact in contact_ids))
    by_id: dict[str, dict[str, Any]] = {}
    bar = tqdm(
        total=len(wanted),
        desc="Reading relationships",
        unit=" contacts",
        file=sys.stderr,
        disable=not progress,
    )

    async def read(contact: str) -> None:
        for relationship in await _attached(client, contact, named=contact_ids is not None):
            by_id.setdefault(str(relationship["RelationshipId"]), relationship)
        bar.update(1)

    with bar:
        await run_pool(wanted, read, client.concurrency + EXTRA_WORKERS)
    log.info("export: %d relationships of %d contacts", len(by_id), len(wanted))
    return _names_from(relationships_frame(by_id.values()), contacts)


def relationships_frame(relationships: Iterable[dict[str, Any]]) -> pl.DataFrame:
    """GetRelationship-shaped results -> one row each, ids as strings, oldest first."""
    rows = [_row(relationship) for relationship in relationships]
    frame = pl.DataFrame(rows, schema=EXPORT_SCHEMA, orient="row")
    return frame.sort("date_created", "relationship_id", nulls_last=True)


def write_export(frame: pl.DataFrame, path: Path) -> None:
    """CSV or XLSX by the file's extension; formulas neutralised, ids as text."""
    check_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        spreadsheet.neutralise_formulas(frame).write_csv(path)
        return
    workbook = spreadsheet.new_workbook()
    spreadsheet.write_table(workbook, SHEET, frame, id_columns=ID_COLUMNS)
    workbook.save(path)


def _names_from(frame: pl.DataFrame, contacts: pl.DataFrame) -> pl.DataFrame:
    """Names the relationships did not carry, from the directory when it was read."""
    names = contacts.select("contact_id", "name")
    for side in ("1", "2"):
        frame = (
            frame.join(names, left_on=f"contact_id_{side}", right_on="contact_id", how="left")
            .with_columns(pl.coalesce(f"contact_{side}", "name").alias(f"contact_{side}"))
            .drop("name")
        )
    return frame


async def _attached(client: LacrmClient, contact: str, *, named: bool) -> list[dict[str, Any]]:
    """A contact's relationships; `named`: the user gave this id, so an unknown one is an error."""
    found: list[dict[str, Any]] = []
    try:
        params = {"ContactId": contact}
        async with aclosing(client.paged(ATTACHED, params, page_size=MAX_PAGE_SIZE)) as pages:
            async for page in pages:
                found += [rel for rel in page if rel.get("RelationshipId")]
    except ApiError as error:
        if named:
            raise ExportError(
                f"--contact {contact}: the CRM has no such contact ({error.description}); "
                "use the 31-digit ContactId shown in LACRM. Nothing was exported"
            ) from None
        # A contact deleted since the directory was read holds no relationships.
        log.warning("reading relationships of contact %s: %s", contact, error)
    return found


def _row(relationship: dict[str, Any]) -> tuple[str | None, ...]:
    return (
        _id(relationship.get("RelationshipId")),
        _id(relationship.get("ContactId1")),
        _name(relationship.get("Contact1MetaData")),
        _id(relationship.get("ContactId2")),
        _name(relationship.get("Contact2MetaData")),
        _text(relationship.get("Note")),
        _text(relationship.get("DateCreated")),
        _text(relationship.get("DateEdited")),
    )


def _id(value: Any) -> str | None:
    # A float has already lost digits: refuse rather than write a wrong id to a backup.
    if isinstance(value, float):
        raise ValueError(f"id {value!r} arrived as a float; ids must be strings")
    return _text(value)


def _name(meta: Any) -> str | None:
    return _text(meta.get("Name")) if isinstance(meta, dict) else None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if text.strip() else None
