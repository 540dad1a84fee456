import asyncio
from collections import Counter
from typing import Any

import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from etl.existing import existing_pairs, vertex_cover

COMPANIES = [f"9{n:030d}" for n in range(10)]
PEOPLE = [f"1{n:030d}" for n in range(2000)]


def pairs_frame(pairs: list[tuple[str, str]]) -> pl.DataFrame:
    ordered = [(min(a, b), max(a, b)) for a, b in pairs]
    return pl.DataFrame(ordered, schema={"pair_lo": pl.String, "pair_hi": pl.String}, orient="row")


def star() -> list[tuple[str, str]]:
    return [(c, PEOPLE[i * 200 + j]) for i, c in enumerate(COMPANIES) for j in range(200)]


def test_a_star_is_covered_by_its_centres() -> None:
    assert vertex_cover(pairs_frame(star())) == sorted(COMPANIES)


ids = st.sampled_from([f"{d}" * 31 for d in range(1, 10)])


@given(st.lists(st.tuples(ids, ids), max_size=40))
def test_the_cover_touches_every_pair(pairs: list[tuple[str, str]]) -> None:
    cover = set(vertex_cover(pairs_frame(pairs)))
    for a, b in pairs:
        assert a == b or a in cover or b in cover


class FakeCrm:
    """Relationships held per contact, served in pages like GetRelationshipsAttachedToContact."""

    def __init__(self, relationships: list[tuple[str, str, str]], page_size: int) -> None:
        self.relationships = relationships
        self.page_size = page_size
        self.calls: Counter[str] = Counter()

    async def paged(self, function: str, params: dict[str, Any], page_size: int = 0) -> Any:
        held = [
            {"RelationshipId": r, "ContactId1": a, "ContactId2": b}
            for a, b, r in self.relationships
            if params["ContactId"] in (a, b)
        ]
        for start in range(0, max(len(held), 1), self.page_size):
            self.calls[function] += 1
            yield held[start : start + self.page_size]


def test_existing_pairs_are_found_in_either_order_at_the_cover_cost() -> None:
    input_pairs = star()
    held = [
        (PEOPLE[5], COMPANIES[0], "5" * 31),  # stored reversed
        (COMPANIES[3], PEOPLE[600], "6" * 31),
        (COMPANIES[3], "7" * 31, "7" * 31),  # not an input pair
    ]
    crm = FakeCrm(held, page_size=10_000)
    found = asyncio.run(existing_pairs(crm, pairs_frame(input_pairs)))
    assert sorted(found.frame.rows()) == sorted(
        [
            (min(PEOPLE[5], COMPANIES[0]), max(PEOPLE[5], COMPANIES[0]), "5" * 31),
            (min(COMPANIES[3], PEOPLE[600]), max(COMPANIES[3], PEOPLE[600]), "6" * 31),
        ]
    )
    assert found.reads == 10
    assert found.naive_reads == 2010
