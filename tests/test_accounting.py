"""Every input row is accounted for exactly once, from the plan through the ledger to the report.

tests/test_plan.py proves it for the plan, tests/test_pairs.py for in-file duplicates; here the
whole way: whatever the rows and whatever each create's outcome, the report written from the
ledger holds each row once and its counts add up to the rows; a duplicate row names the row
that holds its pair first.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.ledger import Ledger
from etl.pipeline import final_report
from etl.plan import build_plan

IDS = ["1" * 31, "2" * 31, "3" * 31, "4" * 31]
INPUT_COLUMNS = ["Person", "Related To"]
SIDE_SCHEMA = {
    "row_id": pl.UInt32,
    "contact_id": pl.String,
    "match": pl.String,
    "matched_name": pl.String,
    "reason": pl.String,
    "detail": pl.String,
}
EXISTING_SCHEMA = {"pair_lo": pl.String, "pair_hi": pl.String, "relationship_id": pl.String}

sides = st.one_of(st.none(), st.sampled_from(IDS))
pair_lists = st.lists(st.tuples(sides, sides), min_size=1, max_size=20)


def input_rows(pairs: list[tuple[str | None, str | None]]) -> pl.DataFrame:
    n = len(pairs)
    return pl.DataFrame(
        {
            "row_id": range(n),
            "source": ["f.csv"] * n,
            "sheet": [""] * n,
            "row": range(2, n + 2),
            "Person": [a for a, _ in pairs],
            "Related To": [b for _, b in pairs],
        },
        schema_overrides={"row_id": pl.UInt32, "row": pl.Int64},
    )


def side(ids: list[str | None]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "row_id": range(len(ids)),
            "contact_id": ids,
            "match": ["id" if i else None for i in ids],
            "matched_name": [i[:3] if i else None for i in ids],
            "reason": [None if i else "missing_value" for i in ids],
            "detail": [None if i else "the cell is empty" for i in ids],
        },
        schema=SIDE_SCHEMA,
    )


def planned(rows: pl.DataFrame, existing: pl.DataFrame, dry_run: bool) -> pl.DataFrame:
    """The plan as the pipeline stores it: outcomes joined with the input's own columns."""
    plan = build_plan(
        rows.drop(INPUT_COLUMNS),
        side(rows["Person"].to_list()),
        side(rows["Related To"].to_list()),
        None,
        existing,
        dry_run=dry_run,
    )
    return plan.join(rows.select("row_id", *INPUT_COLUMNS), on="row_id", how="left")


def settle_every_create(ledger: Ledger, run_id: str, failures: list[bool]) -> None:
    for n, intent in enumerate(ledger.unfinished_creates(run_id)):
        ledger.mark_sending(run_id, intent.row_id)
        if failures[n % len(failures)]:
            ledger.mark_failed(run_id, intent.row_id, "Refused", "the CRM said no")
        else:
            ledger.mark_created(run_id, intent.row_id, f"7{intent.row_id:030d}")
    ledger.set_state(run_id, "finished")


@given(
    pairs=pair_lists,
    failures=st.lists(st.booleans(), min_size=1, max_size=8),
    held_first=st.booleans(),
    dry_run=st.booleans(),
)
@settings(max_examples=30, deadline=None)
def test_the_report_accounts_for_every_row_once_and_its_counts_add_up(
    pairs: list[tuple[str | None, str | None]],
    failures: list[bool],
    held_first: bool,
    dry_run: bool,
) -> None:
    rows = input_rows(pairs)
    held = [(IDS[0], IDS[1], "9" * 31)] if held_first else []
    stored = planned(rows, pl.DataFrame(held, schema=EXISTING_SCHEMA, orient="row"), dry_run)
    with tempfile.TemporaryDirectory() as folder, Ledger(Path(folder) / "s.sqlite") as ledger:
        run_id = ledger.create_run(
            settings={"input_columns": INPUT_COLUMNS, "info": {}},
            fingerprint={},
            plan=stored,
            dry_run=dry_run,
        )
        settle_every_create(ledger, run_id, failures)
        summary, paths, _ = final_report(ledger, run_id, Counter(), Path(folder) / "out")
        report = pl.read_csv(paths.report_csv, infer_schema=False)

    statuses = ("created", "would_create", "skipped", "failed")
    assert summary["total_rows"] == len(pairs) == report.height
    assert sum(summary[status] for status in statuses) == len(pairs)
    assert sorted(report["row"].cast(pl.Int64).to_list()) == list(range(2, len(pairs) + 2))
    assert set(report["status"]) <= set(statuses)
    assert_duplicates_name_their_first_row(report)


def assert_duplicates_name_their_first_row(report: pl.DataFrame) -> None:
    first_row: dict[frozenset[str], str] = {}
    for row in report.sort(pl.col("row").cast(pl.Int64)).iter_rows(named=True):
        one, two = row["contact_id_1"], row["contact_id_2"]
        if one is None or two is None or one == two:
            continue
        pair = frozenset((one, two))
        if pair in first_row:
            assert row["reason"] == "duplicate_in_file"
            assert f"row {first_row[pair]} " in f"{row['detail']} "
        else:
            first_row[pair] = row["row"]
            assert row["reason"] != "duplicate_in_file"
