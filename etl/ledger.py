"""The run ledger: a SQLite journal of every run's plan and of each create's outcome.

A create moves pending -> sending -> created | failed. `sending` is committed before the request
leaves, so after a crash at any instant a row is either `pending` (never sent), `sending` (maybe
sent: settle by reading the pair back), or final. Every transition is one transaction.

WAL with synchronous=FULL: NORMAL survives a killed process but may lose the last commits on
power loss, and a lost `sending` mark would let a resume send the same create again unchecked.
FULL costs ~0.2 ms per commit, nothing beside a network round trip.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

DEFAULT_LEDGER_PATH = Path(".lacrm-etl/state.sqlite")
RUN_STATES = ("planned", "writing", "finished", "aborted", "rolled_back")
TERMINAL_STATES = ("finished", "aborted", "rolled_back")
UNFINISHED_STATES = ("planned", "writing", "aborted")  # `resume` has creates left to do
CREATE_STATES = ("pending", "sending", "created", "failed")
TO_CREATE = "to_create"
SCHEMA_VERSION = 1
_SECRET_NAMES = re.compile(r"(apikey|secret|password|passwd|token|authori[sz]ation|credential)$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    state TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    settings TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    total_rows INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS plans (
    run_id TEXT PRIMARY KEY REFERENCES runs(run_id),
    parquet BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS creates (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    row_id INTEGER NOT NULL,
    contact_id_1 TEXT NOT NULL,
    contact_id_2 TEXT NOT NULL,
    note TEXT,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'created', 'failed')),
    sends INTEGER NOT NULL DEFAULT 0,
    relationship_id TEXT,
    error_code TEXT,
    error_text TEXT,
    updated_at TEXT,
    deleted_at TEXT,
    deletion_detail TEXT,
    PRIMARY KEY (run_id, row_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS creates_by_relationship
    ON creates(relationship_id) WHERE relationship_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS creates_by_pair ON creates(contact_id_1, contact_id_2);
CREATE TABLE IF NOT EXISTS known_relationships (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    relationship_id TEXT NOT NULL,
    PRIMARY KEY (run_id, relationship_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS known_by_relationship ON known_relationships(relationship_id);
CREATE TABLE IF NOT EXISTS summaries (
    run_id TEXT PRIMARY KEY REFERENCES runs(run_id),
    saved_at TEXT NOT NULL,
    summary TEXT NOT NULL
);
"""

_LOCK_TIMEOUT_SECONDS = 30.0
# A create another run made first is kept `failed` with this code and reported as skipped.
TAKEN_CODE = "already_exists"
# A create's transition: (kind, row_id, *values); kinds are the keys of _TRANSITIONS.
CreateChange = tuple[Any, ...]
_TRANSITIONS = {
    "sending": ("state = 'sending', sends = sends + 1", "('pending', 'sending')"),
    "created": ("state = 'created', relationship_id = ?", "('pending', 'sending')"),
    "failed": ("state = 'failed', error_code = ?, error_text = ?", "('pending', 'sending')"),
    "pending": ("state = 'pending'", "('sending')"),
    # Left to another run that holds the same pair: reported skipped (see TAKEN_CODE).
    "taken": (
        f"state = 'failed', error_code = '{TAKEN_CODE}', error_text = ?, relationship_id = ?",
        "('pending')",
    ),
}

OUTCOME_SCHEMA = {
    "row_id": pl.UInt32,
    "status": pl.String,
    "reason": pl.String,
    "detail": pl.String,
    "relationship_id": pl.String,
}
CREATED_PAIRS_SCHEMA = {"pair_lo": pl.String, "pair_hi": pl.String, "relationship_id": pl.String}


class LedgerError(Exception):
    """A ledger problem a person can act on (unknown run, a secret in the settings...)."""


class RunBusy(LedgerError):
    """Another process is writing or rolling back the run: two writers could create a pair twice."""


class PairTaken(LedgerError):
    """Another run of this ledger is sending this pair: it is not sent twice."""


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    created_at: str
    finished_at: str | None
    state: str
    dry_run: bool
    settings: dict[str, Any]
    fingerprint: dict[str, Any]
    counts: dict[str, int]


@dataclass(frozen=True)
class CreateIntent:
    """One planned create as the ledger holds it."""

    row_id: int
    contact_id_1: str
    contact_id_2: str
    note: str | None
    state: str
    sends: int


@dataclass(frozen=True)
class CreatedRelationship:
    row_id: int
    contact_id_1: str
    contact_id_2: str
    note: str | None
    relationship_id: str
    deleted: bool


class Ledger:
    """`Ledger(path)`: open (and create) the state database. Use as a context manager or close()."""

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_LEDGER_PATH) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The write phase journals from one worker thread so fsyncs never stall the event loop;
        # callers never use the connection from two threads at once.
        self._db = sqlite3.connect(
            self.path, isolation_level=None, timeout=_LOCK_TIMEOUT_SECONDS, check_same_thread=False
        )
        self._held: set[str] = set()
        try:
            self._use_wal()
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise LedgerError(
                f"{self.path} is not a lacrm-etl ledger ({error}); name another file with "
                "--state-db, or leave it out to use .lacrm-etl/state.sqlite"
            ) from None

    def _use_wal(self) -> None:
        """Switch to WAL. Two processes opening a new ledger at once can make the switch fail
        at once with "database is locked": SQLite calls no busy handler for it, so retry."""
        deadline = time.monotonic() + _LOCK_TIMEOUT_SECONDS
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r})"

    @contextmanager
    def holding(self, run_id: str) -> Iterator[None]:
        """Only this process writes or rolls back `run_id` inside; another one gets RunBusy.

        The hold is an exclusive lock on a small SQLite file beside the ledger. The operating
        system drops it when the process ends, however it ends (SIGKILL included), so a crashed
        run is never left held. Lock files stay: removing one could let two processes each lock
        a file of the same name. Holding a run this ledger already holds is a no-op.
        """
        if run_id in self._held:
            yield
            return
        self.run(run_id)  # an unknown run says so before anything is locked
        folder = self.path.with_name(f"{self.path.stem}-locks")
        folder.mkdir(exist_ok=True)
        holder = sqlite3.connect(folder / f"{run_id}.lock", timeout=0, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
        except sqlite3.OperationalError:
            holder.close()
            raise RunBusy(
                f"run {run_id} is being written or rolled back by another lacrm-etl process; "
                "let it finish (or stop it), then run this again"
            ) from None
        self._held.add(run_id)
        try:
            yield
        finally:
            self._held.discard(run_id)
            holder.execute("ROLLBACK")
            holder.close()

    # -- runs -------------------------------------------------------------------------------

    def create_run(
        self,
        *,
        settings: dict[str, Any],
        fingerprint: dict[str, Any],
        plan: pl.DataFrame,
        dry_run: bool,
    ) -> str:
        """Record a planned run and one `pending` create per `to_create` row; return its id."""
        _refuse_secrets(settings)
        intents = _create_intents(plan)
        known = _known_relationship_ids(plan)
        blob = _parquet_bytes(plan)
        with self._transaction():
            run_id = self._new_run_id()
            self._db.execute(
                "INSERT INTO runs (run_id, created_at, state, dry_run, settings, fingerprint,"
                " total_rows) VALUES (?, ?, 'planned', ?, ?, ?, ?)",
                (
                    run_id,
                    _now(),
                    int(dry_run),
                    json.dumps(settings, default=str),
                    json.dumps(fingerprint, default=str),
                    plan.height,
                ),
            )
            self._db.execute("INSERT INTO plans VALUES (?, ?)", (run_id, blob))
            self._db.executemany(
                "INSERT INTO creates (run_id, row_id, contact_id_1, contact_id_2, note, state)"
                " VALUES (?, ?, ?, ?, ?, 'pending')",
                ((run_id, *intent) for intent in intents),
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO known_relationships VALUES (?, ?)",
                ((run_id, rid) for rid in known),
            )
        return run_id

    def run(self, run_id: str) -> RunInfo:
        row = self._db.execute(
            "SELECT run_id, created_at, finished_at, state, dry_run, settings, fingerprint,"
            " total_rows FROM runs WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            raise LedgerError(f"no run {run_id!r} in {self.path}; `lacrm-etl runs` lists them")
        return self._run_info(row)

    def runs(self) -> list[RunInfo]:
        """Every run, newest first."""
        rows = self._db.execute(
            "SELECT run_id, created_at, finished_at, state, dry_run, settings, fingerprint,"
            " total_rows FROM runs ORDER BY created_at DESC, rowid DESC"
        ).fetchall()
        return [self._run_info(row) for row in rows]

    def plan(self, run_id: str) -> pl.DataFrame:
        row = self._db.execute("SELECT parquet FROM plans WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            self.run(run_id)  # raises the unknown-run error
            raise LedgerError(f"run {run_id!r} has no stored plan")
        return pl.read_parquet(io.BytesIO(row[0]))

    def set_state(self, run_id: str, state: str) -> None:
        if state not in RUN_STATES:
            raise LedgerError(f"unknown run state {state!r}; one of {', '.join(RUN_STATES)}")
        self.run(run_id)
        finished_at = _now() if state in TERMINAL_STATES else None
        with self._transaction():
            self._db.execute(
                "UPDATE runs SET state = ?, finished_at = ? WHERE run_id = ?",
                (state, finished_at, run_id),
            )

    def outcomes(self, run_id: str) -> pl.DataFrame:
        """Each create's outcome so far: created, skipped (another run holds the pair), failed
        (api_error, or interrupted: not sent or not settled yet, until a resume)."""
        self.run(run_id)
        rows = self._db.execute(
            "SELECT row_id, state, error_code, error_text, relationship_id FROM creates"
            " WHERE run_id = ? ORDER BY row_id",
            (run_id,),
        ).fetchall()
        return pl.DataFrame([_outcome(*row) for row in rows], schema=OUTCOME_SCHEMA, orient="row")

    def created_pairs(self) -> pl.DataFrame:
        """Every relationship any run created and no rollback deleted: pair_lo, pair_hi, id."""
        rows = self._db.execute(
            "SELECT min(contact_id_1, contact_id_2), max(contact_id_1, contact_id_2),"
            " relationship_id FROM creates WHERE state = 'created' AND deleted_at IS NULL"
        ).fetchall()
        return pl.DataFrame(rows, schema=CREATED_PAIRS_SCHEMA, orient="row")

    def save_summary(self, run_id: str, summary: dict[str, Any]) -> None:
        """Keep a run's final summary (API calls, finish time...) so its reports re-render alike."""
        self.run(run_id)
        _refuse_secrets(summary)
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO summaries (run_id, saved_at, summary) VALUES (?, ?, ?)",
                (run_id, _now(), json.dumps(summary, default=str)),
            )

    def summary(self, run_id: str) -> dict[str, Any] | None:
        """The summary last saved for this run, or None if its reports were never written."""
        self.run(run_id)
        row = self._db.execute(
            "SELECT summary FROM summaries WHERE run_id = ?", (run_id,)
        ).fetchone()
        return json.loads(row[0]) if row else None

    # -- creates ----------------------------------------------------------------------------

    def unfinished_creates(self, run_id: str) -> list[CreateIntent]:
        """The creates still to do: `pending`, and `sending` ones whose outcome is unknown."""
        return self._intents(run_id, "state IN ('pending', 'sending')")

    def sending_creates(self, run_id: str) -> list[CreateIntent]:
        return self._intents(run_id, "state = 'sending'")

    def mark_sending(self, run_id: str, row_id: int) -> None:
        """Committed before the request leaves: from here the create may exist in the CRM."""
        if self.apply(run_id, [("sending", row_id)]):
            raise PairTaken(f"run {run_id!r} row {row_id}: another run holds this pair")

    def mark_created(self, run_id: str, row_id: int, relationship_id: str) -> None:
        self.apply(run_id, [("created", row_id, relationship_id)])

    def mark_failed(self, run_id: str, row_id: int, code: str, description: str) -> None:
        self.apply(run_id, [("failed", row_id, code, description)])

    def mark_pending(self, run_id: str, row_id: int) -> None:
        """A `sending` create read back and found absent: it was never made."""
        self.apply(run_id, [("pending", row_id)])

    def apply(self, run_id: str, changes: Sequence[CreateChange]) -> set[int]:
        """Apply create transitions in one transaction (a group commit for concurrent writers).

        A `sending` whose pair another run of this ledger is sending right now is not made:
        the row is `taken` instead (see TAKEN_CODE) and its row_id returned. The check and the
        mark share the transaction, so two processes importing the same pairs at once cannot
        both send one.

        Only `sending` must survive a power cut (a lost one would let a resume send unchecked),
        so a batch without one commits without fsync; the next `sending` commit's fsync makes
        it durable too, and until then losing it leaves the row `sending`, which is settled by
        reading back.
        """
        if not changes:
            return set()
        durable = any(change[0] == "sending" for change in changes)
        now = _now()
        taken: set[int] = set()
        if not durable:
            self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            with self._transaction():
                for change in changes:
                    if change[0] == "sending" and self._take_elsewhere(run_id, change[1], now):
                        taken.add(change[1])
                    else:
                        self._apply_one(run_id, change, now)
        finally:
            if not durable:
                self._db.execute("PRAGMA synchronous=FULL")
        return taken

    def _take_elsewhere(self, run_id: str, row_id: int, now: str) -> bool:
        """If another run is sending this row's pair, mark the row taken and say so."""
        holder = self._other_holder(run_id, row_id, "sending")
        if holder is None:
            return False
        text = (
            f"run {holder[0]} was sending this pair at the same time; `lacrm-etl runs` shows "
            "whether it finished"
        )
        self._apply_one(run_id, ("taken", row_id, text, None), now)
        return True

    def created_elsewhere(self, run_id: str, row_id: int) -> tuple[str, str] | None:
        """(run_id, RelationshipId) of another run that created this row's pair and kept it.

        The ledger does not know which CRM account a run wrote to, so the writer reads the
        pair back before leaving it to that run (see write._Writer)."""
        return self._other_holder(run_id, row_id, "created")

    def _other_holder(self, run_id: str, row_id: int, state: str) -> tuple[str, str] | None:
        """(run_id, RelationshipId) of another run holding this pending row's pair in `state`."""
        return self._db.execute(
            "SELECT other.run_id, other.relationship_id"
            " FROM creates AS mine JOIN creates AS other ON"
            " (other.contact_id_1 = mine.contact_id_1 AND other.contact_id_2 = mine.contact_id_2)"
            " OR (other.contact_id_1 = mine.contact_id_2"
            " AND other.contact_id_2 = mine.contact_id_1)"
            " WHERE mine.run_id = ? AND mine.row_id = ? AND mine.state = 'pending'"
            " AND other.run_id != mine.run_id AND other.state = ?"
            " AND other.deleted_at IS NULL LIMIT 1",
            (run_id, row_id, state),
        ).fetchone()

    def _apply_one(self, run_id: str, change: CreateChange, now: str) -> None:
        kind, row_id, *values = change
        if kind == "created" and not values[0]:
            raise LedgerError(f"row {row_id}: the CRM returned no RelationshipId")
        assignments, from_states = _TRANSITIONS[kind]
        changed = self._db.execute(
            f"UPDATE creates SET {assignments}, updated_at = ?"
            f" WHERE run_id = ? AND row_id = ? AND state IN {from_states}",
            (*[None if v is None else str(v) for v in values], now, run_id, row_id),
        ).rowcount
        if changed != 1:
            raise LedgerError(f"run {run_id!r} row {row_id}: no create in state {from_states}")

    def claimed(self, relationship_ids: Iterable[str]) -> set[str]:
        """The ids among these that the ledger already accounts for (created, or known before)."""
        ids = list(dict.fromkeys(relationship_ids))
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT relationship_id FROM creates WHERE relationship_id IN ({marks})"
                f" UNION SELECT relationship_id FROM known_relationships"
                f" WHERE relationship_id IN ({marks})",
                (*chunk, *chunk),
            ).fetchall()
            found.update(row[0] for row in rows)
        return found

    # -- rollback ---------------------------------------------------------------------------

    def created_relationships(self, run_id: str) -> list[CreatedRelationship]:
        self.run(run_id)
        rows = self._db.execute(
            "SELECT row_id, contact_id_1, contact_id_2, note, relationship_id, deleted_at"
            " FROM creates WHERE run_id = ? AND state = 'created' ORDER BY row_id",
            (run_id,),
        ).fetchall()
        return [CreatedRelationship(*row[:5], deleted=row[5] is not None) for row in rows]

    def mark_deleted(self, run_id: str, row_id: int, detail: str | None = None) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE creates SET deleted_at = ?, deletion_detail = ?"
                " WHERE run_id = ? AND row_id = ? AND state = 'created'",
                (_now(), detail, run_id, row_id),
            )

    def note_deletion_failure(self, run_id: str, row_id: int, detail: str) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE creates SET deletion_detail = ? WHERE run_id = ? AND row_id = ?",
                (detail, run_id, row_id),
            )

    # -- internals --------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"{self.path} was written by a newer lacrm-etl (schema {version}); upgrade"
            )
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _new_run_id(self) -> str:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        for _ in range(100):
            run_id = f"{stamp}-{secrets.token_hex(2)}"
            taken = self._db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if not taken:
                return run_id
        raise LedgerError("could not pick a free run id")

    def _run_info(self, row: tuple[Any, ...]) -> RunInfo:
        run_id, created_at, finished_at, state, dry_run, settings, fingerprint, total = row
        counts = dict.fromkeys((*CREATE_STATES, "deleted"), 0)
        for create_state, deleted, count in self._db.execute(
            "SELECT state, deleted_at IS NOT NULL, count(*) FROM creates WHERE run_id = ?"
            " GROUP BY 1, 2",
            (run_id,),
        ):
            counts[create_state] += count
            if deleted:
                counts["deleted"] += count
        return RunInfo(
            run_id=run_id,
            created_at=created_at,
            finished_at=finished_at,
            state=state,
            dry_run=bool(dry_run),
            settings=json.loads(settings),
            fingerprint=json.loads(fingerprint),
            counts={"rows": total, **counts},
        )

    def _intents(self, run_id: str, condition: str) -> list[CreateIntent]:
        self.run(run_id)
        rows = self._db.execute(
            "SELECT row_id, contact_id_1, contact_id_2, note, state, sends FROM creates"
            f" WHERE run_id = ? AND {condition} ORDER BY row_id",
            (run_id,),
        ).fetchall()
        return [CreateIntent(*row) for row in rows]


def _refuse_secrets(settings: Any, where: str = "settings") -> None:
    """Settings are stored in clear: refuse anything named like a credential."""
    if isinstance(settings, dict):
        for name, value in settings.items():
            normalised = re.sub(r"[^a-z]", "", str(name).lower())
            if _SECRET_NAMES.search(normalised):
                raise LedgerError(f"{where} holds {name!r}; credentials are never stored")
            _refuse_secrets(value, f"{where}.{name}")
    elif isinstance(settings, list | tuple):
        for value in settings:
            _refuse_secrets(value, where)
    key = os.environ.get("LACRM_API_KEY", "")
    if where == "settings" and len(key) >= 8 and key in json.dumps(settings, default=str):
        raise LedgerError("settings contain the API key; credentials are never stored")


def _create_intents(plan: pl.DataFrame) -> list[tuple[int, str, str, str | None]]:
    missing = {"row_id", "status", "contact_id_1", "contact_id_2"} - set(plan.columns)
    if missing:
        raise LedgerError(f"the plan lacks columns {sorted(missing)}")
    note = pl.col("note") if "note" in plan.columns else pl.lit(None, pl.String)
    creates = plan.filter(pl.col("status") == TO_CREATE).select(
        "row_id", "contact_id_1", "contact_id_2", note.alias("note")
    )
    if creates.filter(pl.col("contact_id_1").is_null() | pl.col("contact_id_2").is_null()).height:
        raise LedgerError("a row to create lacks a ContactId")
    return [(int(r), c1, c2, n) for r, c1, c2, n in creates.iter_rows()]


def _known_relationship_ids(plan: pl.DataFrame) -> list[str]:
    if "relationship_id" not in plan.columns:
        return []
    known = plan.get_column("relationship_id").drop_nulls().unique()
    return known.cast(pl.String).to_list()


def _parquet_bytes(plan: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    plan.write_parquet(buffer)
    return buffer.getvalue()


def _outcome(
    row_id: int, state: str, code: str | None, text: str | None, relationship_id: str | None
) -> tuple[int, str, str | None, str | None, str | None]:
    if state == "created":
        return row_id, "created", None, None, relationship_id
    if state == "failed" and code == TAKEN_CODE:
        return row_id, "skipped", TAKEN_CODE, text, relationship_id
    if state == "failed":
        detail = f"{code}: {text}" if code else (text or "the CRM refused it")
        return row_id, "failed", "api_error", detail, None
    if state == "sending":
        detail = (
            "the run stopped while this create was being sent; `lacrm-etl resume` reads it back"
        )
        return row_id, "failed", "interrupted", f"{detail} and finishes it", None
    detail = "the run stopped before this create; `lacrm-etl resume` finishes it"
    return row_id, "failed", "interrupted", detail, None


def _now() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="milliseconds")
