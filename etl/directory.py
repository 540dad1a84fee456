"""The contact directory: every contact and company of the account, as one DataFrame.

Read through paged GetContacts (10,000 a page) or from a parquet snapshot written by
`lacrm-etl contacts pull`, so a dry run can work offline.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import polars as pl
from tqdm import tqdm

DIRECTORY_SCHEMA: dict[str, pl.DataType] = {
    "contact_id": pl.String(),
    "is_company": pl.Boolean(),
    "name": pl.String(),
    "salutation": pl.String(),
    "first_name": pl.String(),
    "middle_name": pl.String(),
    "last_name": pl.String(),
    "suffix": pl.String(),
    "company_name": pl.String(),
    "emails": pl.List(pl.String()),
}

PAGE_SIZE = 10_000
SNAPSHOT_MAX_AGE = timedelta(hours=24)
_SNAPSHOT_MARKER = "lacrm_etl_snapshot"
_SNAPSHOT_VERSION = "1"
_PULLED_AT = "pulled_at"
_EMAIL_SEPARATOR = "\x1f"

_NAME_PARTS = {
    "salutation": "Salutation",
    "first_name": "FirstName",
    "middle_name": "MiddleName",
    "last_name": "LastName",
    "suffix": "Suffix",
}


class PagedClient(Protocol):
    """The part of the LACRM client the directory needs."""

    def paged(
        self, function: str, params: dict[str, Any], page_size: int
    ) -> AsyncIterator[list[dict[str, Any]]]: ...


class SnapshotError(Exception):
    """A snapshot file that cannot be used, with a message a person can act on."""


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _contact_id(value: Any) -> str:
    # A float here would already have lost digits: refuse rather than print a wrong id.
    if isinstance(value, float):
        raise ValueError(f"ContactId {value!r} arrived as a float; ids must be strings")
    text = _text(value)
    if text is None:
        raise ValueError("a contact without a ContactId")
    return text


def _is_company(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes"}
    return bool(value)


def _emails(value: Any) -> list[str]:
    if not value:
        return []
    entries = value if isinstance(value, list) else [value]
    emails = []
    for entry in entries:
        text = _text(entry.get("Text") if isinstance(entry, Mapping) else entry)
        if text is not None:
            emails.append(text)
    return emails


def _display_name(is_company: bool, parts: dict[str, str | None], company: str | None) -> str:
    if is_company:
        return company or ""
    words = (parts["first_name"], parts["middle_name"], parts["last_name"], parts["suffix"])
    return " ".join(word for word in words if word)


def _name_parts(name: Any) -> dict[str, str | None]:
    if isinstance(name, Mapping):
        return {column: _text(name.get(key)) for column, key in _NAME_PARTS.items()}
    parts: dict[str, str | None] = dict.fromkeys(_NAME_PARTS)
    # Some shapes give a person's name as one string: keep it whole as the first name.
    parts["first_name"] = _text(name)
    return parts


def _contact_row(result: Mapping[str, Any]) -> dict[str, Any]:
    is_company = _is_company(result.get("IsCompany"))
    parts = _name_parts(result.get("Name"))
    company = _text(result.get("Company Name"))
    return {
        "contact_id": _contact_id(result.get("ContactId")),
        "is_company": is_company,
        "name": _display_name(is_company, parts, company),
        **parts,
        "company_name": company,
        "emails": _emails(result.get("Email")),
    }


def contacts_frame(results: Iterable[Mapping[str, Any]]) -> pl.DataFrame:
    """GetContacts Results (as LACRM returns them) -> a frame with DIRECTORY_SCHEMA."""
    columns: dict[str, list[Any]] = {column: [] for column in DIRECTORY_SCHEMA}
    for result in results:
        for column, value in _contact_row(result).items():
            columns[column].append(value)
    # Building a List column from Python lists is slow; one joined string per contact is not.
    emails = [_EMAIL_SEPARATOR.join(each) for each in columns.pop("emails")]
    frame = pl.DataFrame(
        {
            **{
                name: pl.Series(name, values, dtype=DIRECTORY_SCHEMA[name])
                for name, values in columns.items()
            },
            "emails": pl.Series("emails", emails, dtype=pl.String),
        }
    )
    return frame.with_columns(
        emails=pl.col.emails.str.split(_EMAIL_SEPARATOR).list.eval(
            pl.element().filter(pl.element() != "")
        )
    )


def empty_directory() -> pl.DataFrame:
    return pl.DataFrame(schema=DIRECTORY_SCHEMA)


async def fetch(client: PagedClient, progress: bool = False) -> pl.DataFrame:
    """Every contact and company of the account, one GetContacts call per 10,000."""
    frames = [empty_directory()]
    with tqdm(
        desc="Reading contacts", unit=" contacts", file=sys.stderr, disable=not progress
    ) as bar:
        async for page in client.paged("GetContacts", {}, page_size=PAGE_SIZE):
            frames.append(contacts_frame(page))
            bar.update(len(page))
    return pl.concat(frames, how="vertical").unique("contact_id", keep="first", maintain_order=True)


def save_snapshot(frame: pl.DataFrame, path: str | Path, pulled_at: datetime | None = None) -> None:
    """Write the directory as parquet, with the moment it was read in the file's metadata."""
    moment = (pulled_at or datetime.now(UTC)).astimezone(UTC)
    frame.select(list(DIRECTORY_SCHEMA)).cast(DIRECTORY_SCHEMA).write_parquet(
        path,
        metadata={
            _SNAPSHOT_MARKER: _SNAPSHOT_VERSION,
            _PULLED_AT: moment.isoformat(),
        },
    )


def _snapshot_metadata(path: Path) -> dict[str, str]:
    try:
        return pl.read_parquet_metadata(path)
    except Exception as error:
        raise SnapshotError(
            f"{path} is not a contacts snapshot (it is not a parquet file: {error}). "
            "Write one with `lacrm-etl contacts pull -o FILE`."
        ) from error


def load_snapshot(path: str | Path) -> tuple[pl.DataFrame, datetime]:
    """Read a snapshot written by save_snapshot: (directory, pulled_at in UTC)."""
    path = Path(path)
    if not path.is_file():
        raise SnapshotError(
            f"No contacts snapshot at {path}. Write one with `lacrm-etl contacts pull -o {path}`."
        )
    metadata = _snapshot_metadata(path)
    if metadata.get(_SNAPSHOT_MARKER) != _SNAPSHOT_VERSION or _PULLED_AT not in metadata:
        raise SnapshotError(
            f"{path} is a parquet file but not a contacts snapshot written by lacrm-etl. "
            "Write one with `lacrm-etl contacts pull -o FILE`."
        )
    frame = pl.read_parquet(path)
    if frame.schema != pl.Schema(DIRECTORY_SCHEMA):
        raise SnapshotError(
            f"{path} has the columns of another version of lacrm-etl. "
            "Pull a fresh one with `lacrm-etl contacts pull -o FILE`."
        )
    return frame, datetime.fromisoformat(metadata[_PULLED_AT]).astimezone(UTC)


@dataclass(frozen=True)
class SnapshotAge:
    age: timedelta
    is_old: bool

    @property
    def text(self) -> str:
        """'pulled 3 h ago' style wording for the terminal."""
        hours = self.age.total_seconds() / 3600
        if hours < 1:
            return f"pulled {max(int(self.age.total_seconds() // 60), 0)} min ago"
        if hours < 48:
            return f"pulled {int(hours)} h ago"
        return f"pulled {int(hours // 24)} days ago"

    @property
    def warning(self) -> str | None:
        if not self.is_old:
            return None
        return (
            f"The contacts snapshot was {self.text}: contacts added since then will not be "
            "found. Pull a fresh one with `lacrm-etl contacts pull -o FILE`."
        )


def snapshot_age(pulled_at: datetime, now: datetime | None = None) -> SnapshotAge:
    """How old a snapshot is, and whether it is older than a day."""
    age = (now or datetime.now(UTC)) - pulled_at
    return SnapshotAge(age=age, is_old=age > SNAPSHOT_MAX_AGE)
