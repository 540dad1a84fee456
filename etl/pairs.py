"""Canonical unordered pairs: (A, B) is (B, A); self pairs; duplicates within the input."""

from __future__ import annotations

from typing import TypeVar

import polars as pl

Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)


def canonical_pairs(frame: Frame) -> Frame:
    """Add `pair_lo`, `pair_hi`, `self_pair`, `first_row_id` to `row_id, contact_id_1/2`.

    `first_row_id` is the earliest row holding the same unordered pair (the row itself for the
    first occurrence); it is null where either side is unresolved or the pair is a self pair.
    Takes a DataFrame or a LazyFrame and returns the same kind.
    """
    one, two = pl.col("contact_id_1"), pl.col("contact_id_2")
    # One string comparison per row (null when a side is missing, so both ends stay null);
    # min_/max_horizontal would compare twice.
    in_order = pl.col("_in_order")
    with_pairs = (
        frame.with_columns(_in_order=one <= two)
        .with_columns(
            pair_lo=pl.when(in_order).then(one).when(~in_order).then(two),
            pair_hi=pl.when(in_order).then(two).when(~in_order).then(one),
            self_pair=(one == two).fill_null(False),
        )
        .drop("_in_order")
    )
    distinct = pl.col("pair_lo").is_not_null() & ~pl.col("self_pair")
    return with_pairs.with_columns(
        first_row_id=pl.when(distinct).then(pl.col("row_id").min().over("pair_lo", "pair_hi"))
    )


def distinct_pairs(pairs: pl.DataFrame) -> pl.DataFrame:
    """The unordered pairs to check or create: one row per pair, self pairs left out."""
    return pairs.filter(pl.col("first_row_id") == pl.col("row_id")).select("pair_lo", "pair_hi")
