"""The run ledger: runs, plans, create states, and durability under SIGKILL."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from etl.ledger import DEFAULT_LEDGER_PATH, OUTCOME_SCHEMA, Ledger, LedgerError, RunBusy

A, B, C, D = ("1" * 30 + "1", "1" * 30 + "2", "2" * 31, "9" * 31)


def sample_plan() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "row_id": pl.Series([0, 1, 2, 3], dtype=pl.UInt32),
            "source": ["f.csv"] * 4,
            "row": pl.Series([2, 3, 4, 5], dtype=pl.Int64),
            "status": ["to_create", "skipped", "to_create", "failed"],
            "reason": [None, "already_exists", None, "contact_not_found"],
            "contact_id_1": [A, A, C, None],
            "contact_id_2": [B, C, D, None],
            "relationship_id": [None, "5" * 31, None, None],
            "note": ["friends", None, None, None],
            "Person": ["Ann", "Ann", "Cy", "Zed"],
        }
    )


def new_run(ledger: Ledger, **settings: object) -> str:
    return ledger.create_run(
        settings={"rate": 2.0, "api_url": "http://127.0.0.1:1/v2/", **settings},
        fingerprint={"f.csv": "ab" * 32},
        plan=sample_plan(),
        dry_run=False,
    )


def test_a_run_keeps_settings_fingerprint_plan_and_one_intent_per_create(tmp_path: Path) -> None:
    with Ledger(tmp_path / "state.sqlite") as ledger:
        run_id = new_run(ledger)
        info = ledger.run(run_id)
        plan = ledger.plan(run_id)
        intents = ledger.unfinished_creates(run_id)

    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", run_id)
    assert info.state == "planned" and not info.dry_run and info.finished_at is None
    assert info.settings["rate"] == 2.0
    assert info.fingerprint == {"f.csv": "ab" * 32}
    assert info.counts == {
        "rows": 4,
        "pending": 2,
        "sending": 0,
        "created": 0,
        "failed": 0,
        "deleted": 0,
    }
    assert plan.equals(sample_plan())
    assert plan.schema == sample_plan().schema
    assert [(i.row_id, i.contact_id_1, i.contact_id_2, i.note) for i in intents] == [
        (0, A, B, "friends"),
        (2, C, D, None),
    ]


def test_unknown_run_is_a_clear_error(tmp_path: Path) -> None:
    with Ledger(tmp_path / "s.sqlite") as ledger:
        for read in (ledger.run, ledger.plan, ledger.outcomes, ledger.unfinished_creates):
            with pytest.raises(LedgerError, match="no run 'nope'"):
                read("nope")
        with pytest.raises(LedgerError, match="no run"):
            ledger.set_state("nope", "finished")


@pytest.mark.parametrize(
    "settings",
    [
        {"api_key": "x"},
        {"API-Key": "x"},
        {"info": {"lacrm_api_key": "x"}},
        {"sources": [{"password": "x"}]},
        {"auth_token": "x"},
    ],
)
def test_settings_named_like_a_credential_are_refused(tmp_path: Path, settings: dict) -> None:
    with Ledger(tmp_path / "s.sqlite") as ledger:
        with pytest.raises(LedgerError, match="never stored"):
            new_run(ledger, **settings)
        assert ledger.runs() == []


def test_the_api_key_itself_is_refused_whatever_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LACRM_API_KEY", "k-1234567890")
    with Ledger(tmp_path / "s.sqlite") as ledger, pytest.raises(LedgerError, match="API key"):
        new_run(ledger, header="k-1234567890")


def test_create_states_and_outcomes(tmp_path: Path) -> None:
    with Ledger(tmp_path / "s.sqlite") as ledger:
        run_id = new_run(ledger)
        ledger.mark_sending(run_id, 0)
        assert [i.state for i in ledger.sending_creates(run_id)] == ["sending"]
        ledger.mark_created(run_id, 0, "7" * 31)
        ledger.mark_sending(run_id, 2)
        ledger.mark_failed(run_id, 2, "ContactNotFound", "No such contact")
        with pytest.raises(LedgerError):
            ledger.mark_created(run_id, 0, "8" * 31)
        outcomes = ledger.outcomes(run_id)
        counts = ledger.run(run_id).counts

    assert outcomes.schema == pl.Schema(OUTCOME_SCHEMA)
    assert outcomes.to_dicts() == [
        {
            "row_id": 0,
            "status": "created",
            "reason": None,
            "detail": None,
            "relationship_id": "7" * 31,
        },
        {
            "row_id": 2,
            "status": "failed",
            "reason": "api_error",
            "detail": "ContactNotFound: No such contact",
            "relationship_id": None,
        },
    ]
    assert counts["created"] == 1 and counts["failed"] == 1 and counts["pending"] == 0


def test_unsettled_creates_are_failed_interrupted_until_a_resume(tmp_path: Path) -> None:
    """A report of an interrupted run still accounts for every row with a known status."""
    with Ledger(tmp_path / "s.sqlite") as ledger:
        run_id = new_run(ledger)
        ledger.mark_sending(run_id, 0)
        outcomes = ledger.outcomes(run_id)
        ledger.mark_pending(run_id, 0)
        intents = ledger.unfinished_creates(run_id)
    assert outcomes["status"].to_list() == ["failed", "failed"]
    assert outcomes["reason"].to_list() == ["interrupted", "interrupted"]
    assert all("lacrm-etl resume" in detail for detail in outcomes["detail"])
    assert [(i.row_id, i.state, i.sends) for i in intents] == [(0, "pending", 1), (2, "pending", 0)]


def test_run_states_and_listing(tmp_path: Path) -> None:
    with Ledger(tmp_path / "s.sqlite") as ledger:
        first = new_run(ledger)
        second = new_run(ledger)
        ledger.set_state(first, "writing")
        ledger.set_state(first, "finished")
        with pytest.raises(LedgerError, match="unknown run state"):
            ledger.set_state(first, "done")
        runs = ledger.runs()
    assert [r.run_id for r in runs] == [second, first]  # newest first, as `runs` shows them
    assert runs[1].state == "finished" and runs[1].finished_at is not None
    assert runs[0].state == "planned"


def test_claimed_covers_created_and_known_relationships(tmp_path: Path) -> None:
    with Ledger(tmp_path / "s.sqlite") as ledger:
        run_id = new_run(ledger)
        ledger.mark_sending(run_id, 0)
        ledger.mark_created(run_id, 0, "7" * 31)
        claimed = ledger.claimed(["7" * 31, "5" * 31, "6" * 31])
    assert claimed == {"7" * 31, "5" * 31}


def test_created_pairs_are_ordered_and_forget_rolled_back_ones(tmp_path: Path) -> None:
    with Ledger(tmp_path / "s.sqlite") as ledger:
        run_id = new_run(ledger)
        for row_id, rid in ((0, "7" * 31), (2, "8" * 31)):
            ledger.mark_sending(run_id, row_id)
            ledger.mark_created(run_id, row_id, rid)
        ledger.mark_deleted(run_id, 2)
        pairs = ledger.created_pairs()
        created = ledger.created_relationships(run_id)
        counts = ledger.run(run_id).counts
    assert pairs.to_dicts() == [{"pair_lo": A, "pair_hi": B, "relationship_id": "7" * 31}]
    assert [(c.row_id, c.deleted) for c in created] == [(0, False), (2, True)]
    assert counts["deleted"] == 1 and counts["created"] == 2


def test_wal_full_sync_and_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with Ledger() as ledger:
        new_run(ledger)
    assert (tmp_path / DEFAULT_LEDGER_PATH).is_file()
    db = sqlite3.connect(tmp_path / DEFAULT_LEDGER_PATH)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


CHILD = textwrap.dedent(
    """
    import sys
    import polars as pl
    from etl.ledger import Ledger

    path, sent_log = sys.argv[1], sys.argv[2]
    n = 400
    plan = pl.DataFrame({
        "row_id": pl.Series(range(n), dtype=pl.UInt32),
        "status": ["to_create"] * n,
        "contact_id_1": [f"{i:031d}" for i in range(n)],
        "contact_id_2": [f"{i + n:031d}" for i in range(n)],
        "note": [None] * n,
    })
    ledger = Ledger(path)
    run_id = ledger.create_run(settings={}, fingerprint={}, plan=plan, dry_run=False)
    print(run_id, flush=True)
    with open(sent_log, "a") as log:
        for intent in ledger.unfinished_creates(run_id):
            ledger.mark_sending(run_id, intent.row_id)
            log.write(f"{intent.row_id}\\n")  # "the request left"
            log.flush()
            ledger.mark_created(run_id, intent.row_id, f"{intent.row_id:031d}")
    print("done", flush=True)
    """
)


@pytest.mark.parametrize("delay", [None, 0.0, 0.01, 0.03, 0.06, 0.1])
def test_sigkill_at_any_instant_leaves_a_consistent_ledger(
    tmp_path: Path, delay: float | None
) -> None:
    """Killed while marking rows (delay after the run is recorded), or at start-up (None)."""
    path, sent_log = tmp_path / "s.sqlite", tmp_path / "sent.log"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(sent_log)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    if delay is None:
        time.sleep(0.2)
    else:
        assert child.stdout is not None
        child.stdout.readline()  # the run is recorded
        time.sleep(delay)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)

    with Ledger(path) as ledger:
        runs = ledger.runs()
        if not runs:
            return  # killed before the run was committed: nothing half-written
        run_id = runs[0].run_id
        assert ledger.plan(run_id).height == 400
        outcomes = ledger.outcomes(run_id)
        states = dict(
            ledger._db.execute(
                "SELECT row_id, state FROM creates WHERE run_id = ?", (run_id,)
            ).fetchall()
        )
    sent = [int(line) for line in sent_log.read_text().split()] if sent_log.exists() else []
    assert outcomes.height == 400
    # Every request that left was journaled first: none of them can look unsent.
    assert all(states[row_id] in ("sending", "created") for row_id in sent)
    assert sum(state == "sending" for state in states.values()) <= 1


def test_a_run_keeps_its_last_summary(tmp_path: Path) -> None:
    with Ledger(tmp_path / "state.sqlite") as ledger:
        run_id = new_run(ledger)
        assert ledger.summary(run_id) is None
        ledger.save_summary(run_id, {"created": 1, "api_calls": {"GetContacts": 2}})
        ledger.save_summary(run_id, {"created": 2, "api_calls": {"GetContacts": 3}})
        assert ledger.summary(run_id) == {"created": 2, "api_calls": {"GetContacts": 3}}
        with pytest.raises(LedgerError):
            ledger.save_summary(run_id, {"settings": {"api_key": "x"}})
        with pytest.raises(LedgerError):
            ledger.summary("19990101-000000-0000")


def test_a_batch_of_changes_commits_together_or_not_at_all(tmp_path: Path) -> None:
    with Ledger(tmp_path / "s.sqlite") as ledger:
        run_id = new_run(ledger)
        ledger.apply(run_id, [("sending", 0), ("sending", 2)])
        with pytest.raises(LedgerError, match="row 2"):
            ledger.apply(run_id, [("created", 0, "7" * 31), ("pending", 2), ("pending", 2)])
        states = [i.state for i in ledger.unfinished_creates(run_id)]
        ledger.apply(run_id, [("created", 0, "7" * 31), ("failed", 2, "Nope", "no")])
        (synchronous,) = ledger._db.execute("PRAGMA synchronous").fetchone()
        counts = ledger.run(run_id).counts
    assert states == ["sending", "sending"]
    assert counts["created"] == 1 and counts["failed"] == 1
    assert synchronous == 2  # FULL again after a batch that needed no fsync


HOLDER = """
import sys, time
from etl.ledger import Ledger
with Ledger(sys.argv[1]) as ledger, ledger.holding(sys.argv[2]):
    print("holding", flush=True)
    time.sleep(60)
"""


def test_one_process_at_a_time_holds_a_run_and_a_killed_holder_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Ledger(path) as ledger:
        run_id, other = new_run(ledger), new_run(ledger)
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), run_id],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "holding\n"
        with Ledger(path) as ledger:
            with (
                pytest.raises(RunBusy, match=f"run {run_id} is being written"),
                ledger.holding(run_id),
            ):
                pytest.fail("two processes held one run")
            with ledger.holding(other):  # other runs are free
                pass
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        with Ledger(path) as ledger, ledger.holding(run_id):  # the kill released it
            second = Ledger(path)  # and a hold is exclusive within one process too
            with pytest.raises(RunBusy), second.holding(run_id):
                pytest.fail("two ledgers of one process held one run")
            second.close()
    finally:
        child.kill()
        child.wait(timeout=10)


def _open_when_released(path: str, barrier: Any) -> str:
    barrier.wait()
    try:
        Ledger(path).close()
    except LedgerError as error:
        return str(error)
    return ""


def test_processes_opening_a_new_ledger_at_the_same_moment_all_get_it(tmp_path: Path) -> None:
    """Two imports started together used to fail one with "database is locked"."""
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager, context.Pool(4) as pool:
        for attempt in range(15):
            path = str(tmp_path / f"new-{attempt}.sqlite")
            barrier = manager.Barrier(4)
            errors = pool.starmap(_open_when_released, [(path, barrier)] * 4)
            assert errors == [""] * 4
