"""The sandbox's parts in process: store, API functions, seed files, faults, HTTP parsing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from etl.sandbox import api
from etl.sandbox.cli import sandbox
from etl.sandbox.errors import ApiError
from etl.sandbox.faults import FaultInjector, FaultSettings, FaultSettingsError
from etl.sandbox.http import HttpError, Request, read_request
from etl.sandbox.seed import SeedError, load_seed, load_seed_file
from etl.sandbox.server import DROP, Sandbox
from etl.sandbox.store import Store, is_uid
from etl.sandbox.testing import BOB_ID, JANE_ID, JOHN_ID, example_seed

KEY = "test-key"


def people(count: int) -> dict[str, Any]:
    return {"contacts": [{"Name": f"Person {index}"} for index in range(count)]}


def run_api(store: Store, function: str, **parameters: Any) -> Any:
    return api.call(store, function, parameters)


# --- ids and seeds ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (JOHN_ID, True),
        ("0" + JOHN_ID[1:], False),
        (JOHN_ID[:-1], False),
        (int(JOHN_ID), False),
        ("4.006276277128630e+30", False),
        ("٤" * 31, False),
    ],
)
def test_uids_are_31_digit_strings(value: object, expected: bool) -> None:
    assert is_uid(value) is expected


def test_generated_ids_are_deterministic_per_id_seed() -> None:
    first, again, other = (load_seed(people(5), id_seed) for id_seed in (0, 0, 1))
    assert list(first.contacts) == list(again.contacts)
    assert list(first.contacts) != list(other.contacts)
    assert all(is_uid(contact_id) for contact_id in first.contacts)


def test_a_seed_keeps_given_ids_and_links_relationships() -> None:
    store = load_seed(example_seed())
    assert list(store.contacts)[:2] == [JOHN_ID, JANE_ID]
    (relationship,) = store.relationships.values()
    assert relationship.pair == tuple(sorted((JOHN_ID, JANE_ID)))


def test_the_sample_crm_seed_loads() -> None:
    path = Path(__file__).parents[1] / "sample_data" / "crm_seed.json"
    if not path.exists():
        pytest.skip("no sample seed in this checkout")
    assert load_seed_file(path).contacts


@pytest.mark.parametrize(
    "seed",
    [
        [],
        {"people": []},
        {"contacts": [{"Name": "A", "Emails": []}]},
        {"contacts": [{"ContactId": 123, "Name": "A"}]},
        {"contacts": [{"ContactId": JOHN_ID, "Name": "A"}, {"ContactId": JOHN_ID, "Name": "B"}]},
        {"contacts": [{"IsCompany": True}]},
        {"contacts": [{"Name": "A"}], "relationships": [{"ContactId1": JOHN_ID}]},
        {"relationships": [{"ContactId1": JOHN_ID, "ContactId2": JANE_ID}]},
    ],
)
def test_bad_seeds_are_refused_with_a_message(seed: object) -> None:
    with pytest.raises(SeedError):
        load_seed(seed)


def test_an_unreadable_seed_file_is_a_seed_error(tmp_path: Path) -> None:
    path = tmp_path / "seed.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(SeedError, match=r"seed\.json"):
        load_seed_file(path)


# --- API functions ----------------------------------------------------------------------


@given(total=st.integers(0, 30), size=st.integers(1, 12))
def test_pages_cover_every_contact_once_in_order(total: int, size: int) -> None:
    store = load_seed(people(total))
    seen: list[str] = []
    for page in range(1, total // size + 3):
        result = run_api(store, "GetContacts", MaxNumberOfResults=size, Page=page)
        seen += [contact["ContactId"] for contact in result["Results"]]
        assert result["HasMoreResults"] == (page * size < total)
    assert seen == list(store.contacts)


@pytest.mark.parametrize("size", [0, 10_001, True, "ten", 2.5])
def test_bad_page_sizes_are_refused(size: object) -> None:
    with pytest.raises(ApiError):
        run_api(Store(), "GetContacts", MaxNumberOfResults=size)


def test_get_contacts_by_id_skips_unknown_ids_and_refuses_numbers() -> None:
    store = load_seed(example_seed())
    result = run_api(store, "GetContactsById", ContactIds=[BOB_ID, "9" * 31, BOB_ID])
    assert [contact["ContactId"] for contact in result["Results"]] == [BOB_ID]
    with pytest.raises(ApiError):
        run_api(store, "GetContactsById", ContactIds=[int(BOB_ID)])


def test_sorting_by_last_name_descending() -> None:
    store = load_seed(example_seed())
    result = run_api(
        store,
        "GetContacts",
        RecordTypeFilter="Contacts",
        SortBy="LastName",
        SortDirection="Descending",
    )
    assert [contact["Name"]["LastName"] for contact in result["Results"]] == ["Smith", "Doe", "Doe"]


def test_a_contact_cannot_be_related_to_itself() -> None:
    store = load_seed(example_seed())
    with pytest.raises(ApiError):
        run_api(store, "CreateRelationship", ContactId1=JOHN_ID, ContactId2=JOHN_ID)


def test_deleting_a_relationship_detaches_it_from_both_contacts() -> None:
    store = load_seed(example_seed())
    created = run_api(store, "CreateRelationship", ContactId1=BOB_ID, ContactId2=JANE_ID)
    run_api(store, "DeleteRelationship", RelationshipId=created["RelationshipId"])
    for contact_id in (BOB_ID, JANE_ID):
        attached = run_api(store, "GetRelationshipsAttachedToContact", ContactId=contact_id)
        assert created["RelationshipId"] not in {r["RelationshipId"] for r in attached["Results"]}
    with pytest.raises(ApiError):
        run_api(store, "DeleteRelationship", RelationshipId=created["RelationshipId"])


def test_edit_needs_a_note_and_updates_it() -> None:
    store = load_seed(example_seed())
    (relationship_id,) = store.relationships
    with pytest.raises(ApiError):
        run_api(store, "EditRelationship", RelationshipId=relationship_id)
    run_api(store, "EditRelationship", RelationshipId=relationship_id, Note="Divorced")
    assert run_api(store, "GetRelationship", RelationshipId=relationship_id)["Note"] == "Divorced"


# --- faults -----------------------------------------------------------------------------


def test_the_rate_limit_allows_a_burst_of_one_second_then_says_when() -> None:
    faults = FaultInjector(FaultSettings(rate_limit=2))
    assert [faults.retry_after() for _ in range(3)] == [None, None, 1]
    slow = FaultInjector(FaultSettings(rate_limit=0.25))
    assert slow.retry_after() is None
    assert slow.retry_after() == 4


def test_fault_dice_repeat_for_a_seed() -> None:
    def rolls(seed: int) -> list[bool]:
        faults = FaultInjector(FaultSettings(error_rate=0.5), fault_seed=seed)
        return [faults.server_error() for _ in range(40)]

    assert rolls(3) == rolls(3)
    assert rolls(3) != rolls(4)


@pytest.mark.parametrize(
    "changes",
    [{"error_rate": 1.5}, {"lost_rate": -0.1}, {"latency": "1"}, {"down": 1}, {"nope": 1}],
)
def test_bad_fault_changes_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(FaultSettingsError):
        FaultInjector().update(changes)


# --- the server's decisions, without sockets --------------------------------------------


def api_request(function: str, key: str = KEY, **parameters: Any) -> Request:
    body = json.dumps({"Function": function, "Parameters": parameters}).encode()
    return Request("POST", "/v2/", "HTTP/1.1", {"authorization": key}, body)


def answer(sandbox: Sandbox, request: Request) -> Any:
    return asyncio.run(sandbox.handle_api(request))


def test_a_lost_create_is_committed_and_dropped() -> None:
    sandbox = Sandbox(load_seed(example_seed()), KEY, FaultInjector(FaultSettings(lost_rate=1)))
    request = api_request("CreateRelationship", ContactId1=BOB_ID, ContactId2=JANE_ID)
    assert answer(sandbox, request) is DROP
    assert len(sandbox.store.relationships) == 2
    assert sandbox.state()["fault_counts"] == {"lost": 1}


def test_down_drops_without_counting_or_doing_anything() -> None:
    sandbox = Sandbox(load_seed(example_seed()), KEY, FaultInjector(FaultSettings(down=True)))
    request = api_request("CreateRelationship", ContactId1=BOB_ID, ContactId2=JANE_ID)
    assert answer(sandbox, request) is DROP
    assert (sandbox.write_calls, len(sandbox.store.relationships)) == (0, 1)


def test_a_bad_key_is_refused_before_the_function_runs() -> None:
    sandbox = Sandbox(load_seed(example_seed()), KEY)
    request = api_request("CreateRelationship", key="nope", ContactId1=BOB_ID, ContactId2=JANE_ID)
    response = answer(sandbox, request)
    assert response.status == 400
    assert json.loads(response.body)["ErrorCode"] == "InvalidApiKey"
    assert len(sandbox.store.relationships) == 1


# --- HTTP parsing -----------------------------------------------------------------------


class FakeWriter:
    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data


def parse(raw: bytes) -> tuple[Request | None, bytes]:
    async def read() -> tuple[Request | None, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        writer = FakeWriter()
        request = await read_request(reader, writer)  # type: ignore[arg-type]
        return request, writer.written

    return asyncio.run(read())


def test_content_length_and_chunked_bodies_are_read() -> None:
    request, _ = parse(b"POST /v2/ HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
    assert request is not None and request.body == b"hello" and request.keep_alive
    chunked = (
        b"POST /v2/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n"
    )
    request, _ = parse(chunked)
    assert request is not None and request.body == b"hello"


def test_expect_100_continue_is_answered_before_the_body() -> None:
    raw = b"POST /v2/ HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"
    request, written = parse(raw)
    assert request is not None and written == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_connection_persistence_follows_the_http_version() -> None:
    request, _ = parse(b"GET / HTTP/1.0\r\n\r\n")
    assert request is not None and not request.keep_alive
    request, _ = parse(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert request is not None and not request.keep_alive
    assert parse(b"")[0] is None


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n", 413),
    ],
)
def test_malformed_requests_raise_http_errors(raw: bytes, status: int) -> None:
    with pytest.raises(HttpError) as caught:
        parse(raw)
    assert caught.value.status == status


def test_serve_help_ends_with_an_example() -> None:
    output = CliRunner().invoke(sandbox, ["serve", "--help"]).output
    assert output.rstrip().splitlines()[-5].strip() == "Example:"


def test_serve_without_a_key_says_how_to_give_one() -> None:
    result = CliRunner().invoke(sandbox, ["serve", "--port", "0"], env={"LACRM_API_KEY": ""})
    assert result.exit_code == 2
    assert "LACRM_API_KEY" in result.output
