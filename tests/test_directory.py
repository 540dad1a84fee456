from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from etl.directory import (
    DIRECTORY_SCHEMA,
    PAGE_SIZE,
    SnapshotError,
    contacts_frame,
    fetch,
    load_snapshot,
    save_snapshot,
    snapshot_age,
)

PERSON = {
    "ContactId": "4006276277128634521894561234567",
    "IsCompany": False,
    "CompanyId": "4006276277128634521894561230000",
    "Name": {
        "Salutation": "Dr.",
        "FirstName": "José",
        "MiddleName": "Luis",
        "LastName": "Müller",
        "Suffix": "Jr",
    },
    "Company Name": "Acme Ltd",
    "Email": [
        {"Text": " Jose@Example.com ", "Type": "Work"},
        {"Text": "jose.home@example.com", "Type": "Personal"},
    ],
    "Phone": [],
    "AssignedTo": "1",
    "DateCreated": "2025-01-20T23:42:57-08:00",
    "LastUpdate": "2025-01-20T23:42:57-08:00",
}
COMPANY = {
    "ContactId": "4006276277128634521894561230000",
    "IsCompany": True,
    "Name": {"Salutation": "", "FirstName": "", "MiddleName": "", "LastName": "", "Suffix": ""},
    "Company Name": "Acme Ltd",
    "Email": [],
}


def test_contacts_frame_converts_a_person_and_a_company() -> None:
    frame = contacts_frame([PERSON, COMPANY])
    assert frame.schema == pl.Schema(DIRECTORY_SCHEMA)
    person, company = frame.iter_rows(named=True)
    assert person == {
        "contact_id": "4006276277128634521894561234567",
        "is_company": False,
        "name": "José Luis Müller Jr",
        "salutation": "Dr.",
        "first_name": "José",
        "middle_name": "Luis",
        "last_name": "Müller",
        "suffix": "Jr",
        "company_name": "Acme Ltd",
        "emails": ["Jose@Example.com", "jose.home@example.com"],
    }
    assert company["is_company"] is True
    assert company["name"] == "Acme Ltd"
    assert company["first_name"] is None
    assert company["emails"] == []


def test_contacts_frame_of_nothing_has_the_schema() -> None:
    assert contacts_frame([]).schema == pl.Schema(DIRECTORY_SCHEMA)


def test_ids_stay_strings_and_floats_are_refused() -> None:
    frame = contacts_frame([{**PERSON, "ContactId": "0000000000000000000000000000001"}])
    assert frame["contact_id"].to_list() == ["0000000000000000000000000000001"]
    with pytest.raises(ValueError, match="float"):
        contacts_frame([{**PERSON, "ContactId": 4.006276277128634e30}])


def test_missing_fields_are_tolerated() -> None:
    frame = contacts_frame([{"ContactId": "1" * 31, "IsCompany": "0", "Name": None}])
    row = frame.row(0, named=True)
    assert row["name"] == "" and row["emails"] == [] and row["is_company"] is False


class FakeClient:
    def __init__(self, pages: list[list[dict[str, Any]]]) -> None:
        self.pages = pages
        self.calls: list[tuple[str, dict[str, Any], int]] = []

    async def paged(
        self, function: str, params: dict[str, Any], page_size: int
    ) -> AsyncIterator[list[dict[str, Any]]]:
        self.calls.append((function, params, page_size))
        for page in self.pages:
            yield page


def numbered(start: int, count: int) -> list[dict[str, Any]]:
    return [{**PERSON, "ContactId": str(10**30 + n)} for n in range(start, start + count)]


def test_fetch_reads_every_page_in_one_paged_call() -> None:
    client = FakeClient([numbered(0, 3), numbered(3, 2), [COMPANY]])
    frame = asyncio.run(fetch(client))
    assert frame.height == 6
    assert frame.schema == pl.Schema(DIRECTORY_SCHEMA)
    assert client.calls == [("GetContacts", {}, PAGE_SIZE)]
    assert PAGE_SIZE == 10_000


def test_fetch_of_an_empty_account_is_empty() -> None:
    frame = asyncio.run(fetch(FakeClient([])))
    assert frame.height == 0 and frame.schema == pl.Schema(DIRECTORY_SCHEMA)


def test_fetch_shows_progress_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(fetch(FakeClient([numbered(0, 4)]), progress=True))
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "contacts" in captured.err


def test_a_snapshot_round_trips_with_its_time(tmp_path: Path) -> None:
    frame = contacts_frame([PERSON, COMPANY])
    pulled_at = datetime(2025, 1, 20, 12, 30, tzinfo=UTC)
    path = tmp_path / "contacts.parquet"
    save_snapshot(frame, path, pulled_at=pulled_at)
    loaded, when = load_snapshot(path)
    assert loaded.equals(frame)
    assert when == pulled_at


def test_a_file_that_is_not_a_snapshot_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "contacts.csv"
    text.write_text("a,b\n1,2\n")
    with pytest.raises(SnapshotError, match="not a contacts snapshot"):
        load_snapshot(text)
    other = tmp_path / "other.parquet"
    pl.DataFrame({"a": [1]}).write_parquet(other)
    with pytest.raises(SnapshotError, match="not a contacts snapshot"):
        load_snapshot(other)
    with pytest.raises(SnapshotError, match="No contacts snapshot"):
        load_snapshot(tmp_path / "absent.parquet")


def test_snapshot_age_says_when_it_is_old() -> None:
    now = datetime(2025, 1, 20, 12, tzinfo=UTC)
    fresh = snapshot_age(now - timedelta(hours=3), now=now)
    assert not fresh.is_old and fresh.text == "pulled 3 h ago" and fresh.warning is None
    old = snapshot_age(now - timedelta(days=3), now=now)
    assert old.is_old and old.text == "pulled 3 days ago"
    assert old.warning is not None and "contacts pull" in old.warning
    assert snapshot_age(now - timedelta(minutes=5), now=now).text == "pulled 5 min ago"
