"""Canonical unordered pairs: (A, B) is (B, A); self pairs; duplicates within the input."""

from __future__ import annotations

import polars as pl


def canonical_pairs(frame: pl.DataFrame) -> pl.DataFrame:
    """Add `pair_lo`, `pair_hi`, `self_pair`, `first_row_id` to `row_id, contact_id_1/2`.

    `first_row_id` is the earliest row holding the same unordered pair (the row itself for the
    first occurrence); it is null where either side is unresolved or the pair is a self pair.
    """
    one, two = pl.col("contact_id_1"), pl.col("contact_id_2")
    complete = one.is_not_null() & two.is_not_null()
    with_pairs = frame.with_columns(
        pair_lo=pl.when(complete).then(pl.min_horizontal(one, two)),
        pair_hi=pl.when(complete).then(pl.max_horizontal(one, two)),
        self_pair=(complete & (one == two)).fill_null(False),
    )
    distinct = pl.col("pair_lo").is_not_null() & ~pl.col("self_pair")
    return with_pairs.with_columns(
        first_row_id=pl.when(distinct).then(pl.col("row_id").min().over("pair_lo", "pair_hi"))
    )


def distinct_pairs(pairs: pl.DataFrame) -> pl.DataFrame:
    """The unordered pairs to check or create: one row per pair, self pairs left out."""
    return pairs.filter(pl.col("first_row_id") == pl.col("row_id")).select("pair_lo", "pair_hi")
