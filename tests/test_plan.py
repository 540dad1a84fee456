import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from etl.plan import build_plan, counts

A, B, C = "1" * 31, "2" * 31, "3" * 31
SIDE_SCHEMA = {
    "row_id": pl.UInt32,
    "contact_id": pl.String,
    "match": pl.String,
    "matched_name": pl.String,
    "reason": pl.String,
    "detail": pl.String,
}
EXISTING_SCHEMA = {"pair_lo": pl.String, "pair_hi": pl.String, "relationship_id": pl.String}


def rows(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {"row_id": range(n), "source": ["f.csv"] * n, "sheet": [""] * n, "row": range(2, n + 2)},
        schema={"row_id": pl.UInt32, "source": pl.String, "sheet": pl.String, "row": pl.Int64},
    )


def side(ids: list[str | None], reasons: list[str | None] | None = None) -> pl.DataFrame:
    reasons = reasons or [None] * len(ids)
    return pl.DataFrame(
        {
            "row_id": range(len(ids)),
            "contact_id": ids,
            "match": ["exact" if i else None for i in ids],
            "matched_name": [f"name {i[0]}" if i else None for i in ids],
            "reason": reasons,
            "detail": [f"{r} detail" if r else None for r in reasons],
        },
        schema=SIDE_SCHEMA,
    )


def existing(*pairs: tuple[str, str, str]) -> pl.DataFrame:
    return pl.DataFrame(pairs, schema=EXISTING_SCHEMA, orient="row")


def plan_of(
    ones: list[str | None],
    twos: list[str | None],
    *,
    reasons_1: list[str | None] | None = None,
    known: pl.DataFrame | None = None,
    dry_run: bool = False,
) -> pl.DataFrame:
    return build_plan(
        rows(len(ones)),
        side(ones, reasons_1),
        side(twos),
        pl.Series("note", [f"note {i}" for i in range(len(ones))]),
        known if known is not None else existing(),
        dry_run=dry_run,
    )


def test_every_outcome_and_its_reason() -> None:
    plan = plan_of(
        [A, B, A, None, A, C],
        [B, A, A, B, C, B],
        reasons_1=[None, None, None, "contact_not_found", None, None],
        known=existing((B, C, "9" * 31)),
    )
    assert plan.select("status", "reason").rows() == [
        ("to_create", None),
        ("skipped", "duplicate_in_file"),
        ("skipped", "self_relationship"),
        ("failed", "contact_not_found"),
        ("to_create", None),
        ("skipped", "already_exists"),
    ]
    assert plan["detail"][1] == "same pair as row 2 of f.csv"
    assert plan["detail"][3] == "contact 1: contact_not_found detail"
    assert plan["relationship_id"][5] == "9" * 31
    assert "9" * 31 in plan["detail"][5]
    assert plan["note"][0] == "note 0"


def test_a_dry_run_says_would_create() -> None:
    plan = plan_of([A], [B], dry_run=True)
    assert plan["status"].to_list() == ["would_create"]
    assert counts(plan)["would_create"] == 1


def test_a_failure_on_both_sides_names_both() -> None:
    plan = build_plan(
        rows(1),
        side([None], ["missing_value"]),
        side([None], ["ambiguous_contact"]),
        None,
        existing(),
        dry_run=False,
    )
    assert plan["reason"][0] == "missing_value"
    assert plan["detail"][0] == (
        "contact 1: missing_value detail; contact 2: ambiguous_contact detail"
    )


@given(
    st.lists(
        st.tuples(st.sampled_from([A, B, C, None]), st.sampled_from([A, B, C, None])),
        min_size=1,
        max_size=30,
    ),
    st.booleans(),
)
def test_every_row_is_accounted_for_exactly_once(
    pairs: list[tuple[str | None, str | None]], dry_run: bool
) -> None:
    ones = [a for a, _ in pairs]
    reasons = [None if a else "missing_value" for a in ones]
    plan = plan_of(ones, [b for _, b in pairs], reasons_1=reasons, dry_run=dry_run)
    assert plan["row_id"].to_list() == list(range(len(pairs)))
    assert sum(counts(plan).values()) == len(pairs)
    assert plan.filter(pl.col("status") == "failed")["reason"].null_count() == 0
    creates = plan.filter(pl.col("status").is_in(["to_create", "would_create"]))
    assert creates.select("contact_id_1", "contact_id_2").null_count().sum_horizontal()[0] == 0
