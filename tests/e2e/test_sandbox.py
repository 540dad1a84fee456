"""The sandbox server over real HTTP: what a LACRM client relies on, faults included."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from etl.sandbox.testing import (
    ACME_ID,
    BOB_ID,
    JANE_ID,
    JOHN_ID,
    JOHN_JANE_RELATIONSHIP_ID,
    SERVE_COMMAND,
    RunningSandbox,
    example_seed,
    start_sandbox,
)

FAULTS_OFF = {
    "latency": 0.0,
    "rate_limit": None,
    "error_rate": 0.0,
    "lost_rate": 0.0,
    "down": False,
}


@pytest.fixture(scope="module")
def shared() -> Iterator[RunningSandbox]:
    """One sandbox for the tests that only read: starting a process costs most of a second."""
    with start_sandbox(seed=example_seed()) as running:
        yield running


@pytest.fixture(scope="module")
def crm_process() -> Iterator[RunningSandbox]:
    with start_sandbox(seed=example_seed()) as running:
        yield running


@pytest.fixture
def crm(crm_process: RunningSandbox) -> Iterator[RunningSandbox]:
    """The module's writable sandbox: counters zeroed before each test, faults off after.

    Tests that share it assert on what they changed, not on totals.
    """
    crm_process.reset_counters()
    yield crm_process
    crm_process.set_faults(**FAULTS_OFF)


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"ErrorCode", "ErrorDescription"}
    assert body["ErrorCode"] and body["ErrorDescription"]
    return body


def assert_uid(value: object) -> None:
    assert isinstance(value, str)
    assert len(value) == 31 and value.isdigit() and value[0] != "0"


# --- transport and errors ---------------------------------------------------------------


def test_the_start_line_names_a_loopback_url(shared: RunningSandbox) -> None:
    assert shared.url.startswith("http://127.0.0.1:")
    assert shared.url.endswith("/v2/")


def test_a_bad_or_missing_key_is_a_400_error_object(shared: RunningSandbox) -> None:
    error_of(shared.post("GetContacts", api_key="wrong-key"))
    error_of(shared.post("GetContacts", api_key=""))


def test_both_api_paths_answer_and_other_methods_do_not(shared: RunningSandbox) -> None:
    body = {"Function": "GetContact", "Parameters": {"ContactId": JOHN_ID}}
    headers = {"Authorization": shared.api_key}
    for path in ("/v2/", "/v2"):
        response = httpx.post(shared.base_url + path, json=body, headers=headers)
        assert response.status_code == 200
        assert response.json()["ContactId"] == JOHN_ID
    assert httpx.get(shared.url, headers=headers).status_code == 405


@pytest.mark.parametrize(
    ("function", "parameters"),
    [
        ("NoSuchFunction", {}),
        ("GetContact", {}),
        ("GetContact", {"ContactId": int(JOHN_ID)}),
        ("GetContact", {"ContactId": "1" * 31}),
        ("CreateRelationship", {"ContactId1": JOHN_ID, "ContactId2": "2" * 31}),
        ("EditRelationship", {"RelationshipId": JOHN_JANE_RELATIONSHIP_ID}),
        ("GetRelationship", {"RelationshipId": "3" * 31}),
        ("GetContacts", {"MaxNumberOfResults": 10_001}),
        ("GetContacts", {"Page": 0}),
        ("GetContacts", {"RecordTypeFilter": "People"}),
    ],
)
def test_refusals_are_400_error_objects(
    shared: RunningSandbox, function: str, parameters: dict[str, Any]
) -> None:
    error_of(shared.post(function, parameters))


def test_a_body_that_is_not_a_call_is_a_400_error_object(shared: RunningSandbox) -> None:
    headers = {"Authorization": shared.api_key}
    error_of(httpx.post(shared.url, content=b"not json", headers=headers))
    error_of(httpx.post(shared.url, json={"Parameters": {}}, headers=headers))


def test_keep_alive_serves_pipelined_requests_on_one_connection(shared: RunningSandbox) -> None:
    port = int(shared.url.split(":")[2].split("/")[0])
    body = b'{"Function": "GetContact", "Parameters": {"ContactId": "%s"}}' % JOHN_ID.encode()
    request = (
        b"POST /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (shared.api_key.encode(), len(body), body)
    )
    chunked = (
        b"POST /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
        % (shared.api_key.encode(), len(body), body)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request + request + chunked)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    assert received.count(b"HTTP/1.1 200 OK") == 3
    assert received.count(JOHN_ID.encode()) == 3


# --- contacts ---------------------------------------------------------------------------


def test_contacts_have_the_api_shape_and_string_ids(shared: RunningSandbox) -> None:
    result = shared.call("GetContacts")
    assert result["HasMoreResults"] is False
    contacts = result["Results"]
    assert [c["ContactId"] for c in contacts] == [
        c["ContactId"] for c in example_seed()["contacts"]
    ]
    for contact in contacts:
        assert_uid(contact["ContactId"])
        assert set(contact) >= {"ContactId", "IsCompany", "CompanyId", "Name", "Company Name"}
        assert set(contact) >= {"Email", "Phone", "AssignedTo", "DateCreated", "LastUpdate"}
    john = contacts[0]
    assert john["Name"]["FirstName"] == "John" and john["Name"]["LastName"] == "Doe"
    assert john["CompanyId"] == ACME_ID
    assert john["Email"] == [{"Text": "john.doe@example.com", "Type": "Work"}]


def test_search_matches_names_emails_and_companies_ignoring_case(shared: RunningSandbox) -> None:
    def ids(**parameters: Any) -> list[str]:
        return [c["ContactId"] for c in shared.call("GetContacts", **parameters)["Results"]]

    assert ids(SearchTerms="doe") == [JOHN_ID, JANE_ID]
    assert ids(SearchTerms="JANE@EXAMPLE.ORG") == [JANE_ID]
    assert ids(SearchTerms="acme") == [JOHN_ID, ACME_ID]
    assert ids(SearchTerms="acme", RecordTypeFilter="Companies") == [ACME_ID]
    assert ids(SearchTerms="acme", RecordTypeFilter="Contacts") == [JOHN_ID]
    assert ids(SearchTerms="nobody") == []
    assert ids(SortBy="FirstName", RecordTypeFilter="Contacts") == [BOB_ID, JANE_ID, JOHN_ID]


def test_paging_reports_more_results_and_caps_the_page_size(shared: RunningSandbox) -> None:
    pages = [shared.call("GetContacts", MaxNumberOfResults=2, Page=page) for page in (1, 2, 3, 4)]
    assert [len(page["Results"]) for page in pages] == [2, 2, 1, 0]
    assert [page["HasMoreResults"] for page in pages] == [True, True, False, False]
    assert shared.call("GetContacts", MaxNumberOfResults=10_000)["HasMoreResults"] is False
    error_of(shared.post("GetContacts", {"MaxNumberOfResults": 10_001}))
    by_id = shared.call("GetContactsById", ContactIds=[JANE_ID, JOHN_ID], MaxNumberOfResults=1)
    assert [c["ContactId"] for c in by_id["Results"]] == [JANE_ID]
    assert by_id["HasMoreResults"] is True


def test_create_contact_returns_a_new_string_id(crm: RunningSandbox) -> None:
    contacts_before = crm.state()["contacts"]
    person = crm.call("CreateContact", Name="Ann B Carter", Email=[{"Text": "a@c.example"}])
    company = crm.call("CreateContact", IsCompany=True, **{"Company Name": "Carter Co"})
    assert_uid(person["ContactId"])
    ann = crm.call("GetContact", ContactId=person["ContactId"])
    assert (ann["Name"]["FirstName"], ann["Name"]["MiddleName"]) == ("Ann", "B")
    assert crm.call("GetContact", ContactId=company["ContactId"])["IsCompany"] is True
    error_of(crm.post("CreateContact", {"IsCompany": True, "Company Name": "carter co"}))
    assert crm.state()["contacts"] == contacts_before + 2


# --- relationships ----------------------------------------------------------------------


def test_relationships_round_trip_in_the_documented_shape(crm: RunningSandbox) -> None:
    created = crm.call("CreateRelationship", ContactId1=BOB_ID, ContactId2=ACME_ID, Note="x")
    relationship_id = created["RelationshipId"]
    assert_uid(relationship_id)
    assert crm.call("EditRelationship", RelationshipId=relationship_id, Note="Consultant") == {}
    relationship = crm.call("GetRelationship", RelationshipId=relationship_id)
    assert relationship["Note"] == "Consultant"
    assert relationship["ContactId1"] == BOB_ID and relationship["ContactId2"] == ACME_ID
    assert relationship["Contact1MetaData"] == {"Name": "Bob Smith"}
    assert relationship["Contact2MetaData"] == {"Name": "Acme Ltd"}
    assert set(relationship["CreatedByMetaData"]) == {"FirstName", "LastName"}
    assert relationship["DateEdited"][-6] in "+-"  # ISO 8601 with an offset
    attached = crm.call("GetRelationshipsAttachedToContact", ContactId=ACME_ID)
    assert relationship_id in {r["RelationshipId"] for r in attached["Results"]}
    assert crm.call("DeleteRelationship", RelationshipId=relationship_id) == {}
    error_of(crm.post("GetRelationship", {"RelationshipId": relationship_id}))


def test_relationships_are_found_from_either_side_and_paged(crm: RunningSandbox) -> None:
    x, y, z = (crm.call("CreateContact", Name=name)["ContactId"] for name in ("X A", "Y B", "Z C"))
    oldest = crm.call("CreateRelationship", ContactId1=x, ContactId2=y)["RelationshipId"]
    crm.call("CreateRelationship", ContactId1=z, ContactId2=x)
    crm.call("CreateRelationship", ContactId1=x, ContactId2=JOHN_ID)

    def page(number: int) -> dict[str, Any]:
        return crm.call(
            "GetRelationshipsAttachedToContact", ContactId=x, MaxNumberOfResults=2, Page=number
        )

    first, second = page(1), page(2)
    assert (len(first["Results"]), first["HasMoreResults"]) == (2, True)
    assert (len(second["Results"]), second["HasMoreResults"]) == (1, False)
    assert first["Results"][0]["RelationshipId"] == oldest
    assert first["Results"][1]["ContactId2"] == x


def test_the_crm_does_not_prevent_duplicates(sandbox: RunningSandbox) -> None:
    one = sandbox.call("CreateRelationship", ContactId1=JOHN_ID, ContactId2=JANE_ID, Note="again")
    two = sandbox.call("CreateRelationship", ContactId1=JANE_ID, ContactId2=JOHN_ID, Note="again")
    assert one["RelationshipId"] != two["RelationshipId"]
    state = sandbox.state()
    assert state["duplicate_pairs"] == [[min(JOHN_ID, JANE_ID), max(JOHN_ID, JANE_ID), 3]]
    assert len(state["relationships"]) == 3


# --- faults -----------------------------------------------------------------------------


def relationship_count(crm: RunningSandbox) -> int:
    return len(crm.state()["relationships"])


def test_rate_limit_answers_429_with_retry_after(crm: RunningSandbox) -> None:
    crm.set_faults(rate_limit=2)
    statuses = [crm.post("GetContact", {"ContactId": JOHN_ID}) for _ in range(4)]
    limited = [response for response in statuses if response.status_code == 429]
    assert [response.status_code for response in statuses[:2]] == [200, 200]
    assert limited, "requests over the limit must be refused"
    assert all(int(response.headers["Retry-After"]) >= 1 for response in limited)
    crm.set_faults(rate_limit=None)
    assert crm.post("GetContact", {"ContactId": JOHN_ID}).status_code == 200


def test_server_errors_do_nothing_but_are_counted(crm: RunningSandbox) -> None:
    before = relationship_count(crm)
    crm.set_faults(error_rate=1.0)
    response = crm.post("CreateRelationship", {"ContactId1": BOB_ID, "ContactId2": JANE_ID})
    assert response.status_code == 500
    state = crm.state()
    assert len(state["relationships"]) == before
    assert state["write_calls"] == 1 and state["calls"] == {"CreateRelationship": 1}


def test_a_lost_create_commits_but_the_client_sees_a_dropped_connection(
    crm: RunningSandbox,
) -> None:
    crm.set_faults(lost_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        crm.post(
            "CreateRelationship", {"ContactId1": BOB_ID, "ContactId2": JANE_ID, "Note": "lost"}
        )
    assert crm.post("GetContact", {"ContactId": BOB_ID}).status_code == 200
    notes = {(r["ContactId1"], r["ContactId2"], r["Note"]) for r in crm.state()["relationships"]}
    assert (BOB_ID, JANE_ID, "lost") in notes


def test_lost_rate_is_repeatable_with_a_fault_seed(crm: RunningSandbox) -> None:
    def lost_pattern() -> list[bool]:
        crm.set_faults(lost_rate=0.5, fault_seed=7)
        pattern = []
        for _ in range(12):
            try:
                crm.post("CreateRelationship", {"ContactId1": BOB_ID, "ContactId2": JANE_ID})
                pattern.append(False)
            except httpx.RemoteProtocolError:
                pattern.append(True)
        return pattern

    before = relationship_count(crm)
    first = lost_pattern()
    assert first == lost_pattern()
    assert any(first) and not all(first)
    assert relationship_count(crm) == before + 24, "lost creates are committed too"


def test_latency_delays_every_api_request(crm: RunningSandbox) -> None:
    crm.set_faults(latency=0.3)
    started = time.monotonic()
    crm.post("GetContact", {"ContactId": JOHN_ID})
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    crm.state()
    assert time.monotonic() - started < 0.3, "control endpoints see no faults"


def test_slow_requests_on_many_connections_overlap(crm: RunningSandbox) -> None:
    crm.set_faults(latency=0.4)
    body = {"Function": "GetContact", "Parameters": {"ContactId": JOHN_ID}}

    async def eight_at_once() -> list[int]:
        async with httpx.AsyncClient(headers={"Authorization": crm.api_key}) as client:
            requests = [client.post(crm.url, json=body) for _ in range(8)]
            return [response.status_code for response in await asyncio.gather(*requests)]

    started = time.monotonic()
    assert asyncio.run(eight_at_once()) == [200] * 8
    assert time.monotonic() - started < 8 * 0.4 / 2


def test_down_drops_every_api_request_without_effect(crm: RunningSandbox) -> None:
    before = relationship_count(crm)
    crm.set_faults(down=True)
    with pytest.raises(httpx.TransportError):
        crm.post("CreateRelationship", {"ContactId1": BOB_ID, "ContactId2": JANE_ID})
    state = crm.state()
    assert len(state["relationships"]) == before and state["write_calls"] == 0
    crm.set_faults(down=False)
    assert crm.post("GetContact", {"ContactId": BOB_ID}).status_code == 200


def test_bad_fault_settings_are_refused(crm: RunningSandbox) -> None:
    for bad in ({"error_rate": 2}, {"latency": -1}, {"flood": True}, {"down": "yes"}):
        response = httpx.post(crm.base_url + "/_sandbox/faults", json=bad)
        assert response.status_code == 400
    assert crm.state()["faults"] == FAULTS_OFF


def test_faults_set_at_start_and_sigterm_stops_cleanly(start_sandbox: Any) -> None:
    running = start_sandbox(error_rate=1.0, latency=0.05, rate_limit=50, lost_rate=0.5)
    assert running.post("GetContacts").status_code == 500
    assert running.state()["faults"] == {
        "latency": 0.05, "rate_limit": 50.0, "error_rate": 1.0, "lost_rate": 0.5, "down": False
    }  # fmt: skip
    running.process.terminate()
    assert running.process.wait(5) == 0


# --- state ------------------------------------------------------------------------------


def test_state_counts_calls_and_writes_until_reset(crm: RunningSandbox) -> None:
    before = crm.state()
    crm.call("GetContact", ContactId=JOHN_ID)
    crm.call("CreateRelationship", ContactId1=BOB_ID, ContactId2=ACME_ID)
    crm.post("EditRelationship", {"RelationshipId": "9" * 31, "Note": "no such"})
    state = crm.state()
    assert state["calls"] == {"GetContact": 1, "CreateRelationship": 1, "EditRelationship": 1}
    assert state["write_calls"] == 2
    assert state["contacts"] == before["contacts"]
    assert len(state["relationships"]) == len(before["relationships"]) + 1
    assert state["relationships"][0]["RelationshipId"] == JOHN_JANE_RELATIONSHIP_ID
    crm.reset_counters()
    state = crm.state()
    assert (state["calls"], state["write_calls"]) == ({}, 0)
    assert len(state["relationships"]) == len(before["relationships"]) + 1


def test_the_key_is_never_printed_and_ctrl_c_stops_cleanly(tmp_path: Any) -> None:
    secret = "sandbox-secret-0123456789"
    command = [sys.executable, *SERVE_COMMAND]
    env = {**os.environ, "LACRM_API_KEY": secret}
    with (tmp_path / "err").open("wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, env=env)
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline().decode()
        assert first_line.startswith("Sandbox LACRM listening on http://127.0.0.1:")
        url = first_line.split()[-1]
        httpx.post(url, json={"Function": "GetContacts"}, headers={"Authorization": "wrong"})
        process.send_signal(signal.SIGINT)
        assert process.wait(5) == 0
        output = first_line + process.stdout.read().decode()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(5)
        if process.stdout is not None:
            process.stdout.close()
    assert output.count("\n") == 1
    assert secret not in output + (tmp_path / "err").read_text()
