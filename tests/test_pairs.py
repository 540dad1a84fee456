import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.pairs import canonical_pairs, distinct_pairs

IDS = [f"{n}" * 31 for n in range(1, 6)]


def frame(pairs: list[tuple[str | None, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "row_id": list(range(len(pairs))),
            "contact_id_1": [a for a, _ in pairs],
            "contact_id_2": [b for _, b in pairs],
        },
        schema={"row_id": pl.UInt32, "contact_id_1": pl.String, "contact_id_2": pl.String},
    )


def test_a_reversed_pair_is_a_duplicate_of_the_first_row() -> None:
    a, b, c = IDS[:3]
    result = canonical_pairs(frame([(a, b), (b, a), (a, c), (a, b)]))
    assert result["first_row_id"].to_list() == [0, 0, 2, 0]
    assert result["pair_lo"].to_list() == [a, a, a, a]


def test_self_pairs_and_unresolved_rows_have_no_first_row() -> None:
    a, b = IDS[:2]
    result = canonical_pairs(frame([(a, a), (a, None), (None, None), (a, b)]))
    assert result["self_pair"].to_list() == [True, False, False, False]
    assert result["first_row_id"].to_list() == [None, None, None, 3]
    assert distinct_pairs(result).rows() == [(a, b)]


def test_ids_are_ordered_as_strings_never_as_numbers() -> None:
    low, high = "1" + "0" * 30, "9" * 31
    result = canonical_pairs(frame([(high, low)]))
    assert (result["pair_lo"][0], result["pair_hi"][0]) == (low, high)
    assert result.schema["pair_lo"] == pl.String


pair_lists = st.lists(st.tuples(st.sampled_from(IDS), st.sampled_from(IDS)), max_size=40)


@given(pair_lists)
@settings(deadline=None)
def test_dedupe_keeps_exactly_the_first_occurrence_of_each_unordered_pair(
    pairs: list[tuple[str, str]],
) -> None:
    result = canonical_pairs(frame(pairs))
    seen: dict[frozenset[str], int] = {}
    for row_id, (a, b) in enumerate(pairs):
        if a == b:
            assert result["first_row_id"][row_id] is None
            continue
        first = seen.setdefault(frozenset((a, b)), row_id)
        assert result["first_row_id"][row_id] == first
    assert distinct_pairs(result).height == len(seen)


@given(pair_lists)
@settings(deadline=None)
def test_canonical_pairs_are_symmetric(pairs: list[tuple[str, str]]) -> None:
    forward = canonical_pairs(frame(pairs)).select("pair_lo", "pair_hi")
    reversed_ = canonical_pairs(frame([(b, a) for a, b in pairs])).select("pair_lo", "pair_hi")
    assert forward.equals(reversed_)
