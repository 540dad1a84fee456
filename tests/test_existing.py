"""Vertex cover of the pair graph, and the existing-pairs check read at its cost."""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import httpx
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.existing import EXISTING_SCHEMA, existing_pairs, vertex_cover
from etl.lacrm import LacrmClient

COMPANIES = [f"9{n:030d}" for n in range(10)]
PEOPLE = [f"1{n:030d}" for n in range(2000)]


def pairs_frame(pairs: list[tuple[str, str]]) -> pl.DataFrame:
    ordered = [(min(a, b), max(a, b)) for a, b in pairs]
    return pl.DataFrame(ordered, schema={"pair_lo": pl.String, "pair_hi": pl.String}, orient="row")


def star() -> list[tuple[str, str]]:
    return [(c, PEOPLE[i * 200 + j]) for i, c in enumerate(COMPANIES) for j in range(200)]


def test_a_star_is_covered_by_its_centres() -> None:
    assert vertex_cover(pairs_frame(star())) == sorted(COMPANIES)


def test_self_pairs_nulls_and_repeats_are_ignored() -> None:
    a, b, c = "1" * 31, "2" * 31, "3" * 31
    frame = pl.DataFrame(
        {"pair_lo": [a, a, b, None, c], "pair_hi": [b, b, a, c, c]},
        schema={"pair_lo": pl.String, "pair_hi": pl.String},
    )
    assert vertex_cover(frame) == [a]
    assert vertex_cover(frame.clear()) == []


def test_the_greedy_takes_the_busiest_contact_first() -> None:
    # A path a-b-c-d-e: b and d each cover two pairs, and together they cover all four.
    a, b, c, d, e = (str(n) * 31 for n in range(1, 6))
    assert vertex_cover(pairs_frame([(a, b), (b, c), (c, d), (d, e)])) == [b, d]


ids = st.sampled_from([f"{d}" * 31 for d in range(1, 10)])


@given(st.lists(st.tuples(ids, ids), max_size=40))
def test_the_cover_touches_every_pair(pairs: list[tuple[str, str]]) -> None:
    cover = vertex_cover(pairs_frame(pairs))
    chosen = set(cover)
    assert len(chosen) == len(cover)
    for a, b in pairs:
        assert a == b or a in chosen or b in chosen


@settings(max_examples=50)
@given(st.lists(st.tuples(ids, ids), max_size=40))
def test_the_cover_is_never_worse_than_every_contact_and_is_stable(
    pairs: list[tuple[str, str]],
) -> None:
    frame = pairs_frame(pairs)
    cover = vertex_cover(frame)
    contacts = {x for a, b in pairs if a != b for x in (a, b)}
    assert set(cover) <= contacts
    assert vertex_cover(frame) == cover


def test_it_scales_linearly_not_quadratically() -> None:
    """200,000 pairs in well under the time a quadratic greedy would need for 2,000."""
    rng = random.Random(5)
    contacts = [f"{n:031d}" for n in range(20_000)]
    a = [contacts[rng.randrange(20_000)] for _ in range(200_000)]
    b = [contacts[rng.randrange(20_000)] for _ in range(200_000)]
    started = time.perf_counter()
    cover = vertex_cover(pl.DataFrame({"pair_lo": a, "pair_hi": b}))
    assert time.perf_counter() - started < 5
    assert 0 < len(cover) < 20_000


class FakeCrm:
    """GetRelationshipsAttachedToContact served from a list, at most `page_size` a page."""

    def __init__(self, relationships: list[tuple[str, str, str]], page_size: int) -> None:
        self.relationships = relationships
        self.page_size = page_size
        self.missing: set[str] = set()

    def client(self) -> LacrmClient:
        transport = httpx.MockTransport(self.handle)
        return LacrmClient(
            "k-0123456789", "http://127.0.0.1:9/v2/", rate=10_000.0, transport=transport
        )

    async def handle(self, request: httpx.Request) -> httpx.Response:
        params = json.loads(request.content)["Parameters"]
        contact = params["ContactId"]
        if contact in self.missing:
            body = {"ErrorCode": "ContactNotFound", "ErrorDescription": "No such contact."}
            return httpx.Response(400, json=body)
        held = [
            {"RelationshipId": r, "ContactId1": a, "ContactId2": b}
            for a, b, r in self.relationships
            if contact in (a, b)
        ]
        size = min(self.page_size, params["MaxNumberOfResults"])
        page = held[(params["Page"] - 1) * size : params["Page"] * size]
        more = params["Page"] * size < len(held)
        return httpx.Response(200, json={"HasMoreResults": more, "Results": page})


def check(crm: FakeCrm, pairs: list[tuple[str, str]]) -> Any:
    async def scenario() -> Any:
        async with crm.client() as client:
            return await existing_pairs(client, pairs_frame(pairs))

    return asyncio.run(asyncio.wait_for(scenario(), timeout=10))


def test_existing_pairs_are_found_in_either_order_at_the_cover_cost() -> None:
    held = [
        (PEOPLE[5], COMPANIES[0], "5" * 31),  # stored reversed
        (COMPANIES[3], PEOPLE[600], "6" * 31),
        (COMPANIES[3], "7" * 31, "7" * 31),  # not an input pair
    ]
    found = check(FakeCrm(held, page_size=10_000), star())
    assert found.frame.schema == pl.Schema(EXISTING_SCHEMA)
    assert sorted(found.frame.rows()) == sorted(
        [
            (min(PEOPLE[5], COMPANIES[0]), max(PEOPLE[5], COMPANIES[0]), "5" * 31),
            (min(COMPANIES[3], PEOPLE[600]), max(COMPANIES[3], PEOPLE[600]), "6" * 31),
        ]
    )
    assert (found.reads, found.contacts_read, found.naive_reads) == (10, 10, 2010)


def test_every_page_is_read_and_a_pair_held_twice_is_reported_once() -> None:
    company = COMPANIES[0]
    held = [(company, PEOPLE[n], f"{n + 1:031d}") for n in range(7)]
    held.append((PEOPLE[2], company, "9" * 31))  # a duplicate the CRM let someone make
    found = check(FakeCrm(held, page_size=3), [(company, PEOPLE[n]) for n in range(7)])
    assert found.reads == 3  # 8 relationships, 3 a page
    assert found.frame.height == 7
    assert sorted(found.frame.get_column("relationship_id").to_list()) == [
        f"{n + 1:031d}" for n in range(7)
    ]


def test_a_contact_deleted_meanwhile_holds_nothing() -> None:
    crm = FakeCrm([(COMPANIES[0], PEOPLE[0], "5" * 31)], page_size=10)
    crm.missing.add(COMPANIES[1])
    found = check(crm, [(COMPANIES[0], PEOPLE[0]), (COMPANIES[1], PEOPLE[1])])
    assert found.frame.rows() == [(PEOPLE[0], COMPANIES[0], "5" * 31)]


def test_no_pairs_no_reads() -> None:
    found = check(FakeCrm([], page_size=10), [])
    assert (found.frame.height, found.reads, found.contacts_read, found.naive_reads) == (0, 0, 0, 0)
    assert found.frame.schema == pl.Schema(EXISTING_SCHEMA)
