"""One outcome per input row, decided before anything is written: this is the dry run."""

from __future__ import annotations

import polars as pl

from etl.pairs import canonical_pairs

PLAN_COLUMNS = [
    "row_id",
    "source",
    "sheet",
    "row",
    "status",
    "reason",
    "detail",
    "contact_id_1",
    "contact_id_2",
    "relationship_id",
    "note",
    "match_1",
    "name_1",
    "match_2",
    "name_2",
]
TO_CREATE = "to_create"


def build_plan(
    rows: pl.DataFrame,
    side_1: pl.DataFrame,
    side_2: pl.DataFrame,
    notes: pl.Series | None,
    existing: pl.DataFrame,
    *,
    dry_run: bool,
) -> pl.DataFrame:
    """Decide every row: failed, skipped, or to create (`would_create` in a dry run).

    `rows` holds row_id, source, sheet, row; `side_1`/`side_2` are resolve results; `existing`
    holds the pairs the CRM already has (pair_lo, pair_hi, relationship_id).
    """
    frame = rows.select("row_id", "source", "sheet", "row").with_columns(
        note=notes if notes is not None else pl.lit(None, pl.String)
    )
    frame = _with_side(_with_side(frame, side_1, "1"), side_2, "2")
    if not frame["row_id"].is_sorted():
        frame = frame.sort("row_id")
    pairs = _with_first_row_label(canonical_pairs(frame))
    create_status = "would_create" if dry_run else TO_CREATE
    # The conditions once, as columns: each is read by status, reason and detail.
    flagged = _with_existing(pairs, existing).with_columns(
        _failed_1=_failed("1"),
        _failed_2=_failed("2"),
        _duplicate=pl.col("first_row_id") != pl.col("row_id"),
        _exists=pl.col("relationship_id").is_not_null(),
    )
    failed_1, failed_2 = pl.col("_failed_1"), pl.col("_failed_2")
    failed = failed_1 | failed_2
    self_pair, duplicate, exists = pl.col("self_pair"), pl.col("_duplicate"), pl.col("_exists")
    decided = flagged.with_columns(
        status=pl.when(failed)
        .then(pl.lit("failed"))
        .when(self_pair | duplicate | exists)
        .then(pl.lit("skipped"))
        .otherwise(pl.lit(create_status)),
        reason=pl.when(failed_1)
        .then(pl.col("reason_1").fill_null(pl.lit("contact_not_found")))
        .when(failed_2)
        .then(pl.col("reason_2").fill_null(pl.lit("contact_not_found")))
        .when(self_pair)
        .then(pl.lit("self_relationship"))
        .when(duplicate)
        .then(pl.lit("duplicate_in_file"))
        .when(exists)
        .then(pl.lit("already_exists")),
        detail=pl.when(failed)
        .then(_side_failure_detail())
        .when(self_pair)
        .then(pl.lit("both sides are the same contact"))
        .when(duplicate)
        .then(pl.lit("same pair as ") + pl.col("first_row_label"))
        .when(exists)
        .then(
            pl.lit("the CRM already holds this pair as RelationshipId ") + pl.col("relationship_id")
        ),
    )
    return decided.with_columns(
        relationship_id=pl.when(pl.col("reason") == "already_exists").then("relationship_id")
    ).select(PLAN_COLUMNS)


def _failed(n: str) -> pl.Expr:
    return pl.col(f"reason_{n}").is_not_null() | pl.col(f"contact_id_{n}").is_null()


def _with_side(frame: pl.DataFrame, resolved: pl.DataFrame, n: str) -> pl.DataFrame:
    """Add one side's columns: side by side when it lists the same rows in the same order (what
    resolve_side returns), else by a join."""
    columns = _side(resolved, n)
    if columns["row_id"].equals(frame["row_id"]):
        return pl.concat([frame, columns.drop("row_id")], how="horizontal")
    return frame.join(columns, on="row_id", how="left")


def _with_existing(pairs: pl.DataFrame, existing: pl.DataFrame) -> pl.DataFrame:
    if existing.is_empty():
        return pairs.with_columns(relationship_id=pl.lit(None, pl.String))
    known = existing.select("pair_lo", "pair_hi", "relationship_id").unique(
        ["pair_lo", "pair_hi"], keep="first"
    )
    return pairs.join(known, on=["pair_lo", "pair_hi"], how="left", maintain_order="left")


def _side(resolved: pl.DataFrame, n: str) -> pl.DataFrame:
    return resolved.select(
        "row_id",
        pl.col("contact_id").alias(f"contact_id_{n}"),
        pl.col("match").alias(f"match_{n}"),
        pl.col("matched_name").alias(f"name_{n}"),
        pl.col("reason").alias(f"reason_{n}"),
        pl.col("detail").alias(f"detail_{n}"),
    )


def _side_failure_detail() -> pl.Expr:
    # Null for a side that did not fail, so only failed sides build a text.
    parts = [
        pl.lit(f"contact {n}: ")
        + pl.when(pl.col(f"_failed_{n}")).then(
            pl.coalesce(f"detail_{n}", f"reason_{n}", pl.lit("not resolved"))
        )
        for n in ("1", "2")
    ]
    return pl.concat_str(parts, separator="; ", ignore_nulls=True)


def _with_first_row_label(frame: pl.DataFrame) -> pl.DataFrame:
    """Name each duplicate's first row as a person finds it: row N of source (, sheet S).

    Labels only the rows some duplicate points to: most rows are nobody's first row.
    """
    pointed_to = frame.filter(pl.col("first_row_id") != pl.col("row_id")).get_column("first_row_id")
    sheet = pl.when(pl.col("sheet") != "").then(pl.lit(", sheet ") + pl.col("sheet"))
    labels = frame.filter(pl.col("row_id").is_in(pointed_to.unique().implode())).select(
        pl.col("row_id").alias("first_row_id"),
        pl.concat_str(
            [pl.lit("row "), pl.col("row").cast(pl.String), pl.lit(" of "), "source", sheet],
            ignore_nulls=True,
        ).alias("first_row_label"),
    )
    return frame.join(labels, on="first_row_id", how="left", maintain_order="left")


def counts(plan: pl.DataFrame) -> dict[str, int]:
    """Rows per status, every status present (zero where none)."""
    found = dict(plan.group_by("status").len().iter_rows())
    statuses = ("created", "would_create", TO_CREATE, "skipped", "failed")
    return {status: found.get(status, 0) for status in statuses}
