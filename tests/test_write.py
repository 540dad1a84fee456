"""Exactly-once writes and rollback against an in-memory fake CRM that misbehaves on demand."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from etl import write as write_module
from etl.lacrm import AuthError, LacrmClient, TransientError
from etl.ledger import Ledger, PairTaken
from etl.write import WriteError, execute, rollback, rollback_preview

KEY = "test-key-0123456789"
URL = "http://127.0.0.1:9/v2/"


def uid(n: int) -> str:
    return f"{n:031d}"


class FakeCrm:
    """Relationships in memory, with lost responses (after committing), 500s and 429s."""

    def __init__(
        self, *, lose: float = 0.0, error: float = 0.0, throttle: float = 0.0, seed: int = 1
    ) -> None:
        self.relationships: dict[str, dict[str, Any]] = {}
        self.contacts_missing: set[str] = set()
        self.lose, self.error, self.throttle = lose, error, throttle
        self.lose_by_timeout = False
        self.rng = random.Random(seed)
        self.requests: Counter[str] = Counter()
        self.creating: Counter[frozenset[str]] = Counter()
        self.most_creating_one_pair = 0
        self._next = 10**30

    def add(self, one: str, two: str, note: str = "") -> str:
        self._next += 1
        rid = str(self._next)
        self.relationships[rid] = {
            "RelationshipId": rid,
            "ContactId1": one,
            "ContactId2": two,
            "Note": note,
            "DateCreated": f"2026-01-01T00:00:{len(self.relationships):02d}+00:00",
        }
        return rid

    def pairs(self) -> Counter[frozenset[str]]:
        return Counter(frozenset((r["ContactId1"], r["ContactId2"])) for r in self.rels())

    def rels(self) -> list[dict[str, Any]]:
        return list(self.relationships.values())

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        function, params = body["Function"], body["Parameters"]
        self.requests[function] += 1
        if request.headers.get("Authorization") != KEY:
            return _error("InvalidApiKey", "The API key is not valid.")
        if self.rng.random() < self.throttle:
            return httpx.Response(429, headers={"Retry-After": "0.01"})
        if self.rng.random() < self.error:
            return httpx.Response(500)
        if function == "CreateRelationship":
            return await self._create(params)
        return self._dispatch(function, params)

    async def _create(self, params: dict[str, Any]) -> httpx.Response:
        pair = frozenset((params["ContactId1"], params["ContactId2"]))
        if pair & self.contacts_missing:
            return _error("ContactNotFound", "No contact with that ContactId.")
        self.creating[pair] += 1
        self.most_creating_one_pair = max(self.most_creating_one_pair, self.creating[pair])
        await asyncio.sleep(0.001)
        self.creating[pair] -= 1
        rid = self.add(params["ContactId1"], params["ContactId2"], params.get("Note") or "")
        if self.rng.random() < self.lose:
            if self.lose_by_timeout:
                raise httpx.ReadTimeout("timed out")
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(200, json={"RelationshipId": rid})

    def _dispatch(self, function: str, params: dict[str, Any]) -> httpx.Response:
        if function == "GetRelationshipsAttachedToContact":
            contact = params["ContactId"]
            if contact in self.contacts_missing:
                return _error("ContactNotFound", "No contact with that ContactId.")
            attached = [r for r in self.rels() if contact in (r["ContactId1"], r["ContactId2"])]
            size, page = params["MaxNumberOfResults"], params["Page"]
            chunk = attached[(page - 1) * size : page * size]
            return httpx.Response(
                200, json={"HasMoreResults": page * size < len(attached), "Results": chunk}
            )
        if function == "DeleteRelationship":
            if self.relationships.pop(params["RelationshipId"], None) is None:
                return _error("RelationshipNotFound", "No such relationship.")
            return httpx.Response(200, content=b"")
        if function == "GetRelationship":
            if params["RelationshipId"] not in self.relationships:
                return _error("RelationshipNotFound", "No such relationship.")
            return httpx.Response(200, json=self.relationships[params["RelationshipId"]])
        return _error("UnknownFunction", function)


def _error(code: str, description: str) -> httpx.Response:
    return httpx.Response(400, json={"ErrorCode": code, "ErrorDescription": description})


def make_plan(pairs: list[tuple[str, str]], notes: list[str | None] | None = None) -> pl.DataFrame:
    n = len(pairs)
    return pl.DataFrame(
        {
            "row_id": pl.Series(range(n), dtype=pl.UInt32),
            "status": ["to_create"] * n,
            "contact_id_1": [a for a, _ in pairs],
            "contact_id_2": [b for _, b in pairs],
            "relationship_id": pl.Series([None] * n, dtype=pl.String),
            "note": pl.Series(notes or [f"note {i}" for i in range(n)], dtype=pl.String),
        }
    )


def star_pairs(n: int) -> list[tuple[str, str]]:
    """Ten hubs each related to many people: settling reads the person, the cheap side."""
    return [(uid(1 + i % 10), uid(1000 + i)) for i in range(n)]


def client_for(crm: FakeCrm, key: str = KEY, **options: Any) -> LacrmClient:
    settings: dict[str, Any] = {"rate": 10_000.0, "concurrency": 6, "backoff_base": 0.001}
    return LacrmClient(key, URL, transport=crm.transport(), **{**settings, **options})


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=15))


async def write(
    crm: FakeCrm, ledger: Ledger, run_id: str, *, recheck: bool = False, **options: Any
) -> Any:
    async with client_for(crm, **options) as client:
        return await execute(client, ledger, run_id, recheck=recheck)


async def undo(crm: FakeCrm, ledger: Ledger, run_id: str) -> Any:
    async with client_for(crm) as client:
        return await rollback(client, ledger, run_id)


def new_run(ledger: Ledger, plan: pl.DataFrame) -> str:
    return ledger.create_run(settings={}, fingerprint={}, plan=plan, dry_run=False)


def assert_exactly_once(crm: FakeCrm, ledger: Ledger, run_id: str, plan: pl.DataFrame) -> None:
    outcomes = ledger.outcomes(run_id)
    assert outcomes.get_column("status").to_list() == ["created"] * plan.height
    assert crm.pairs() == Counter(
        frozenset(p) for p in plan.select("contact_id_1", "contact_id_2").iter_rows()
    )
    by_id = {r["RelationshipId"]: r for r in crm.rels()}
    for row_id, one, two, note in plan.select(
        "row_id", "contact_id_1", "contact_id_2", "note"
    ).iter_rows():
        rid = outcomes.filter(pl.col("row_id") == row_id).item(0, "relationship_id")
        assert {by_id[rid]["ContactId1"], by_id[rid]["ContactId2"]} == {one, two}
        assert by_id[rid]["Note"] == (note or "")
    assert crm.most_creating_one_pair <= 1


def test_every_create_is_made_once_with_one_request_each(tmp_path: Path) -> None:
    crm, plan = FakeCrm(), make_plan(star_pairs(60))
    with Ledger(tmp_path / "s.sqlite") as ledger:
        run_id = new_run(ledger, plan)
        stats = run(write(crm, ledger, run_id))
        assert_exactly_once(crm, ledger, run_id, plan)
        assert ledger.run(run_id).state == "finished"
    assert (stats.created, stats.sends, stats.failed, stats.settle_reads) == (60, 60, 0, 0)
    assert crm.requests == Counter({"CreateRelationship": 60})


def test_lost_responses_and_500s_end_exactly_as_a_fault_free_run(tmp_path: Path) -> None:
    crm, plan = FakeCrm(lose=0.3, error=0.3, throttle=0.02, seed=7), make_plan(star_pairs(120))
    with Ledger(tmp_path / "s.sqlite") as ledger:
        run_id = new_run(ledger, plan)
        # At 30% 500s a read fails six times running once in 1,400; the run would abort
        # (resumably). More attempts keep this test about settling, not aborting.
        stats = run(write(crm, ledger, run_id, max_attempts=12))
        assert_exactly_once(crm, ledger, run_id, plan)
    assert stats.created == 120
    assert stats.settled_created > 0 and stats.settled_absent > 0
    # Each unknown outcome is read back once, on the person's side (one page each).
    assert stats.settle_reads == stats.settled_created + stats.settled_absent


def test_a_timed_out_create_is_read_back_after_a_grace_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(write_module, "SETTLE_GRACE_SECONDS", 0.2)
    crm, plan = FakeCrm(lose=1.0), make_plan(star_pairs(3))
    crm.lose_by_timeout = True
    with Ledger(tmp_path / "s.sqlite") as ledger:
        run_id = new_run(ledger, plan)
        stats = run(write(crm, ledger, run_id))
        assert_exactly_once(crm, ledger, run_id, plan)
    assert (stats.sends, stats.settled_created) == (3, 3)
    assert stats.seconds >= 0.2


def test_an_api_error_fails_only_that_row(tmp_path: Path) -> None:
    crm = FakeCrm()
    crm.contacts_missing.add(uid(1005))
    plan = make_plan(star_pairs(10))
    with Ledger(tmp_path / "s.sqlite") as ledger:
        run_id = new_run(ledger, plan)
        stats = run(write(crm, ledger, run_id))
        outcomes = ledger.outcomes(run_id)
    failed = outcomes.filter(pl.col("status") == "failed")
    assert failed.get_column("row_id").to_list() == [5]
    assert failed.item(0, "detail") == "ContactNotFound: No contact with that ContactId."
    assert failed.item(0, "reason") == "api_error"
    assert (stats.created, stats.failed) == (9, 1)


def test_a_bad_key_aborts_at_once_and_the_run_resumes(tmp_path: Path) -> None:
    crm, plan = FakeCrm(), make_plan(star_pairs(30))
    with Ledger(tmp_path / "s.sqlite") as ledger:
        run_id = new_run(ledger, plan)
        with pytest.raises(AuthError):
            run(write(crm, ledger, run_id, key="wrong-key-000"))
        assert ledger.run(run_id).state == "aborted"
        assert crm.relationships == {}
        assert crm.requests["CreateRelationship"] <= 6 + 2  # only those already in flight
        run(write(crm, ledger, run_id))
        assert_exactly_once(crm, ledger, run_id, plan)
        assert ledger.run(run_id).state == "finished"


def test_a_resume_settles_creates_left_sending_before_sending_again(tmp_path: Path) -> None:
    crm, plan = FakeCrm(), make_plan(star_pairs(20))
    with Ledger(tmp_path / "s.sqlite") as ledger:
        run_id = new_run(ledger, plan)
        # A crash: rows 0-9 were journaled `sending`; the CRM committed only rows 0-4.
        for row_id, one, two, note in (
            plan.head(10).select("row_id", "contact_id_1", "contact_id_2", "note").iter_rows()
        ):
            ledger.mark_sending(run_id, row_id)
            if row_id < 5:
                crm.add(one, two, note)
        stats = run(write(crm, ledger, run_id))
        assert_exactly_once(crm, ledger, run_id, plan)
    assert (stats.settled_created, stats.settled_absent, stats.sends) == (5, 5, 15)


def test_settling_ignores_relationships_the_ledger_accounts_for_or_with_another_note(
    tmp_path: Path,
) -> None:
    """With `--existing ledger` the CRM was not read, so a pair may exist from elsewhere."""
    crm = FakeCrm()
    one, two, three = uid(1), uid(2), uid(3)
    with Ledger(tmp_path / "s.sqlite") as ledger:
        # An earlier run found the pair already in the CRM: the ledger accounts for that id.
        seen = make_plan([(one, two)], ["same"]).with_columns(
            status=pl.lit("skipped"), relationship_id=pl.lit(crm.add(one, two, "same"))
        )
        new_run(ledger, seen)
        crm.add(one, three, "made by hand")
        run_id = ledger.create_run(
            settings={"existing": "ledger"},
            fingerprint={},
            plan=make_plan([(two, one), (three, one)], ["same", "imported"]),
            dry_run=False,
        )
        ledger.mark_sending(run_id, 0)
        ledger.mark_sending(run_id, 1)
        stats = run(write(crm, ledger, run_id))
        created = ledger.outcomes(run_id).get_column("relationship_id").to_list()
    assert (stats.settled_absent, stats.sends) == (2, 2)
    assert len(crm.relationships) == 4
    assert [crm.relationships[rid]["Note"] for rid in created] == ["same", "imported"]


def test_a_resume_skips_the_pairs_the_crm_came_to_hold_after_the_plan(tmp_path: Path) -> None:
    crm = FakeCrm()
    pairs = [(uid(1), uid(100 + n)) for n in range(6)]  # one company, six people
    plan = make_plan(pairs)
    with Ledger(tmp_path / "s.sqlite") as ledger:
        run_id = new_run(ledger, plan)
        made_elsewhere = {1: crm.add(*pairs[1]), 4: crm.add(pairs[4][1], pairs[4][0])}
        stats = run(write(crm, ledger, run_id, recheck=True))
        outcomes = ledger.outcomes(run_id)
        assert crm.pairs() == Counter(frozenset(pair) for pair in pairs)
        # A rollback deletes what the run made, never what it found.
        run(undo(crm, ledger, run_id))
    assert (stats.found_on_resume, stats.sends, stats.recheck_reads) == (2, 4, 1)
    skipped = outcomes.filter(pl.col("status") == "skipped")
    assert skipped.get_column("row_id").to_list() == [1, 4]
    assert skipped.get_column("reason").to_list() == ["already_exists"] * 2
    assert skipped.get_column("relationship_id").to_list() == list(made_elsewhere.values())
    assert crm.pairs() == Counter(frozenset(pairs[row]) for row in made_elsewhere)


def test_a_resume_whose_re_check_fails_creates_nothing_and_stays_resumable(
    tmp_path: Path,
) -> None:
    crm = FakeCrm(error=1.0)
    with Ledger(tmp_path / "s.sqlite") as ledger:
        run_id = new_run(ledger, make_plan(star_pairs(3)))
        with pytest.raises(TransientError):
            run(write(crm, ledger, run_id, recheck=True, max_attempts=2))
        assert ledger.run(run_id).state == "aborted"
        assert ledger.run(run_id).counts["pending"] == 3
    assert crm.requests["CreateRelationship"] == 0


def test_a_resume_of_a_plan_that_trusted_the_ledger_does_not_read_the_crm(tmp_path: Path) -> None:
    crm = FakeCrm()
    pairs = star_pairs(3)
    with Ledger(tmp_path / "s.sqlite") as ledger:
        run_id = ledger.create_run(
            settings={"existing": "ledger"}, fingerprint={}, plan=make_plan(pairs), dry_run=False
        )
        stats = run(write(crm, ledger, run_id, recheck=True))
    assert (stats.recheck_reads, stats.sends, stats.settle_reads) == (0, 3, 0)
    assert crm.requests["GetRelationshipsAttachedToContact"] == 0


def test_after_a_checked_plan_a_reworded_note_is_still_ours(tmp_path: Path) -> None:
    crm = FakeCrm()
    one, two, three = uid(1), uid(2), uid(3)
    with Ledger(tmp_path / "s.sqlite") as ledger:
        run_id = new_run(ledger, make_plan([(one, two), (one, three)], ["a &amp; b", "x  y "]))
        ledger.mark_sending(run_id, 0)
        ledger.mark_sending(run_id, 1)
        first = crm.add(two, one, "a & b")  # the CRM unescaped it
        second = crm.add(one, three, "X-Y")  # ...or rewrote it entirely
        stats = run(write(crm, ledger, run_id))
        created = ledger.outcomes(run_id).get_column("relationship_id").to_list()
    assert created == [first, second]
    assert (stats.settled_created, stats.sends) == (2, 0)


def test_rollback_deletes_exactly_what_the_run_created(tmp_path: Path) -> None:
    crm, plan = FakeCrm(lose=0.2, seed=3), make_plan(star_pairs(25))
    before = {crm.add(uid(1), uid(5000), "old"), crm.add(uid(2), uid(1003), "old too")}
    with Ledger(tmp_path / "s.sqlite") as ledger:
        run_id = new_run(ledger, plan)
        run(write(crm, ledger, run_id))
        created = set(ledger.outcomes(run_id).get_column("relationship_id").to_list())
        preview = rollback_preview(ledger, run_id)
        assert set(preview.get_column("relationship_id").to_list()) == created
        assert preview.get_column("state").unique().to_list() == ["created"]
        del crm.relationships[sorted(created)[0]]  # someone deleted one by hand meanwhile

        async def undo() -> Any:
            async with client_for(crm) as client:
                return await rollback(client, ledger, run_id)

        stats = run(undo())
        assert set(crm.relationships) == before
        assert (stats.deleted, stats.already_gone, stats.failed) == (24, 1, 0)
        assert ledger.run(run_id).state == "rolled_back"
        assert rollback_preview(ledger, run_id).is_empty()
        again = run(undo())
        assert (again.deleted, again.already_gone) == (0, 0)
        with pytest.raises(WriteError, match="rolled back"):
            run(write(crm, ledger, run_id))


def test_rollback_reads_back_creates_left_sending(tmp_path: Path) -> None:
    crm, plan = FakeCrm(), make_plan(star_pairs(4))
    with Ledger(tmp_path / "s.sqlite") as ledger:
        run_id = new_run(ledger, plan)
        for row_id, one, two, note in plan.select(
            "row_id", "contact_id_1", "contact_id_2", "note"
        ).iter_rows():
            ledger.mark_sending(run_id, row_id)
            if row_id % 2 == 0:
                crm.add(one, two, note)
        assert rollback_preview(ledger, run_id).get_column("state").to_list() == ["unsettled"] * 4

        async def undo() -> Any:
            async with client_for(crm) as client:
                return await rollback(client, ledger, run_id)

        stats = run(undo())
        states = {i.state for i in ledger.unfinished_creates(run_id)}
    assert crm.relationships == {}
    assert (stats.settled_created, stats.settled_absent, stats.deleted) == (2, 2, 2)
    assert states == {"pending"}


def test_progress_bar_goes_to_stderr_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Ledger(tmp_path / "s.sqlite") as ledger:
        run(write(FakeCrm(), ledger, new_run(ledger, make_plan(star_pairs(5)))))
        quiet = capsys.readouterr()
        run(write_with_progress(FakeCrm(), ledger, new_run(ledger, make_plan(star_pairs(5)))))
        loud = capsys.readouterr()
    assert quiet.err == "" and quiet.out == ""
    assert "creating" in loud.err and "5/5" in loud.err and loud.out == ""


async def write_with_progress(crm: FakeCrm, ledger: Ledger, run_id: str) -> Any:
    async with client_for(crm) as client:
        return await execute(client, ledger, run_id, progress=True)


def test_a_pair_another_run_created_is_not_sent_again(tmp_path: Path) -> None:
    """An old plan resumed after the same file was imported again creates nothing twice."""
    crm = FakeCrm()
    one, two, three = uid(1), uid(2), uid(3)
    with Ledger(tmp_path / "s.sqlite") as ledger:
        old_plan = new_run(ledger, make_plan([(one, two), (one, three)]))
        newer = new_run(ledger, make_plan([(two, one)]))
        run(write(crm, ledger, newer))
        stats = run(write(crm, ledger, old_plan))
        outcomes = ledger.outcomes(old_plan).rows(named=True)
        newer_id = ledger.outcomes(newer).item(0, "relationship_id")
    assert crm.pairs() == Counter([frozenset((one, two)), frozenset((one, three))])
    assert (stats.taken, stats.created) == (1, 1)
    assert outcomes[0]["status"] == "skipped" and outcomes[0]["reason"] == "already_exists"
    assert newer in outcomes[0]["detail"] and outcomes[0]["relationship_id"] == newer_id
    assert outcomes[1]["status"] == "created"


def test_a_pair_another_run_is_sending_is_left_to_it(tmp_path: Path) -> None:
    one, two = uid(1), uid(2)
    with Ledger(tmp_path / "s.sqlite") as ledger:
        first = new_run(ledger, make_plan([(one, two)]))
        second = new_run(ledger, make_plan([(two, one)]))
        ledger.mark_sending(first, 0)
        with pytest.raises(PairTaken):
            ledger.mark_sending(second, 0)
        (outcome,) = ledger.outcomes(second).rows(named=True)
    assert outcome["status"] == "skipped"
    assert f"run {first} was sending this pair" in outcome["detail"]


def test_a_pair_a_rollback_deleted_may_be_created_again(tmp_path: Path) -> None:
    crm = FakeCrm()
    one, two = uid(1), uid(2)
    with Ledger(tmp_path / "s.sqlite") as ledger:
        first = new_run(ledger, make_plan([(one, two)]))
        run(write(crm, ledger, first))
        run(undo(crm, ledger, first))
        again = new_run(ledger, make_plan([(one, two)]))
        stats = run(write(crm, ledger, again))
    assert (stats.taken, stats.created) == (0, 1)
    assert crm.pairs() == Counter([frozenset((one, two))])


def test_a_pair_another_run_created_in_another_crm_account_is_still_created(
    tmp_path: Path,
) -> None:
    """The ledger does not know the account: the pair is read back before it is left out."""
    test_account, real_account = FakeCrm(), FakeCrm()
    one, two = uid(1), uid(2)
    with Ledger(tmp_path / "s.sqlite") as ledger:
        rehearsal = new_run(ledger, make_plan([(one, two)]))
        run(write(test_account, ledger, rehearsal))
        migration = new_run(ledger, make_plan([(one, two)]))
        stats = run(write(real_account, ledger, migration))
    assert (stats.taken, stats.created) == (0, 1)
    assert real_account.pairs() == Counter([frozenset((one, two))])
