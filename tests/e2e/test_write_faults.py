"""Exactly-once writes against the real sandbox: 500s, lost responses, 429s, crashes, rollback."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from etl.lacrm import AuthError, LacrmClient
from etl.ledger import Ledger
from etl.sandbox.testing import RunningSandbox
from etl.write import execute, rollback, rollback_preview

StartSandbox = Callable[..., RunningSandbox]
COMPANIES = [f"9{n:030d}" for n in range(6)]
PEOPLE = [f"1{n:030d}" for n in range(60)]
EARLIER = [(COMPANIES[0], COMPANIES[1], "partners"), (PEOPLE[0], PEOPLE[1], "siblings")]


def seed() -> dict[str, Any]:
    companies = [
        {"ContactId": cid, "IsCompany": True, "Company Name": f"Company {n}"}
        for n, cid in enumerate(COMPANIES)
    ]
    people = [
        {"ContactId": pid, "IsCompany": False, "Name": {"FirstName": "P", "LastName": str(n)}}
        for n, pid in enumerate(PEOPLE)
    ]
    relationships = [
        {"RelationshipId": f"5{n:030d}", "ContactId1": a, "ContactId2": b, "Note": note}
        for n, (a, b, note) in enumerate(EARLIER)
    ]
    return {"contacts": companies + people, "relationships": relationships}


def plan_frame() -> pl.DataFrame:
    """Every person joins their company: a run of 60 creates none of which exists yet."""
    pairs = [(PEOPLE[n], COMPANIES[n % len(COMPANIES)]) for n in range(len(PEOPLE))]
    return pl.DataFrame(
        {
            "row_id": pl.Series(range(len(pairs)), dtype=pl.UInt32),
            "status": ["to_create"] * len(pairs),
            "contact_id_1": [a for a, _ in pairs],
            "contact_id_2": [b for _, b in pairs],
            "relationship_id": pl.Series([None] * len(pairs), dtype=pl.String),
            "note": [f"works at {b[-1]} (row {n})" for n, (_, b) in enumerate(pairs)],
        }
    )


def held(crm: RunningSandbox) -> Counter[tuple[frozenset[str], str]]:
    """The CRM's relationships as (pair, note), ids aside: what two runs must agree on."""
    return Counter(
        (frozenset((r["ContactId1"], r["ContactId2"])), r["Note"] or "")
        for r in crm.state()["relationships"]
    )


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


def client(crm: RunningSandbox, key: str | None = None, **options: Any) -> LacrmClient:
    settings: dict[str, Any] = {"rate": 200.0, "concurrency": 4, "backoff_base": 0.05}
    return LacrmClient(key or crm.api_key, crm.url, **{**settings, **options})


async def write(crm: RunningSandbox, ledger: Ledger, run_id: str, **options: Any) -> Any:
    async with client(crm, **options) as api:
        stats = await execute(api, ledger, run_id)
        return stats, api


def new_run(ledger: Ledger) -> str:
    return ledger.create_run(settings={}, fingerprint={}, plan=plan_frame(), dry_run=False)


def assert_ledger_matches_crm(crm: RunningSandbox, ledger: Ledger, run_id: str) -> None:
    outcomes = ledger.outcomes(run_id)
    assert outcomes.get_column("status").unique().to_list() == ["created"]
    by_id = {r["RelationshipId"]: r for r in crm.state()["relationships"]}
    plan = plan_frame()
    for row_id, rid in outcomes.select("row_id", "relationship_id").iter_rows():
        one, two, note = plan.row(row_id)[2], plan.row(row_id)[3], plan.row(row_id)[5]
        assert {by_id[rid]["ContactId1"], by_id[rid]["ContactId2"]} == {one, two}
        assert by_id[rid]["Note"] == note


def test_faults_end_exactly_where_a_fault_free_run_ends(
    start_sandbox: StartSandbox, tmp_path: Path
) -> None:
    clean = start_sandbox(seed=seed())
    faulty = start_sandbox(seed=seed(), error_rate=0.2, lost_rate=0.2, rate_limit=30, fault_seed=11)
    with Ledger(tmp_path / "clean.sqlite") as ledger:
        run(write(clean, ledger, new_run(ledger)))
    with Ledger(tmp_path / "faulty.sqlite") as ledger:
        run_id = new_run(ledger)
        # Asking for twice the CRM's limit: it answers 429 until the client slows down.
        stats, api = run(write(faulty, ledger, run_id, rate=60.0, max_attempts=10))
        assert_ledger_matches_crm(faulty, ledger, run_id)
        assert ledger.run(run_id).state == "finished"

    state = faulty.state()
    assert held(faulty) == held(clean)
    assert state["duplicate_pairs"] == [] and clean.state()["duplicate_pairs"] == []
    assert stats.created == 60 and stats.failed == 0
    assert stats.settled_created > 0, "some lost responses were found created by reading back"
    assert stats.settled_absent > 0, "some 500s were found absent and sent again"
    assert api.limiter.throttled > 0
    # The client counts what the CRM saw; beyond the writer's sends, only 429s were repeated.
    assert state["calls"]["CreateRelationship"] == api.calls["CreateRelationship"] >= stats.sends


def test_a_crash_mid_run_resumes_to_the_exact_end_state(
    start_sandbox: StartSandbox, tmp_path: Path
) -> None:
    crm = start_sandbox(seed=seed(), latency=0.05, lost_rate=0.3, fault_seed=5)
    before = held(crm)
    with Ledger(tmp_path / "s.sqlite") as ledger:
        run_id = new_run(ledger)

        async def crash_midway() -> None:
            task = asyncio.create_task(write(crm, ledger, run_id))
            await asyncio.sleep(0.4)
            task.cancel()  # like a kill: requests in flight, their rows left `sending`
            await asyncio.gather(task, return_exceptions=True)

        run(crash_midway())
        counts = ledger.run(run_id).counts
        assert counts["sending"] > 0 and counts["pending"] > 0
        crm.set_faults(error_rate=0.2)
        stats, _ = run(write(crm, ledger, run_id, max_attempts=10))
        assert_ledger_matches_crm(crm, ledger, run_id)
        final = ledger.run(run_id).counts

    plan = plan_frame()
    expected = before + Counter(
        (frozenset((a, b)), note)
        for a, b, note in plan.select("contact_id_1", "contact_id_2", "note").iter_rows()
    )
    assert held(crm) == expected
    assert crm.state()["duplicate_pairs"] == []
    assert final["created"] == 60 and final["sending"] == final["pending"] == 0
    assert stats.already_final == counts["created"]


def test_a_bad_key_aborts_and_rollback_removes_exactly_what_the_run_created(
    start_sandbox: StartSandbox, tmp_path: Path
) -> None:
    crm = start_sandbox(seed=seed(), lost_rate=0.2, fault_seed=2)
    before = held(crm)
    with Ledger(tmp_path / "s.sqlite") as ledger:
        run_id = new_run(ledger)

        async def with_a_bad_key() -> None:
            async with client(crm, key="not-the-key") as api:
                await execute(api, ledger, run_id)

        with pytest.raises(AuthError) as caught:
            run(with_a_bad_key())
        assert "not-the-key" not in f"{caught.value!s}{caught.value!r}"
        assert ledger.run(run_id).state == "aborted" and held(crm) == before

        run(write(crm, ledger, run_id))
        assert rollback_preview(ledger, run_id).height == 60

        async def undo() -> Any:
            async with client(crm) as api:
                return await rollback(api, ledger, run_id)

        crm.set_faults(error_rate=0.2)
        stats = run(undo())
        assert held(crm) == before
        assert (stats.deleted + stats.already_gone, stats.failed) == (60, 0)
        assert ledger.run(run_id).state == "rolled_back"
