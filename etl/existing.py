"""Which of the input's pairs the CRM already holds, read at the cost of a vertex cover.

The API lists relationships per contact only. Reading every contact of the input costs one read
per contact; reading a set of contacts that touches every pair (a vertex cover of the pair graph)
sees every pair too. A company related to 500 people then costs one read, not 500.
"""

from __future__ import annotations

import logging
import sys
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import polars as pl
from tqdm import tqdm

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

    A bucket queue keyed by degree makes it O(pairs + contacts): a node whose degree fell since
    it was queued is moved down to its bucket when it surfaces. The same input always gives
    the same cover (ties start with the smaller id).
    """
    edges = _distinct_pairs(pairs)
    if edges.is_empty():
        return []
    graph = _Graph.of(edges)
    degree = [graph.offsets[n + 1] - graph.offsets[n] for n in range(len(graph.contacts))]
    top = max(degree)
    buckets: list[list[int]] = [[] for _ in range(top + 1)]
    for node in reversed(range(len(degree))):
        buckets[degree[node]].append(node)  # popped from the end: smallest node first
    covered = bytearray(len(graph.lo))
    uncovered = len(graph.lo)
    cover: list[str] = []
    while uncovered:
        while not buckets[top]:
            top -= 1
        node = buckets[top].pop()
        if degree[node] != top:
            buckets[degree[node]].append(node)
            continue
        cover.append(graph.contacts[node])
        for edge in graph.incident(node):
            if not covered[edge]:
                covered[edge] = 1
                uncovered -= 1
                degree[graph.lo[edge] ^ graph.hi[edge] ^ node] -= 1  # the edge's other end
        degree[node] = 0
    return cover


async def existing_pairs(
    client: LacrmClient, pairs: pl.DataFrame, *, progress: bool = False
) -> Existing:
    """Read the relationships of a vertex cover of `pairs`; keep those joining an input pair."""
    wanted = _distinct_pairs(pairs)
    cover = vertex_cover(wanted)
    before = sum(client.calls.values())
    found: list[tuple[str, str, str]] = []
    # The check's cost, said before it is paid: at the rate limit, reads take a while.
    seconds = len(cover) / client.limiter.rate
    log.info(
        "existing check: %d reads for %d pairs, about %.0f s", len(cover), wanted.height, seconds
    )
    bar = tqdm(
        total=len(cover),
        desc=f"Checking existing pairs ({len(cover):,} reads, about {_duration(seconds)})",
        unit=" contacts",
        file=sys.stderr,
        disable=not progress,
    )

    async def read(contact: str) -> None:
        found.extend(await _relationships_of(client, contact))
        bar.update(1)

    with bar:
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


@dataclass(frozen=True)
class _Graph:
    """The pair graph with contacts numbered in id order; edges incident to node n are
    `incident_edges[offsets[n]:offsets[n + 1]]` (compressed adjacency)."""

    contacts: list[str]
    lo: list[int]
    hi: list[int]
    offsets: list[int]
    incident_edges: list[int]

    @classmethod
    def of(cls, edges: pl.DataFrame) -> _Graph:
        count = edges.height
        ends = pl.concat([edges.get_column("pair_lo"), edges.get_column("pair_hi")])
        contacts = ends.unique().sort()
        numbering = contacts.to_frame("contact").with_row_index("node")
        nodes = (
            ends.to_frame("contact")
            .join(numbering, on="contact", how="left", maintain_order="left")
            .get_column("node")
        )
        edge_ids = pl.int_range(0, count, dtype=pl.UInt32, eager=True)
        by_node = nodes.arg_sort()
        degrees = nodes.value_counts(sort=False).sort("node").get_column("count")
        return cls(
            contacts=contacts.to_list(),
            lo=nodes.head(count).to_list(),
            hi=nodes.tail(count).to_list(),
            offsets=[0, *degrees.cum_sum().to_list()],
            incident_edges=pl.concat([edge_ids, edge_ids]).gather(by_node).to_list(),
        )

    def incident(self, node: int) -> list[int]:
        return self.incident_edges[self.offsets[node] : self.offsets[node + 1]]


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
