"""Which of the input's pairs the CRM already holds, read at the cost of a vertex cover.

The API lists relationships per contact only. Reading every contact of the input costs one read
per contact; reading a set of contacts that touches every pair (a vertex cover of the pair graph)
sees every pair too. A company related to 500 people then costs one read, not 500.
"""

from __future__ import annotations

import heapq
import logging
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import polars as pl

from etl.lacrm import MAX_PAGE_SIZE, ApiError, LacrmClient, run_pool

ATTACHED = "GetRelationshipsAttachedToContact"
EXTRA_WORKERS = 2
EXISTING_SCHEMA = {"pair_lo": pl.String, "pair_hi": pl.String, "relationship_id": pl.String}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Existing:
    """`frame`: the input pairs the CRM holds (one relationship each); `reads`: API requests
    made; `contacts_read`: the cover's size; `naive_reads`: one read per distinct contact."""

    frame: pl.DataFrame
    reads: int
    contacts_read: int
    naive_reads: int


def vertex_cover(pairs: pl.DataFrame) -> list[str]:
    """A set of contacts touching every pair: greedily the one covering most uncovered pairs.

    Ties go to the smaller id, so the cover is the same on every run. Lazy max-heap: a node's
    stale degree is re-pushed when popped, so the work is O(pairs log contacts).
    """
    edges = _distinct_pairs(pairs)
    if edges.is_empty():
        return []
    contacts, lo, hi, incident = _graph(edges)
    degree = [len(edge_ids) for edge_ids in incident]
    covered = bytearray(len(lo))
    heap = [(-d, node) for node, d in enumerate(degree)]
    heapq.heapify(heap)
    cover: list[str] = []
    while heap:
        negative, node = heapq.heappop(heap)
        if degree[node] == 0:
            continue
        if -negative != degree[node]:
            heapq.heappush(heap, (-degree[node], node))
            continue
        cover.append(contacts[node])
        for edge in incident[node]:
            if not covered[edge]:
                covered[edge] = 1
                degree[lo[edge] ^ hi[edge] ^ node] -= 1  # the edge's other end
        degree[node] = 0
    return cover


async def existing_pairs(client: LacrmClient, pairs: pl.DataFrame) -> Existing:
    """Read the relationships of a vertex cover of `pairs`; keep those joining an input pair."""
    wanted = _distinct_pairs(pairs)
    cover = vertex_cover(wanted)
    before = sum(client.calls.values())
    found: list[tuple[str, str, str]] = []

    async def read(contact: str) -> None:
        found.extend(await _relationships_of(client, contact))

    await run_pool(cover, read, client.concurrency + EXTRA_WORKERS)
    held = (
        pl.DataFrame(found, schema=EXISTING_SCHEMA, orient="row")
        .join(wanted, on=["pair_lo", "pair_hi"], how="semi")
        .sort("pair_lo", "pair_hi", "relationship_id")
        .unique(["pair_lo", "pair_hi"], keep="first", maintain_order=True)
    )
    naive = pl.concat([wanted.get_column("pair_lo"), wanted.get_column("pair_hi")]).n_unique()
    return Existing(
        frame=held,
        reads=sum(client.calls.values()) - before,
        contacts_read=len(cover),
        naive_reads=naive,
    )


async def _relationships_of(client: LacrmClient, contact: str) -> list[tuple[str, str, str]]:
    relationships: list[tuple[str, str, str]] = []
    try:
        params = {"ContactId": contact}
        async with aclosing(client.paged(ATTACHED, params, page_size=MAX_PAGE_SIZE)) as pages:
            async for page in pages:
                relationships += [_ordered(rel) for rel in page if _is_complete(rel)]
    except ApiError as error:
        # A contact deleted since the directory was read holds no relationships.
        log.warning("reading relationships of contact %s: %s", contact, error)
        return []
    return relationships


def _is_complete(relationship: dict[str, Any]) -> bool:
    return all(relationship.get(key) for key in ("ContactId1", "ContactId2", "RelationshipId"))


def _ordered(relationship: dict[str, Any]) -> tuple[str, str, str]:
    one, two = str(relationship["ContactId1"]), str(relationship["ContactId2"])
    return min(one, two), max(one, two), str(relationship["RelationshipId"])


def _distinct_pairs(pairs: pl.DataFrame) -> pl.DataFrame:
    """Unordered pairs as (lo, hi) strings: no nulls, no self pairs, each once."""
    one, two = pl.col("pair_lo").cast(pl.String), pl.col("pair_hi").cast(pl.String)
    return (
        pairs.select(pair_lo=pl.min_horizontal(one, two), pair_hi=pl.max_horizontal(one, two))
        .drop_nulls()
        .filter(pl.col("pair_lo") != pl.col("pair_hi"))
        .unique(maintain_order=True)
    )


def _graph(edges: pl.DataFrame) -> tuple[list[str], list[int], list[int], list[list[int]]]:
    """Contacts sorted by id; each edge's two node numbers; each node's incident edge numbers."""
    contacts = (
        pl.concat([edges.get_column("pair_lo"), edges.get_column("pair_hi")])
        .unique()
        .sort()
        .to_frame("contact")
        .with_row_index("node")
    )
    numbered = (
        edges.with_row_index("edge")
        .join(contacts.rename({"contact": "pair_lo", "node": "lo"}), on="pair_lo")
        .join(contacts.rename({"contact": "pair_hi", "node": "hi"}), on="pair_hi")
        .sort("edge")
    )
    ends = pl.concat(
        [
            numbered.select("edge", node=pl.col("lo")),
            numbered.select("edge", node=pl.col("hi")),
        ]
    )
    incident = ends.group_by("node").agg("edge").sort("node").get_column("edge").to_list()
    return (
        contacts.get_column("contact").to_list(),
        numbered.get_column("lo").to_list(),
        numbered.get_column("hi").to_list(),
        incident,
    )
